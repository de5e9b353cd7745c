"""DeltaXYWHCoder: hand-computed encode, round trip, wh_ratio_clip, clipping to the image."""
from __future__ import annotations

import math

import torch

from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder

ANCHOR = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size 10 x 20
GT = torch.tensor([[5.0, 5.0, 25.0, 45.0]])      # centre (15, 25), size 20 x 40


def test_encode_hand_computed():
    deltas = DeltaXYWHCoder().encode(ANCHOR, GT)
    # dx = 10 / 10, dy = 15 / 20, dw = log(20 / 10), dh = log(40 / 20)
    torch.testing.assert_close(deltas, torch.tensor([[1.0, 0.75, math.log(2.0), math.log(2.0)]]))


def test_encode_normalises_with_means_and_stds():
    coder = DeltaXYWHCoder(target_means=(0.1, 0.0, 0.0, -0.1), target_stds=(0.1, 0.1, 0.2, 0.2))
    deltas = coder.encode(ANCHOR, GT)
    expected = [(1.0 - 0.1) / 0.1, 0.75 / 0.1, math.log(2.0) / 0.2, (math.log(2.0) + 0.1) / 0.2]
    torch.testing.assert_close(deltas, torch.tensor([expected]))


def test_identity_encodes_to_zero_and_zero_decodes_to_reference():
    coder = DeltaXYWHCoder(target_means=(0.0, 0.0, 0.0, 0.0), target_stds=(0.1, 0.1, 0.2, 0.2))
    torch.testing.assert_close(coder.encode(GT, GT), torch.zeros(1, 4))
    torch.testing.assert_close(coder.decode(GT, torch.zeros(1, 4)), GT)


def test_encode_decode_round_trip_with_means_and_stds():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 100
    wh = torch.rand(50, 2, generator=g) * 50 + 5
    boxes = torch.cat([xy, xy + wh], 1)
    # gt: shifted and rescaled by at most 2x, well inside the default wh_ratio_clip
    shift = (torch.rand(50, 2, generator=g) - 0.5) * 20
    scale = torch.rand(50, 2, generator=g) * 1.5 + 0.5
    centre = xy + wh / 2 + shift
    gt_wh = wh * scale
    gt = torch.cat([centre - gt_wh / 2, centre + gt_wh / 2], 1)
    coder = DeltaXYWHCoder(target_means=(0.05, -0.05, 0.1, 0.0), target_stds=(0.1, 0.1, 0.2, 0.2))
    deltas = coder.encode(boxes, gt)
    torch.testing.assert_close(coder.decode(boxes, deltas), gt, rtol=1e-5, atol=1e-3)


def test_decode_accepts_batched_leading_dims():
    coder = DeltaXYWHCoder()
    boxes = ANCHOR.expand(2, 3, 4)
    deltas = coder.encode(ANCHOR, GT).expand(2, 3, 4)
    out = coder.decode(boxes, deltas)
    assert out.shape == (2, 3, 4)
    torch.testing.assert_close(out, GT.expand(2, 3, 4))


def test_wh_ratio_clip_clamps_dw_dh_when_decoding():
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    deltas = torch.tensor([[0.0, 0.0, 10.0, -10.0]])  # exp(10) would be 22026x
    out = DeltaXYWHCoder().decode(box, deltas)  # default clip 16 / 1000: at most 62.5x
    w, h = 10 * 1000 / 16, 10 * 16 / 1000
    torch.testing.assert_close(out, torch.tensor([[5 - w / 2, 5 - h / 2, 5 + w / 2, 5 + h / 2]]))
    out = DeltaXYWHCoder(wh_ratio_clip=0.5).decode(box, deltas)  # at most 2x
    torch.testing.assert_close(out, torch.tensor([[-5.0, 2.5, 15.0, 7.5]]))


def test_wh_ratio_clip_applies_after_denormalisation():
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    coder = DeltaXYWHCoder(target_stds=(1.0, 1.0, 0.2, 0.2), wh_ratio_clip=0.5)
    # dw = 3 * 0.2 = 0.6 < log 2 passes; dh = 5 * 0.2 = 1.0 > log 2 is clamped.
    out = coder.decode(box, torch.tensor([[0.0, 0.0, 3.0, 5.0]]))
    w, h = 10 * math.exp(0.6), 20.0
    torch.testing.assert_close(out, torch.tensor([[5 - w / 2, 5 - h / 2, 5 + w / 2, 5 + h / 2]]))


def test_decode_clips_to_max_shape():
    boxes = torch.tensor([[30.0, 20.0, 50.0, 40.0], [-5.0, -5.0, 5.0, 5.0], [10.0, 10.0, 20.0, 20.0]])
    zeros = torch.zeros(3, 4)
    clipped = DeltaXYWHCoder().decode(boxes, zeros, max_shape=(30, 40))  # (h, w)
    torch.testing.assert_close(clipped, torch.tensor([[30.0, 20.0, 40.0, 30.0], [0.0, 0.0, 5.0, 5.0],
                                                      [10.0, 10.0, 20.0, 20.0]]))
    torch.testing.assert_close(DeltaXYWHCoder().decode(boxes, zeros), boxes)  # no max_shape: no clip
    torch.testing.assert_close(DeltaXYWHCoder(clip_border=False).decode(boxes, zeros, max_shape=(30, 40)), boxes)
