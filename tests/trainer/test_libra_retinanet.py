"""Libra RetinaNet (FPN + balanced feature pyramid, balanced L1): the shipped configs, empty ground
truth, batches, and one training iteration of the COCO config on the tiny synthetic set."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from detector_helpers import empty_and_one_gt_losses

from dettool.config import load_config
from dettool.config import schema as S
from dettool.trainer import builder
from dettool.trainer.models.losses import BalancedL1Loss
from dettool.trainer.models.necks.bfp import BFP
from dettool.trainer.train import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SYNTH = CONFIGS / "libra_retinanet_r18_fpn_synth.yaml"
COCO = CONFIGS / "libra_retinanet_r50_fpn_1x_coco.yaml"


def test_coco_config_has_mmdetections_libra_settings():
    cfg = load_config(COCO)
    fpn, bfp = cfg.model.neck
    assert isinstance(fpn, S.FPNConfig)
    assert (fpn.out_channels, fpn.num_outs, fpn.add_extra_convs) == (256, 5, "on_input")
    assert bfp == S.BFPConfig(refine_level=1, refine_type="non_local")
    assert cfg.model.bbox_head.loss_bbox == S.BalancedL1LossConfig(alpha=0.5, gamma=1.5, beta=0.11, weight=1.0)
    model = builder.build_model(cfg)
    assert isinstance(model.neck.necks[1], BFP) and isinstance(model.bbox_head.loss_bbox, BalancedL1Loss)


def test_empty_gt_gives_finite_classification_and_zero_box_loss():
    torch.manual_seed(0)
    model = builder.build_model(load_config(SYNTH)).train()
    empty, one = empty_and_one_gt_losses(model)
    assert empty["loss_cls"].item() > 0 and math.isfinite(empty["loss_cls"].item())
    assert empty["loss_bbox"].item() == 0.0
    assert all(v.item() > 0 and math.isfinite(v.item()) for v in one.values())
    sum(empty.values()).backward()


def test_predict_of_a_batch_equals_each_image_alone():
    torch.manual_seed(0)
    model = builder.build_model(load_config(SYNTH, ["test.score_thr=0.0"])).eval()
    with torch.no_grad():  # spread-out scores, not the prior
        model.bbox_head.retina_cls.weight.normal_(0.0, 0.05)
    images = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    metas = [{"img_shape": (96, 128), "pad_shape": (96, 128), "ori_shape": (96, 128), "scale_factor": (1.0, 1.0)},
             {"img_shape": (80, 100), "pad_shape": (96, 128), "ori_shape": (80, 100), "scale_factor": (1.0, 1.0)}]
    with torch.no_grad():
        batched = model.predict(images, metas)
        singles = [model.predict(images[i:i + 1], metas[i:i + 1])[0] for i in range(2)]
    for b, s in zip(batched, singles):
        assert len(b) == len(s) > 0
        torch.testing.assert_close(b.boxes, s.boxes, atol=1e-3, rtol=0)
        torch.testing.assert_close(b.scores, s.scores, atol=1e-5, rtol=0)


def test_coco_config_trains_one_iteration_on_synthetic_data(tiny_synth, tmp_path):
    root = tiny_synth
    sets = [f"data.train.ann_file={root / 'annotations/train.json'}", f"data.train.img_dir={root / 'train'}",
            f"data.val.ann_file={root / 'annotations/val.json'}", f"data.val.img_dir={root / 'val'}",
            "model.num_classes=4", "data.num_workers=0", "data.train_scale=128x96", "data.test_scale=128x96",
            "train.batch_size=2", "train.max_epochs=1", "train.max_iters=1", "train.eval_interval=0",
            "train.log_interval=1", "train.lr.warmup_iters=1", f"work_dir={tmp_path}"]
    cfg = load_config(COCO, sets)
    before = {k: v.clone() for k, v in builder.build_model(cfg).neck.state_dict().items()}
    train(cfg, device="cpu")
    assert (tmp_path / "iter_1.pth").is_file()
    after = torch.load(tmp_path / "iter_1.pth", weights_only=True)["model"]
    # the non-local block's output conv starts at zero and has moved after one SGD step
    assert not torch.equal(after["neck.necks.1.refine.conv_out.weight"],
                           before["necks.1.refine.conv_out.weight"])
