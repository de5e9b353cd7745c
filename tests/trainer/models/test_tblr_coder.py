"""TBLRCoder: hand-computed encode, round trip, clipping, and MMDetection's TBLRBBoxCoder's values."""
from __future__ import annotations

import torch

from dettool.trainer.models.task_modules.tblr_coder import TBLRCoder

PRIOR = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size 10 x 20
GT = torch.tensor([[2.0, 4.0, 25.0, 45.0]])


def random_boxes(n: int, seed: int, size: float = 60.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * size + 2], 1)


def test_encode_hand_computed():
    tblr = TBLRCoder(normalizer=4.0).encode(PRIOR, GT)
    # t = (10 - 4) / 20, b = (45 - 10) / 20, l = (5 - 2) / 10, r = (25 - 5) / 10, all / 4
    torch.testing.assert_close(tblr, torch.tensor([[0.3, 1.75, 0.3, 2.0]]) / 4)


def test_decode_of_the_encoding_is_the_gt_box():
    coder = TBLRCoder(normalizer=4.0)
    priors, gts = random_boxes(50, 0), random_boxes(50, 1)
    torch.testing.assert_close(coder.decode(priors, coder.encode(priors, gts)), gts, atol=1e-4, rtol=0)


def test_batched_decode_clips_each_image_to_its_shape():
    coder = TBLRCoder(normalizer=1.0)
    priors = PRIOR.expand(2, 1, 4)
    tblr = torch.full((2, 1, 4), 2.0)  # 40 up and down, 20 left and right of (5, 10)
    out = coder.decode(priors, tblr, max_shape=torch.tensor([[30, 12], [100, 100]]))
    torch.testing.assert_close(out, torch.tensor([[[0.0, 0.0, 12.0, 30.0]], [[0.0, 0.0, 25.0, 50.0]]]))
    unclipped = TBLRCoder(normalizer=1.0, clip_border=False).decode(priors, tblr, max_shape=(30, 12))
    torch.testing.assert_close(unclipped[0], torch.tensor([[-15.0, -30.0, 25.0, 50.0]]))


def test_values_equal_mmdetection():
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmdet.models.task_modules.coders import TBLRBBoxCoder

    ref, coder = TBLRBBoxCoder(normalizer=4.0), TBLRCoder(normalizer=4.0)
    priors, gts = random_boxes(40, 2), random_boxes(40, 3)
    torch.testing.assert_close(coder.encode(priors, gts), ref.encode(priors, gts))
    tblr = torch.rand(40, 4, generator=torch.Generator().manual_seed(4)) * 2
    torch.testing.assert_close(coder.decode(priors, tblr, max_shape=(90, 120)),
                               ref.decode(priors, tblr, max_shape=(90, 120)))
