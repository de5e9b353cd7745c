"""AnchorGenerator: base anchor sizes, grid layout (y, x, anchor), valid flags, allowed_border."""
from __future__ import annotations

import math

import torch

from dettool.trainer.models.task_modules.anchor_generator import AnchorGenerator, anchor_inside_flags


def test_base_anchors_sizes_ratios_and_order():
    # stride 8, base scale 4, two scales per octave: sizes 32 and 32 * sqrt(2); ratio = h / w.
    gen = AnchorGenerator(strides=(8,), ratios=(0.5, 1.0), octave_base_scale=4.0, scales_per_octave=2)
    assert gen.num_base_anchors == 4
    base = gen.base_anchors[0]
    assert base.shape == (4, 4)
    sizes = [32.0, 32.0 * math.sqrt(2.0)]
    expected = []
    for r in (0.5, 1.0):  # ratio-major, scales inner (MMDetection's scale_major layout)
        for s in sizes:
            w, h = s / math.sqrt(r), s * math.sqrt(r)
            expected.append([-w / 2, -h / 2, w / 2, h / 2])  # centre_offset 0: centred on (0, 0)
    torch.testing.assert_close(base, torch.tensor(expected), rtol=0, atol=1e-4)
    w = base[:, 2] - base[:, 0]
    h = base[:, 3] - base[:, 1]
    torch.testing.assert_close(h / w, torch.tensor([0.5, 0.5, 1.0, 1.0]))
    torch.testing.assert_close(w * h, torch.tensor([32.0 ** 2, 2 * 32.0 ** 2] * 2), rtol=1e-5, atol=0)


def test_center_offset_moves_centre_into_the_cell():
    # stride 16, sizes 16: ratio 1 -> 16 x 16, ratio 4 -> w 8, h 32; centre at 0.5 * 16 = 8.
    gen = AnchorGenerator(strides=(16,), ratios=(1.0, 4.0), octave_base_scale=1.0, scales_per_octave=1,
                          center_offset=0.5)
    torch.testing.assert_close(gen.base_anchors[0], torch.tensor([[0.0, 0.0, 16.0, 16.0], [4.0, -8.0, 12.0, 24.0]]))


def test_grid_anchors_ordered_y_x_anchor():
    gen = AnchorGenerator(strides=(16, 32), ratios=(1.0, 4.0), octave_base_scale=1.0, scales_per_octave=1,
                          center_offset=0.5)
    lvl0, lvl1 = gen.grid_anchors([(2, 3), (1, 2)])
    assert lvl0.shape == (2 * 3 * 2, 4) and lvl1.shape == (1 * 2 * 2, 4)
    base = gen.base_anchors[0]
    for y in range(2):
        for x in range(3):
            for a in range(2):
                shift = torch.tensor([x * 16.0, y * 16.0, x * 16.0, y * 16.0])
                torch.testing.assert_close(lvl0[(y * 3 + x) * 2 + a], base[a] + shift)
    # Hand-written: y=1, x=2, the tall anchor (ratio 4).
    torch.testing.assert_close(lvl0[(1 * 3 + 2) * 2 + 1], torch.tensor([36.0, 8.0, 44.0, 40.0]))
    # Second level uses its own stride: x=1 shifts by 32; the square anchor is 32 x 32 centred at 16.
    torch.testing.assert_close(lvl1[2], torch.tensor([32.0, 0.0, 64.0, 32.0]))


def test_valid_flags_mark_only_locations_inside_the_unpadded_image():
    gen = AnchorGenerator(strides=(8, 16), ratios=(0.5, 1.0, 2.0), octave_base_scale=4.0, scales_per_octave=1)
    a = gen.num_base_anchors
    sizes = [(8, 8), (4, 4)]  # a 64 x 64 padded batch
    flags0, flags1 = gen.valid_flags(sizes, pad_shape=(64, 64), img_shape=(40, 20))
    assert flags0.dtype == torch.bool and flags0.shape == (8 * 8 * a,) and flags1.shape == (4 * 4 * a,)
    # level 0: ceil(40 / 8) = 5 rows, ceil(20 / 8) = 3 columns are inside the image
    exp0 = torch.zeros(8, 8, dtype=torch.bool)
    exp0[:5, :3] = True
    assert torch.equal(flags0.view(8, 8, a), exp0[:, :, None].expand(8, 8, a))
    # level 1: ceil(40 / 16) = 3 rows, ceil(20 / 16) = 2 columns
    exp1 = torch.zeros(4, 4, dtype=torch.bool)
    exp1[:3, :2] = True
    assert torch.equal(flags1.view(4, 4, a), exp1[:, :, None].expand(4, 4, a))
    assert int(flags0.sum()) == 5 * 3 * a


