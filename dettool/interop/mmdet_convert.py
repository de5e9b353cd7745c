"""MMDetection config + checkpoint -> dettool config + checkpoint.

The MMDetection config (a plain dict from :func:`read_mmdet_config`) is translated section by
section through tables keyed by MMDetection's ``type`` names (``DETECTORS``, ``BACKBONES``,
``NECKS``, ``DENSE_HEADS``); every key of a model or test section must be understood, so an
option dettool does not implement is refused naming it (never silently dropped). Training-only
settings that have no dettool equivalent are listed in the written config's header instead.
The weights are renamed by the rules each translated part contributes, and must then match the
dettool model's parameters exactly (names and shapes), else the checkpoint is refused.
"""
from __future__ import annotations

import re
from typing import Callable

from dettool.errors import CheckpointError
from dettool.interop.mmdet_data import pipelines, preprocessor, training
from dettool.interop.mmdet_features import BACKBONES, translate_necks
from dettool.interop.mmdet_heads import DENSE_HEADS, ROI_HEADS, dense_test, rcnn_test, rpn_head
from dettool.interop.mmdet_section import Section, Translation, table_entry

# ---------------------------------------------------------------------------------------- detectors

def _single_stage(t: Translation, m: Section) -> None:
    t.config["model"] = {"type": "single_stage"}
    out = table_entry(t, BACKBONES, m.sub("backbone"), "backbone")(t, m.sub("backbone"))
    translate_necks(t, m, out)
    head = m.sub("bbox_head")
    train = m.sub("train_cfg") if m.get("train_cfg", None) is not None else None
    table_entry(t, DENSE_HEADS, head, "dense head")(t, head, train)
    dense_test(t, m.sub("test_cfg"))


def _features(t: Translation, m: Section, kind: str) -> tuple[Section | None, Section]:
    """Model type, backbone and neck; returns the train_cfg (or None) and test_cfg sections."""
    t.config["model"] = {"type": kind}
    out = table_entry(t, BACKBONES, m.sub("backbone"), "backbone")(t, m.sub("backbone"))
    translate_necks(t, m, out)
    return (m.sub("train_cfg") if m.get("train_cfg", None) is not None else None), m.sub("test_cfg")


def _rpn(t: Translation, m: Section) -> None:
    """An RPN alone (evaluated by proposal recall); its class count is the dataset's (COCO: 80)."""
    train, test = _features(t, m, "rpn")
    rpn_head(t, m.sub("rpn_head"), train and train.sub("rpn"), None, test.sub("rpn"))
    t.config["model"]["num_classes"] = 80
    for section in (train, test):
        if section is not None:
            section.done()


def _two_stage(t: Translation, m: Section) -> None:
    """Fast (no rpn_head: proposals from files), Faster, Mask and Cascade R-CNN."""
    train, test = _features(t, m, "two_stage")
    if m.type == "FastRCNN":
        t.config["model"]["rpn_head"] = None
    else:
        rpn_head(t, m.sub("rpn_head"), train and train.sub("rpn"), train and train.sub("rpn_proposal"),
                  test.sub("rpn"))
    roi = m.sub("roi_head")
    table_entry(t, ROI_HEADS, roi, "RoI head")(t, roi, train)
    rcnn_test(t, test.sub("rcnn"))
    for section in (train, test):
        if section is not None:
            section.done()


DETECTORS: dict[str, Callable[[Translation, Section], None]] = {
    "RetinaNet": _single_stage, "FCOS": _single_stage, "RPN": _rpn, "FastRCNN": _two_stage, "FasterRCNN": _two_stage,
    "MaskRCNN": _two_stage, "CascadeRCNN": _two_stage, "MaskScoringRCNN": _two_stage, "GridRCNN": _two_stage,
    "HybridTaskCascade": _two_stage, "FSAF": _single_stage,
    "SingleStageDetector": _single_stage}


def translate_config(cfg: dict, source: str) -> Translation:
    """The dettool config (a raw dict, as YAML holds it) and weight rules for an MMDetection config."""
    t = Translation(source)
    if not isinstance(cfg.get("model"), dict):
        raise t.fail("model", "no model section: not a detector config (a fragment for its _base_ list?)")
    model = Section(t, cfg.get("model"), "model")
    table_entry(t, DETECTORS, model, "model type")(t, model)
    if model.get("data_preprocessor", None) is not None:
        preprocessor(t, model.sub("data_preprocessor"))
    model.done()
    pipelines(t, cfg)
    training(t, cfg)
    return t


# ------------------------------------------------------------------------------------------- weights

def convert_state_dict(state: dict, t: Translation, expected: dict, source: str) -> dict:
    """``state`` renamed by ``t.rules``; it must hold exactly ``expected``'s names and shapes."""
    renamed = {name: _rename(t.rules + [(r"^data_preprocessor\.", None)], name) for name in state}
    out = {new: state[name] for name, new in renamed.items() if new is not None}
    missing = [k for k in expected if k not in out]
    extra = [k for k in out if k not in expected]
    if missing or extra:
        what = f"lacks {missing[0]!r}" if missing else f"has {extra[0]!r}, which the model does not"
        raise CheckpointError(f"{source}: does not match the config's architecture: it {what} "
                              f"({len(missing)} missing, {len(extra)} unexpected; a checkpoint of another model?)")
    for k, v in out.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(f"{source}: {k} has shape {tuple(v.shape)}, the config's model "
                                  f"{tuple(expected[k].shape)} (a checkpoint of another model?)")
    return out


def _rename(rules: list, name: str) -> str | None:
    """``name`` after every rule; None when a rule drops it (a constant dettool derives from the config)."""
    for pattern, repl in rules:
        if repl is None:
            if re.search(pattern, name):
                return None
            continue
        name = re.sub(pattern, repl, name)
    return name
