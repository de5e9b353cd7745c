"""CenterRegionAssigner: hand-made cases of each rule, and MMDetection's CenterRegionAssigner on random boxes."""
from __future__ import annotations

import pytest
import torch

from dettool.trainer.models.task_modules.center_region_assigner import CenterRegionAssigner

FSAF = {"pos_scale": 0.2, "neg_scale": 0.2, "min_pos_iof": 0.01, "ignore_gt_scale": 0.5}


def grid_priors(size: int, stride: float) -> torch.Tensor:
    """Square priors of side ``stride`` centred on a ``size`` x ``size`` grid of step ``stride``."""
    ys, xs = torch.meshgrid(torch.arange(size) * stride, torch.arange(size) * stride, indexing="ij")
    c = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1).float()
    return torch.cat([c - stride / 2, c + stride / 2], 1)


def test_centre_priors_are_positive_the_rest_negative():
    priors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 20.0, 20.0], [40.0, 40.0, 50.0, 50.0]])
    res = CenterRegionAssigner(**FSAF, foreground_dominate=False).assign(
        priors, torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([2]))
    assert res.gt_inds.tolist() == [1, 0, 0]
    assert res.labels.tolist() == [2, -1, -1]
    assert res.shadowed_labels.shape == (0, 2)


def test_overlapping_gts_the_smaller_wins_and_shadows_the_larger():
    priors = grid_priors(8, 8.0)  # centres 0, 8, ..., 56
    gts = torch.tensor([[0.0, 0.0, 64.0, 64.0], [20.0, 20.0, 44.0, 44.0]])  # both centred on (32, 32)
    res = CenterRegionAssigner(**FSAF, foreground_dominate=True).assign(priors, gts, torch.tensor([0, 1]))
    centre = 4 * 8 + 4  # the prior centred on (32, 32)
    assert res.gt_inds[centre] == 2 and res.labels[centre] == 1
    # it lies in the large gt's core too: shadowed for class 0
    assert [centre, 0] in res.shadowed_labels.tolist()


@pytest.mark.parametrize("dominate", [True, False])
def test_same_class_overlap_follows_foreground_dominate(dominate):
    priors = grid_priors(8, 8.0)
    gts = torch.tensor([[0.0, 0.0, 64.0, 64.0], [20.0, 20.0, 44.0, 44.0]])
    res = CenterRegionAssigner(**FSAF, foreground_dominate=dominate).assign(priors, gts, torch.tensor([1, 1]))
    centre = 4 * 8 + 4
    if dominate:  # stays positive for the small gt, not shadowed for its own class
        assert res.gt_inds[centre] == 2 and centre not in res.shadowed_labels[:, 0].tolist()
    else:  # becomes a negative not trained on class 1
        assert res.gt_inds[centre] == 0 and res.labels[centre] == -1
        assert [centre, 1] in res.shadowed_labels.tolist()


def test_ignore_boxes_ignore_the_priors_centred_in_their_scaled_region():
    priors = grid_priors(8, 8.0)
    res = CenterRegionAssigner(**FSAF, foreground_dominate=False).assign(
        priors, torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.long), torch.tensor([[0.0, 0.0, 40.0, 40.0]]))
    # scaled by 0.5 about (20, 20): (10, 10, 30, 30) holds the centres 16 and 24 in x and y
    ignored = {y * 8 + x for y in (2, 3) for x in (2, 3)}
    assert {int(i) for i in (res.gt_inds == -1).nonzero()} == ignored
    assert (res.gt_inds[[i for i in range(64) if i not in ignored]] == 0).all()


def test_no_gt_everything_negative():
    res = CenterRegionAssigner(**FSAF, foreground_dominate=False).assign(
        grid_priors(4, 8.0), torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.long))
    assert (res.gt_inds == 0).all() and (res.labels == -1).all() and res.shadowed_labels.shape == (0, 2)


def random_gts(n: int, g: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * 100
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 60 + 4], 1)


@pytest.mark.parametrize("dominate", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_equals_mmdetection_on_random_boxes(seed, dominate):
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmdet.models.task_modules.assigners import CenterRegionAssigner as Ref
    from mmengine.structures import InstanceData

    g = torch.Generator().manual_seed(seed)
    priors = torch.cat([grid_priors(20, 8.0), grid_priors(10, 16.0), grid_priors(5, 32.0)])
    gts = random_gts(12, g)
    labels = torch.randint(0, 3, (12,), generator=g)
    ignore = random_gts(2, g) if seed % 2 else torch.zeros((0, 4))
    ref = Ref(**FSAF, foreground_dominate=dominate).assign(
        InstanceData(priors=priors), InstanceData(bboxes=gts, labels=labels), InstanceData(bboxes=ignore))
    res = CenterRegionAssigner(**FSAF, foreground_dominate=dominate).assign(priors, gts, labels, ignore)
    assert torch.equal(res.gt_inds, ref.gt_inds)
    assert torch.equal(res.labels, ref.labels)
    shadowed = ref.get_extra_property("shadowed_labels")
    assert (res.gt_inds > 0).any() and shadowed.numel()
    assert sorted(map(tuple, res.shadowed_labels.tolist())) == sorted(map(tuple, shadowed.tolist()))