def test_valid_flags_unpadded_image_is_all_valid():
    gen = AnchorGenerator(strides=(8,), ratios=(1.0,), octave_base_scale=4.0, scales_per_octave=1)
    (flags,) = gen.valid_flags([(5, 7)], pad_shape=(40, 56), img_shape=(40, 56))
    assert bool(flags.all()) and flags.numel() == 35


def _edge_anchors():
    # image 100 wide, 50 high
    return torch.tensor([
        [0.0, 0.0, 10.0, 10.0],      # 0: well inside
        [-5.0, 10.0, 20.0, 20.0],    # 1: crosses the left edge by 5 px
        [90.0, 40.0, 100.0, 50.0],   # 2: ends exactly on the right/bottom edges
        [10.0, 10.0, 20.0, 20.0],    # 3: inside, but not a valid location (padding)
        [-500.0, -500.0, 900.0, 900.0],  # 4: far outside on all sides
        [80.0, 10.0, 103.0, 20.0],   # 5: crosses the right edge by 3 px
    ])


def test_anchor_inside_flags_unlimited_border_keeps_valid_flags():
    anchors = _edge_anchors()
    valid = torch.tensor([True, True, True, False, True, True])
    out = anchor_inside_flags(anchors, valid, (50, 100), allowed_border=-1)
    assert out.tolist() == valid.tolist()


def test_anchor_inside_flags_zero_border():
    anchors = _edge_anchors()
    valid = torch.tensor([True, True, True, False, True, True])
    out = anchor_inside_flags(anchors, valid, (50, 100), allowed_border=0)
    # MMDetection's rule: x1 >= -b, y1 >= -b, x2 < w + b, y2 < h + b (so an anchor ending exactly
    # on the edge counts as crossing it).
    assert out.tolist() == [True, False, False, False, False, False]


def test_anchor_inside_flags_positive_border():
    anchors = _edge_anchors()
    valid = torch.tensor([True, True, True, False, True, True])
    assert anchor_inside_flags(anchors, valid, (50, 100), allowed_border=4).tolist() == \
        [True, False, True, False, False, True]
    assert anchor_inside_flags(anchors, valid, (50, 100), allowed_border=8).tolist() == \
        [True, True, True, False, False, True]


def test_torchvision_options_give_torchvision_anchors() -> None:
    """Explicit truncated sizes, rounded base anchors and strides from the input size: an
    800 x 1216 input gives P6 (13 x 19) the strides 61 x 64, as torchvision's AnchorGenerator."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchors
    from torchvision.models.detection.image_list import ImageList

    from dettool.interop.torchvision_convert import RETINA_SIZES
    from dettool.trainer.models.task_modules.anchor_generator import level_strides

    sizes = [(100, 152), (50, 76), (25, 38), (13, 19), (7, 10)]
    feats = [torch.zeros(1, 1, h, w) for h, w in sizes]
    reference = TorchvisionAnchors(RETINA_SIZES, ((0.5, 1.0, 2.0),) * 5)(
        ImageList(torch.zeros(1, 3, 800, 1216), [(800, 1216)]), feats)[0]
    gen = AnchorGenerator(strides=(8, 16, 32, 64, 128), ratios=(0.5, 1.0, 2.0), octave_base_scale=4,
                          scales_per_octave=3, sizes=RETINA_SIZES, round_base=True, stride_from_input=True)
    assert torch.equal(torch.cat(gen.grid_anchors(sizes)), reference)
    assert level_strides(sizes, gen.strides, True)[3:] == [(61, 64), (114, 121)]
    plain = AnchorGenerator(strides=(8, 16, 32, 64, 128), ratios=(0.5, 1.0, 2.0), octave_base_scale=4,
                            scales_per_octave=3)
    assert not torch.equal(torch.cat(plain.grid_anchors(sizes)), reference)
