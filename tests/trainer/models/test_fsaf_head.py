"""FSAFHead: losses equal MMDetection's FSAFHead.loss_by_feat, the online feature selection on a
hand-made case, empty ground truth (mmdetection's test_fsaf_head.py pattern), batches, predict,
and the COCO config training one iteration."""
from __future__ import annotations

import math

import pytest
import torch
from detector_helpers import CONFIGS, tiny_sets

from dettool.config import load_config
from dettool.config import schema as S
from dettool.trainer import builder
from dettool.trainer.builder.dense_heads import build_dense_head
from dettool.trainer.models.dense_heads.fsaf_head import UNSEEN_LEVEL_LOSS, FSAFHead

NUM_CLASSES, IN_CHANNELS, STRIDES = 3, 8, (8, 16, 32)
H, W = 96, 128
META = {"img_shape": (H, W), "pad_shape": (H, W), "batch_input_shape": (H, W), "ori_shape": (H, W),
        "scale_factor": (1.0, 1.0)}
# image 0: overlapping boxes of several sizes (positives on several levels, shadowed pairs), one touching the
# border; image 1: one box. Ignore boxes: one in image 0.
GTS = [torch.tensor([[10.0, 12.0, 60.0, 70.0], [30.0, 20.0, 50.0, 45.0], [5.0, 50.0, 120.0, 95.0],
                     [0.0, 0.0, 40.0, 30.0]]), torch.tensor([[40.0, 30.0, 90.0, 80.0]])]
LABELS = [torch.tensor([0, 1, 2, 1]), torch.tensor([2])]
IGNORE = [torch.tensor([[90.0, 5.0, 125.0, 40.0]]), torch.zeros((0, 4))]


def fsaf_head(foreground_dominate: bool = False, **test) -> FSAFHead:
    cfg = S.FSAFHeadConfig(feat_channels=IN_CHANNELS, stacked_convs=1,
                           anchor=S.AnchorConfig(strides=STRIDES, ratios=(1.0,), octave_base_scale=1.0,
                                                 scales_per_octave=1),
                           assigner=S.CenterRegionAssignerConfig(foreground_dominate=foreground_dominate))
    head = build_dense_head(cfg, NUM_CLASSES, (IN_CHANNELS,) * len(STRIDES), S.TestConfig(**test))
    assert isinstance(head, FSAFHead)
    return head


def feats(batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, IN_CHANNELS, H // s, W // s, generator=g) for s in STRIDES]


def targets(with_ignore: bool = True) -> list[dict]:
    out = [{"boxes": b, "labels": lab} for b, lab in zip(GTS, LABELS)]
    if with_ignore:
        for t, ignore in zip(out, IGNORE):
            t["ignore_boxes"] = ignore
    return out


def mmdet_fsaf_head(foreground_dominate: bool):
    """MMDetection's FSAFHead with fsaf_r50_fpn_1x_coco.py's head settings, on our sizes."""
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import ConfigDict

    register_all_modules()
    return MODELS.build(dict(
        type="FSAFHead", num_classes=NUM_CLASSES, in_channels=IN_CHANNELS, stacked_convs=1,
        feat_channels=IN_CHANNELS, reg_decoded_bbox=True,
        anchor_generator=dict(type="AnchorGenerator", octave_base_scale=1, scales_per_octave=1, ratios=[1.0],
                              strides=list(STRIDES)),
        bbox_coder=dict(type="TBLRBBoxCoder", normalizer=4.0),
        loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0, reduction="none"),
        loss_bbox=dict(type="IoULoss", eps=1e-6, loss_weight=1.0, reduction="none"),
        train_cfg=ConfigDict(assigner=dict(type="CenterRegionAssigner", pos_scale=0.2, neg_scale=0.2,
                                           min_pos_iof=0.01, foreground_dominate=foreground_dominate),
                             sampler=dict(type="PseudoSampler"), allowed_border=-1, pos_weight=-1, debug=False)))


