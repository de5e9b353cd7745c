"""SSD anchors: MMDetection's min / max size rule, anchors per location, and equality with
MMDetection's ``SSDAnchorGenerator.grid_priors`` (skipped without MMDetection)."""
from __future__ import annotations

import math

import pytest
import torch

from dettool.config import schema as S
from dettool.errors import ConfigError
from dettool.trainer.builder.task_modules import ANCHOR_GENERATORS
from dettool.trainer.models.task_modules.ssd_anchor_generator import SSDAnchorGenerator, ssd_anchor_sizes

SSD300 = dict(strides=(8, 16, 32, 64, 100, 300), ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)),
              featmap_sizes=[(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)])
SSD512 = dict(strides=(8, 16, 32, 64, 128, 256, 512), ratios=((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)),
              featmap_sizes=[(64, 64), (32, 32), (16, 16), (8, 8), (4, 4), (2, 2), (1, 1)])
# (network, input_size, basesize_ratio_range): MMDetection's COCO and VOC SSD configs
CASES = [(SSD300, 300, (0.15, 0.9)), (SSD300, 300, (0.2, 0.9)), (SSD512, 512, (0.1, 0.9)), (SSD512, 512, (0.15, 0.9))]
CASE_IDS = ["ssd300-coco", "ssd300-voc", "ssd512-coco", "ssd512-voc"]


def _generator(net: dict, input_size: int, basesize_ratio_range: tuple[float, float]) -> SSDAnchorGenerator:
    cfg = S.SSDAnchorConfig(strides=net["strides"], ratios=tuple(tuple(float(r) for r in rs) for rs in net["ratios"]),
                            basesize_ratio_range=basesize_ratio_range, input_size=input_size)
    return ANCHOR_GENERATORS.build(cfg, key="model.bbox_head.anchor")


def test_ssd300_coco_sizes_and_anchors_per_location():
    assert ssd_anchor_sizes(300, (0.15, 0.9), 6) == ([21, 45, 99, 153, 207, 261], [45, 99, 153, 207, 261, 315])
    gen = _generator(*CASES[0])
    assert gen.num_base_anchors_per_level == [4, 6, 6, 6, 4, 4]
    assert sum(a.shape[0] for a in gen.grid_anchors(SSD300["featmap_sizes"])) == 8732  # SSD300's known count
    with pytest.raises(ValueError, match="differ by level"):
        gen.num_base_anchors


def test_ssd512_coco_sizes_and_anchors_per_location():
    assert ssd_anchor_sizes(512, (0.1, 0.9), 7) == ([20, 51, 133, 215, 296, 378, 460],
                                                    [51, 133, 215, 296, 378, 460, 542])
    assert _generator(*CASES[2]).num_base_anchors_per_level == [4, 6, 6, 6, 6, 4, 4]


def test_base_anchor_order_min_square_max_square_then_ratio_pairs():
    # one level, stride 16, min 30, max 120: squares 30 and 60, then h / w 1/2 and 2 at size 30
    gen = SSDAnchorGenerator(strides=(16,), ratios=((2.0,),), min_sizes=(30,), max_sizes=(120,))
    base = gen.base_anchors[0]
    w, h = base[:, 2] - base[:, 0], base[:, 3] - base[:, 1]
    torch.testing.assert_close(w, torch.tensor([30.0, 60.0, 30 * math.sqrt(2), 30 / math.sqrt(2)]))
    torch.testing.assert_close(h, torch.tensor([30.0, 60.0, 30 / math.sqrt(2), 30 * math.sqrt(2)]))
    torch.testing.assert_close((base[:, 0] + base[:, 2]) / 2, torch.full((4,), 8.0))  # centred at stride / 2


def test_explicit_min_max_sizes_and_unknown_input_size():
    cfg = S.SSDAnchorConfig(input_size=400, min_sizes=(21, 45, 99, 153, 207, 261),
                            max_sizes=(45, 99, 153, 207, 261, 315))
    explicit = ANCHOR_GENERATORS.build(cfg, key="model.bbox_head.anchor")
    for a, b in zip(explicit.base_anchors, _generator(*CASES[0]).base_anchors):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="no first-level rule for input_size 400"):
        ANCHOR_GENERATORS.build(S.SSDAnchorConfig(input_size=400), key="model.bbox_head.anchor")


@pytest.mark.parametrize("net, input_size, basesize_ratio_range", CASES, ids=CASE_IDS)
def test_equals_mmdetection_grid_priors(net, input_size, basesize_ratio_range):
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmdet.models.task_modules.prior_generators import SSDAnchorGenerator as MMDetSSDAnchorGenerator

    ref = MMDetSSDAnchorGenerator(strides=list(net["strides"]), ratios=[list(r) for r in net["ratios"]],
                                  basesize_ratio_range=basesize_ratio_range, input_size=input_size,
                                  scale_major=False)
    gen = _generator(net, input_size, basesize_ratio_range)
    sizes = net["featmap_sizes"]
    assert gen.num_base_anchors_per_level == ref.num_base_anchors
    for ours, theirs in zip(gen.grid_anchors(sizes), ref.grid_priors(sizes, device="cpu")):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    pad = (input_size, input_size)
    for ours, theirs in zip(gen.valid_flags(sizes, pad, pad), ref.valid_flags(sizes, pad, device="cpu")):
        assert torch.equal(ours, theirs)


def test_config_from_yaml_data_picks_the_ssd_class_by_type():
    from dettool.config.loader import build

    data = {"type": "ssd", "input_size": 512, "basesize_ratio_range": [0.1, 0.9],
            "strides": list(SSD512["strides"]), "ratios": [list(r) for r in SSD512["ratios"]]}
    cfg = build(S.AnchorGeneratorConfig, data, "ssd512.yaml", "model.bbox_head.anchor")
    assert isinstance(cfg, S.SSDAnchorConfig) and cfg.ratios[1] == (2.0, 3.0)
    assert isinstance(build(S.AnchorGeneratorConfig, {"strides": [8]}, "retina.yaml", "anchor"), S.AnchorConfig)
    with pytest.raises(ConfigError, match="min_sizes: needs max_sizes"):
        build(S.AnchorGeneratorConfig, {"type": "ssd", "min_sizes": [1, 2, 3, 4, 5, 6]}, "ssd.yaml", "anchor")
