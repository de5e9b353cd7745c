"""Tiny end-to-end runs of the shipped configs: train, evaluate, resume (CPU, seconds)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dettool.config import load_config
from dettool.evaluation.coco_eval import BBOX_METRICS
from dettool.trainer.evaluate import evaluate_checkpoint
from dettool.trainer.train import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
METRIC_KEYS = [f"bbox_{k}" for k in BBOX_METRICS]


def tiny_overrides(root: Path, work_dir: Path, *extra: str) -> list[str]:
    return [f"data.train.ann_file={root / 'annotations' / 'train.json'}", f"data.train.img_dir={root / 'train'}",
            f"data.val.ann_file={root / 'annotations' / 'val.json'}", f"data.val.img_dir={root / 'val'}",
            "data.synth=null", "data.num_workers=0", "data.train_scale=128x96", "data.test_scale=128x96",
            "train.batch_size=8", "train.log_interval=1", "train.lr.warmup_iters=1", f"work_dir={work_dir}",
            *extra]


def read_log(work_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (work_dir / "log.jsonl").read_text(encoding="utf-8").splitlines()]


def assert_metrics(metrics: dict) -> None:
    assert set(METRIC_KEYS) <= set(metrics)
    for key in METRIC_KEYS:
        assert 0.0 <= metrics[key] <= 1.0, (key, metrics[key])


@pytest.fixture(scope="module")
def retina_run(tiny_synth, tmp_path_factory):
    """One epoch of RetinaNet on the tiny dataset (2 iterations of 8 images)."""
    work_dir = tmp_path_factory.mktemp("retina_work")
    cfg = load_config(CONFIGS / "retinanet_r18_fpn_synth.yaml",
                      tiny_overrides(tiny_synth, work_dir, "train.max_epochs=1"))
    metrics = train(cfg, device="cpu")
    return cfg, work_dir, metrics


def test_train_writes_checkpoint_log_curve_and_metrics(retina_run):
    cfg, work_dir, metrics = retina_run
    assert (work_dir / "epoch_1.pth").is_file()
    assert (work_dir / "last_checkpoint").read_text().strip() == "epoch_1.pth"
    assert (work_dir / "loss_curve.png").stat().st_size > 0
    assert (work_dir / "config.yaml").is_file()
    assert_metrics(metrics)
    assert json.loads((work_dir / "metrics.json").read_text()) == metrics
    log = read_log(work_dir)
    assert log[0]["mode"] == "start" and log[0]["epoch"] == 0
    assert log[-1]["mode"] == "end" and log[-1]["epoch"] == 1
    train_records = [r for r in log if r["mode"] == "train"]
    assert train_records and all(r["loss"] == r["loss"] and r["loss"] > 0 for r in train_records)  # finite
    assert any(r["mode"] == "val" and r["epoch"] == 1 for r in log)


def test_evaluate_checkpoint_writes_metrics_json_and_drawings(retina_run, tmp_path):
    cfg, work_dir, _ = retina_run
    out, show = tmp_path / "m.json", tmp_path / "show"
    report = evaluate_checkpoint(cfg, work_dir / "epoch_1.pth", out=out, show_dir=show, device="cpu")
    written = json.loads(out.read_text())
    assert_metrics(written)
    assert written["num_images"] == 6 and set(written["per_class_AP"]) == {"box", "disc", "triangle", "cross"}
    assert {k: written[k] for k in METRIC_KEYS} == {k: report[k] for k in METRIC_KEYS}
    assert out.with_suffix(".md").is_file()
    drawn = sorted(show.glob("*.png"))
    assert len(drawn) == 6
    assert all(p.stat().st_size > 0 for p in drawn)


def test_resume_auto_continues_from_last_epoch(retina_run, tiny_synth):
    cfg, work_dir, _ = retina_run
    cfg2 = load_config(CONFIGS / "retinanet_r18_fpn_synth.yaml",
                       tiny_overrides(tiny_synth, work_dir, "train.max_epochs=2"))
    metrics = train(cfg2, resume="auto", device="cpu")
    assert_metrics(metrics)
    assert (work_dir / "epoch_2.pth").is_file()
    assert (work_dir / "last_checkpoint").read_text().strip() == "epoch_2.pth"
    starts = [r for r in read_log(work_dir) if r["mode"] == "start"]
    assert [(r["epoch"], r["iter"]) for r in starts] == [(0, 0), (1, 2)]
    ends = [r for r in read_log(work_dir) if r["mode"] == "end"]
    assert [(r["epoch"], r["iter"]) for r in ends] == [(1, 2), (2, 4)]


def test_fcos_quick_train(tiny_synth, tmp_path):
    path = CONFIGS / "fcos_r18_fpn_synth.yaml"
    if not path.is_file():
        pytest.skip(f"{path.name} is not there yet")
    cfg = load_config(path, tiny_overrides(tiny_synth, tmp_path, "train.max_epochs=1", "train.max_iters=1"))
    assert cfg.model.bbox_head.type == "fcos"
    metrics = train(cfg, device="cpu")
    assert_metrics(metrics)
    assert (tmp_path / "iter_1.pth").is_file()
    assert (tmp_path / "last_checkpoint").read_text().strip() == "iter_1.pth"
    assert (tmp_path / "loss_curve.png").is_file()


def test_resume_from_iter_checkpoint_continues_mid_epoch_exactly(tiny_synth, tmp_path):
    """Killed in epoch 1 after ``iter_2.pth`` (batch 2 of 4), resumed: the same weights as a run
    never stopped, because the resumed epoch starts at its third batch with the same data."""
    import torch
    from stop_hook import Killed

    sets = ["train.max_epochs=2", "train.batch_size=4", "train.checkpoint_iter_interval=2", "train.eval_interval=0",
            "train.keep_last=0"]
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    train(load_config(CONFIGS / "retinanet_r18_fpn_synth.yaml", tiny_overrides(tiny_synth, ref_dir, *sets)),
          device="cpu")
    assert sorted(p.name for p in ref_dir.glob("*.pth")) == ["epoch_1.pth", "epoch_2.pth", "iter_2.pth",
                                                              "iter_6.pth"]
    killed = load_config(CONFIGS / "retinanet_r18_fpn_synth.yaml", tiny_overrides(
        tiny_synth, run_dir, *sets, "train.custom_hooks=[{type: 'stop_hook:StopBefore', args: {iteration: 3}}]"))
    with pytest.raises(Killed):
        train(killed, device="cpu")
    assert (run_dir / "last_checkpoint").read_text().strip() == "iter_2.pth"
    train(load_config(CONFIGS / "retinanet_r18_fpn_synth.yaml", tiny_overrides(tiny_synth, run_dir, *sets)),
          resume="auto", device="cpu")
    starts = [(r["epoch"], r["iter"]) for r in read_log(run_dir) if r["mode"] == "start"]
    assert starts == [(0, 0), (0, 2)]
    ref = torch.load(ref_dir / "epoch_2.pth", weights_only=True)["model"]
    got = torch.load(run_dir / "epoch_2.pth", weights_only=True)["model"]
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_keep_last_prunes_iter_and_epoch_checkpoints_together(tiny_synth, tmp_path):
    sets = ["train.max_epochs=2", "train.batch_size=4", "train.checkpoint_iter_interval=1", "train.eval_interval=0",
            "train.keep_last=2"]
    train(load_config(CONFIGS / "retinanet_r18_fpn_synth.yaml", tiny_overrides(tiny_synth, tmp_path, *sets)),
          device="cpu")
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["epoch_2.pth", "iter_7.pth"]