@pytest.mark.parametrize("dominate", [False, True])
def test_losses_and_gradients_equal_mmdetection(dominate):
    ref = mmdet_fsaf_head(dominate)
    from mmengine.structures import InstanceData
    head = fsaf_head(foreground_dominate=dominate)
    # MMDetection's ConvModule towers: cls_convs.0.conv.* is dettool's cls_convs.0.*
    head.load_state_dict({k.replace(".conv.", "."): v for k, v in ref.state_dict().items()})
    with torch.no_grad():  # spread-out scores and boxes instead of the initial prior
        for m in (ref, head):
            torch.manual_seed(1)
            m.retina_cls.weight.normal_(0, 0.3)
            m.retina_reg.weight.normal_(0, 0.1)
    x = feats()
    ref_raw, raw = ref(x), head(x)
    for r, d in zip([*ref_raw[0], *ref_raw[1]], [*raw[0], *raw[1]]):
        torch.testing.assert_close(d, r)
    ref_losses = ref.loss_by_feat(list(ref_raw[0]), list(ref_raw[1]),
                                  [InstanceData(bboxes=b, labels=lab) for b, lab in zip(GTS, LABELS)], [META] * 2,
                                  [InstanceData(bboxes=b) for b in IGNORE])
    losses = head.loss(raw, targets(), [META] * 2)
    for key in ("loss_cls", "loss_bbox"):
        torch.testing.assert_close(losses[key], sum(ref_losses[key]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["num_pos"], ref_losses["num_pos"].float())
    torch.testing.assert_close(losses["pos_recall"], ref_losses["pos_recall"].float().reshape(()))
    assert losses["num_pos"] > 0 and losses["loss_bbox"] > 0
    (sum(ref_losses["loss_cls"]) + sum(ref_losses["loss_bbox"])).backward()
    (losses["loss_cls"] + losses["loss_bbox"]).backward()
    # float32 sums in another order: an element that nearly cancels (1e-3 from terms of 1e-1) may
    # differ by a few 1e-7 (a quarter of the global seeds), so atol is 1e-6 of the largest gradient
    for (name, p), (_, q) in zip(head.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6 * float(q.grad.abs().max()),
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_select_levels_takes_the_lowest_mean_loss_per_gt():
    # gt 0: level 0 mean (1 + 3) / 2 = 2, level 1: 1.5 -> 1; gt 1: level 1 2.5, level 2 0.7 -> 2; gt 2: no positive
    losses = torch.tensor([1.0, 3.0, 1.5, 2.5, 0.7])
    gts = torch.tensor([0, 0, 0, 1, 1])
    levels = torch.tensor([0, 0, 1, 1, 2])
    assert FSAFHead._select_levels(losses, gts, levels, num_gts=3, num_levels=3).tolist() == [1, 2, 0]
    assert UNSEEN_LEVEL_LOSS > 1e5


def focal(logit: float, positive: bool, alpha: float = 0.25, gamma: float = 2.0) -> float:
    p = 1 / (1 + math.exp(-logit))
    return alpha * (1 - p) ** gamma * -math.log(p) if positive else (1 - alpha) * p ** gamma * -math.log(1 - p)


def test_gt_is_trained_on_the_level_that_regresses_it_best_only():
    """Equal scores everywhere, exact distances on level 1 (stride 16) only: the gt's positives
    there are the positives; on levels 0 and 2 they are neither positive nor negative for its class."""
    head = fsaf_head()
    gt = torch.tensor([[20.0, 16.0, 84.0, 72.0]])
    sizes = [(H // s, W // s) for s in STRIDES]
    anchors = head.anchor_generator.grid_anchors(sizes, torch.device("cpu"))
    assign = head.assigner.assign(torch.cat(anchors), gt, torch.tensor([1]))
    level_of = torch.cat([torch.full((len(a),), i) for i, a in enumerate(anchors)])
    pos_levels = level_of[assign.gt_inds > 0]
    assert set(pos_levels.tolist()) >= {0, 1}  # positives on several levels to select from
    logit = -2.0
    cls = [torch.full((1, NUM_CLASSES, h, w), logit) for h, w in sizes]
    reg = [torch.full((1, 4, h, w), 0.05) for h, w in sizes]  # boxes far too small: large IoU loss
    ys, xs = torch.meshgrid(torch.arange(sizes[1][0]), torch.arange(sizes[1][1]), indexing="ij")
    exact = head.bbox_coder.encode(anchors[1], gt.expand(len(anchors[1]), 4))  # [n, 4] in (y, x) order
    inside = assign.gt_inds[level_of == 1] > 0
    reg[1][0, :, ys.reshape(-1)[inside], xs.reshape(-1)[inside]] = exact[inside].T
    losses = head.loss((cls, reg), [{"boxes": gt, "labels": torch.tensor([1])}], [META])
    num_sel = int((pos_levels == 1).sum())
    num_off = int((pos_levels != 1).sum())
    assert losses["num_pos"].item() == num_sel
    assert losses["loss_bbox"].item() == pytest.approx(0.0, abs=1e-4)
    n = sum(h * w for h, w in sizes)
    weighted = n * NUM_CLASSES - num_off - len(assign.shadowed_labels)  # (location, class) pairs trained
    expected = (num_sel * focal(logit, True) + (weighted - num_sel) * focal(logit, False)) / num_sel
    assert losses["loss_cls"].item() == pytest.approx(expected, rel=1e-5)


def test_empty_gt_only_classification_loss():
    torch.manual_seed(0)
    head = fsaf_head()
    empty = [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.long)}] * 2
    losses = head.loss(head(feats()), empty, [META] * 2)
    assert losses["loss_cls"].item() > 0 and math.isfinite(losses["loss_cls"].item())
    assert losses["loss_bbox"].item() == 0 and losses["num_pos"].item() == 0
    total = losses["loss_cls"] + losses["loss_bbox"]
    assert losses["loss_bbox"].requires_grad  # stays in the graph (no unused parameters under DDP)
    total.backward()
    assert all(p.grad is not None for p in head.parameters())


def test_batch_loss_sums_the_images_normalised_by_all_positives():
    """The batch normalises by its positives: loss x num_pos adds up over the images, in any order
    (the gt indices run over the batch without mixing images)."""
    torch.manual_seed(0)
    head = fsaf_head()
    raw = head(feats())
    t = targets()
    batch = head.loss(raw, t, [META] * 2)
    single = [head.loss(tuple([x[i:i + 1] for x in part] for part in raw), [t[i]], [META]) for i in range(2)]
    swapped = head.loss(tuple([x.flip(0) for x in part] for part in raw), t[::-1], [META] * 2)
    num_pos = batch["num_pos"] * 2
    assert num_pos == single[0]["num_pos"] + single[1]["num_pos"]
    for key in ("loss_cls", "loss_bbox"):
        total = sum(s[key] * s["num_pos"] for s in single)
        torch.testing.assert_close(batch[key] * num_pos, total, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(swapped[key], batch[key], rtol=1e-5, atol=1e-6)


def test_predict_decodes_tblr_distances_and_clips():
    head = fsaf_head(score_thr=0.05)
    sizes = [(H // s, W // s) for s in STRIDES]
    cls = [torch.full((1, NUM_CLASSES, h, w), -10.0) for h, w in sizes]
    reg = [torch.zeros(1, 4, h, w) for h, w in sizes]
    cls[0][0, 2, 2, 3] = 10.0  # level 0, y = 2, x = 3: location (24, 16), class 2
    reg[0][0, :, 2, 3] = torch.tensor([1.0, 0.5, 0.25, 2.0])  # t, b, l, r x 4 x 8 px: 32, 16, 8, 64
    (det,) = head.predict((cls, reg), [META])
    assert len(det) == 1 and det.labels.tolist() == [2]
    torch.testing.assert_close(det.boxes, torch.tensor([[16.0, 0.0, 88.0, 32.0]]))  # y1 = 16 - 32 clipped


def test_coco_config_builds_and_trains_one_iteration(tiny_synth):
    cfg = load_config(CONFIGS / "fsaf_r50_fpn_1x_coco.yaml",
                      tiny_sets(tiny_synth, "model.num_classes=4", "data.train_scale=320x256", "train.batch_size=2"))
    assert isinstance(cfg.model.bbox_head, S.FSAFHeadConfig)
    torch.manual_seed(0)
    model = builder.build_model(cfg).train()
    assert isinstance(model.bbox_head, FSAFHead) and model.bbox_head.num_anchors == 1
    optimizer = builder.build_optimizer(cfg.train.optimizer, model)
    dataset = builder.build_dataset(cfg, "train")
    images, batch_targets, metas = next(iter(builder.build_dataloader(cfg, dataset, train=True)))
    losses = model.loss(images, batch_targets, metas)
    total = sum(v for k, v in losses.items() if k.startswith("loss_"))
    assert math.isfinite(total.item()) and losses["num_pos"] > 0
    optimizer.zero_grad()
    total.backward()
    before = model.bbox_head.retina_reg.weight.detach().clone()
    optimizer.step()
    assert not torch.equal(before, model.bbox_head.retina_reg.weight)
