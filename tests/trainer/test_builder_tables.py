"""Exhaustive dispatch: every config class the schema can produce has exactly one builder-table
entry, and a class a table does not know is one clear error, never a default."""
from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest

from dettool.config import schema as S
from dettool.errors import ConfigError
from dettool.exporters.deploy.detector import DENSE_HEAD_ADAPTERS, DETECTOR_ADAPTERS, ROI_HEAD_ADAPTERS
from dettool.trainer.builder.backbones import BACKBONES, PLUGINS
from dettool.trainer.builder.dense_heads import DENSE_HEADS, RPN_HEADS
from dettool.trainer.builder.detectors import DETECTORS
from dettool.trainer.builder.losses import LOSSES
from dettool.trainer.builder.necks import NECKS
from dettool.trainer.builder.roi_heads import BBOX_HEADS, ROI_HEADS
from dettool.trainer.builder.task_modules import ANCHOR_GENERATORS, ASSIGNERS, CODERS, SAMPLERS

TABLES = {"backbone": BACKBONES, "backbone plugin": PLUGINS, "neck": NECKS, "dense head": DENSE_HEADS,
          "detector": DETECTORS, "loss": LOSSES, "RoI box head": BBOX_HEADS, "RoI head": ROI_HEADS,
          "assigner": ASSIGNERS, "box coder": CODERS, "sampler": SAMPLERS, "anchor generator": ANCHOR_GENERATORS,
          "proposal head": RPN_HEADS}
# Sections with a ``type`` tag that are not built through a class table: the optimizer's ``type``
# is a Literal choice (``OPTIMIZERS``).
NOT_TABLED = {S.OptimizerConfig}


def tagged_classes() -> set[type]:
    """Every schema class with a ``type`` Literal: the members of the config's tagged unions."""
    found = set()
    for _, cls in inspect.getmembers(S, inspect.isclass):
        if dataclasses.is_dataclass(cls) and "type" in typing.get_type_hints(cls):
            if typing.get_origin(typing.get_type_hints(cls)["type"]) is typing.Literal:
                found.add(cls)
    return found


def test_every_tagged_config_class_is_in_exactly_one_table():
    classes = tagged_classes() - NOT_TABLED - {c for c in tagged_classes() if c.__module__.endswith(".data")}
    for cls in classes:
        owners = [name for name, table in TABLES.items() if cls in table]
        assert len(owners) == 1, (cls.__name__, owners)
    for name, table in TABLES.items():
        for cls in table.entries:
            assert cls in classes, (name, cls.__name__)


def test_every_optimizer_type_has_a_builder():
    from dettool.trainer.builder.optim import OPTIMIZERS

    assert set(OPTIMIZERS) == set(typing.get_args(typing.get_type_hints(S.OptimizerConfig)["type"]))


def test_union_members_are_in_their_family_table():
    for union, table in ((S.BackboneConfig, BACKBONES), (S.PluginConfig, PLUGINS), (S.NeckConfig, NECKS),
                         (S.DenseHeadConfig, DENSE_HEADS), (S.RoIHeadConfig, ROI_HEADS),
                         (S.BBoxHeadConfig, BBOX_HEADS), (S.CoderConfig, CODERS), (S.AssignerConfig, ASSIGNERS),
                         (S.DenseSamplerConfig, SAMPLERS), (S.RoISamplerConfig, SAMPLERS),
                         (S.ClsLossConfig, LOSSES), (S.BoxLossConfig, LOSSES), (S.ModelConfig, DETECTORS),
                         (S.AnchorGeneratorConfig, ANCHOR_GENERATORS), (S.ProposalHeadConfig, RPN_HEADS)):
        members = typing.get_args(union) or (union,)
        assert all(m in table for m in members), union


def test_unknown_config_class_is_a_config_error_naming_the_key():
    @dataclasses.dataclass(frozen=True)
    class MysterySamplerConfig:
        type: typing.Literal["mystery"] = "mystery"

    with pytest.raises(ConfigError, match=r"model\.roi_head\.sampler: MysterySamplerConfig is not a sampler dettool "
                                          r"can build \(known: IoUBalancedSamplerConfig, OHEMSamplerConfig, "
                                          r"PseudoSamplerConfig, RandomSamplerConfig\)"):
        SAMPLERS.build(MysterySamplerConfig(), key="model.roi_head.sampler")


def test_every_head_the_builder_makes_has_a_deploy_adapter():
    """A head a config can build is exportable, or refused by name (never silently mis-exported)."""
    from dettool.trainer.models.dense_heads.rpn_head import RPNHead

    built = {fn.__annotations__.get("return") for fn in DENSE_HEADS.entries.values()}
    assert {c.__name__ for c in DENSE_HEAD_ADAPTERS} >= {b if isinstance(b, str) else b.__name__ for b in built}
    assert RPNHead in DENSE_HEAD_ADAPTERS
    built = {fn.__annotations__.get("return") for fn in RPN_HEADS.entries.values()}
    assert {c.__name__ for c in DENSE_HEAD_ADAPTERS} >= {b if isinstance(b, str) else b.__name__ for b in built}
    built = {fn.__annotations__.get("return") for fn in ROI_HEADS.entries.values()}
    assert {c.__name__ for c in ROI_HEAD_ADAPTERS} >= {b if isinstance(b, str) else b.__name__ for b in built}
    built = {fn.__annotations__.get("return") for fn in DETECTORS.entries.values()}
    assert {c.__name__ for c in DETECTOR_ADAPTERS} >= {b if isinstance(b, str) else b.__name__ for b in built}


def test_cascade_stages_take_their_own_sampler_settings():
    cfg = S.CascadeRoIHeadConfig(stages=tuple(
        S.CascadeStageConfig(sampler=S.RandomSamplerConfig(num=n, pos_fraction=0.25, add_gt_as_proposals=add_gt))
        for n, add_gt in ((64, True), (32, False), (16, True))))
    head = ROI_HEADS.build(cfg, 3, 8, S.TestConfig(), "model.roi_head", key="model.roi_head")
    assert head.add_gt_as_proposals == [True, False, True]
    assert [s.num for s in head.samplers] == [64, 32, 16]
