"""Mixed-precision training through dettool's own trainer: one FP16 step, then a short run whose loss falls.

Part ``amp`` of tests/gpu/check_gpu.py. Each row is ``dettool.trainer.train.train`` of
configs/retinanet_r18_fpn_synth.yaml with ``train.amp=fp16`` on a small synthetic set (dettool's
generator, ``SYNTH`` images at ``SCALE``, random init), so the checked path is the one a user
runs: ``MixedPrecisionHook`` (autocast float16 and a dynamic ``GradScaler`` on CUDA; bfloat16 and
no scaler on the CPU, where ``fp16`` runs as ``bf16``), ``OptimizerHook``'s scaled backward and
step. ``AmpRecordHook`` (a custom hook of the run) records, per iteration, the total loss, the
scaler's scale and the dtype of the first convolution's output (autocast really at work), and
at the end how far the parameters moved.

- ``step``: one iteration; the loss is finite, the first conv computed in the autocast dtype,
  the scaler (CUDA) enabled and the step not skipped (scale 2**16, its start), and the
  parameters moved.
- ``run``: ``RUN_ITERS`` iterations (the config's AdamW 0.002, its warm-up shortened to
  ``RUN_WARMUP`` iterations so that the lr is the config's for most of the run); every loss is
  finite, the GradScaler skipped at most ``MAX_SKIPPED`` steps, and the mean loss of the last
  ``WINDOW`` iterations is at most ``MAX_LOSS_RATIO`` times that of the first ``WINDOW``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from dettool.trainer.hooks import Hook

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "retinanet_r18_fpn_synth.yaml"
SYNTH = 16  # training images (and 4 val images, unused: no evaluation)
SCALE = "160x128"
BATCH = 4
RUN_ITERS = 30
RUN_WARMUP = 5
WINDOW = 5
MAX_LOSS_RATIO = 0.85
MAX_SKIPPED = 3
START_SCALE = 2.0**16  # torch.amp.GradScaler's init_scale


class AmpRecordHook(Hook):
    """Writes ``out`` (JSON): per iteration the total loss, the scaler's scale (None when disabled)
    and the first conv's output dtype; the autocast dtype; the largest parameter change of the run.

    Args:
        out: the JSON file to write at ``after_run``.
    """

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.losses: list[float] = []
        self.scales: list[float | None] = []
        self.conv_dtypes: list[str] = []
        self.start: dict[str, torch.Tensor] = {}

    def before_run(self, runner) -> None:
        self.start = {k: p.detach().clone() for k, p in runner.model.named_parameters()}
        conv = next(m for m in runner.model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda module, inputs, output: self.conv_dtypes.append(str(output.dtype)))

    def after_train_iter(self, runner) -> None:
        total = sum(float(v.detach()) for k, v in runner.outputs.items() if k.startswith("loss_"))
        self.losses.append(total)
        self.scales.append(float(runner.scaler.get_scale()) if runner.scaler.is_enabled() else None)

    def after_run(self, runner) -> None:
        moved = max(float((p.detach() - self.start[k]).abs().max()) for k, p in runner.model.named_parameters())
        self.out.write_text(json.dumps({
            "losses": self.losses, "scales": self.scales, "conv_dtypes": self.conv_dtypes, "max_param_change": moved,
            "autocast": str(runner.autocast_dtype).removeprefix("torch.")}))


def amp_overrides(root: Path, work_dir: Path, record: Path, iters: int, warmup: int) -> list[str]:
    """``--set`` overrides: the synthetic set under ``root``, FP16 AMP, ``iters`` iterations, the record hook."""
    return [f"data.train.ann_file={root / 'annotations/train.json'}", f"data.train.img_dir={root / 'train'}",
            f"data.val.ann_file={root / 'annotations/val.json'}", f"data.val.img_dir={root / 'val'}",
            "data.synth=null", "data.num_workers=0", f"data.train_scale={SCALE}", f"data.test_scale={SCALE}",
            f"train.batch_size={BATCH}", f"train.max_iters={iters}", f"train.lr.warmup_iters={warmup}",
            "train.amp=fp16", "train.eval_interval=0", "train.log_interval=10", "train.channels_last=false",
            f"work_dir={work_dir}",
            f"train.custom_hooks=[{{type: 'amp_checks:AmpRecordHook', args: {{out: '{record}'}}}}]"]


def amp_train(device: torch.device, root: Path, name: str, iters: int, warmup: int) -> dict:
    """Train ``iters`` iterations with ``train.amp=fp16`` on ``device``; returns the record."""
    from dettool.config import load_config
    from dettool.data.synth import generate
    from dettool.trainer.train import train

    if not (root / "annotations" / "train.json").is_file():
        generate(root, num_train=SYNTH, num_val=4, seed=0)
    work, record = root / f"work_{name}", root / f"{name}.json"
    torch.manual_seed(0)
    train(load_config(CONFIG, amp_overrides(root, work, record, iters, warmup)), device=device.type)
    return json.loads(record.read_text())


def expected_autocast(device: torch.device) -> str:
    return "float16" if device.type == "cuda" else "bfloat16"


def check_step(record: dict, device: torch.device) -> tuple[str, dict]:
    """One FP16 step: finite loss, the conv in the autocast dtype, scaler at its start, weights moved."""
    loss, dtype = record["losses"][0], expected_autocast(device)
    detail = (f"loss {loss:.4g}, autocast {record['autocast']}, first conv {record['conv_dtypes'][0]}, "
              f"scale {record['scales'][0]}, max |param change| {record['max_param_change']:.3g}")
    assert math.isfinite(loss), f"non-finite loss: {detail}"
    assert record["autocast"] == dtype and record["conv_dtypes"][0] == f"torch.{dtype}", f"not {dtype}: {detail}"
    if device.type == "cuda":
        assert record["scales"][0] == START_SCALE, f"the GradScaler skipped the step or is off: {detail}"
    assert record["max_param_change"] > 0, f"the step changed no parameter: {detail}"
    return detail, record


def skipped_steps(scales: list[float | None]) -> int:
    """Steps the dynamic GradScaler skipped (each halves the scale; it grows only every 2000 steps)."""
    if not scales or scales[-1] is None:
        return 0
    return round(math.log2(START_SCALE / scales[-1]))


def check_run(record: dict, device: torch.device) -> tuple[str, dict]:
    """A short FP16 run: finite losses, few skipped steps, the loss falls."""
    losses = record["losses"]
    first, last = sum(losses[:WINDOW]) / WINDOW, sum(losses[-WINDOW:]) / WINDOW
    skipped = skipped_steps(record["scales"])
    detail = (f"{len(losses)} iterations, autocast {record['autocast']}: mean loss of the first {WINDOW} "
              f"{first:.4g} -> last {WINDOW} {last:.4g} (ratio {last / first:.3f}); GradScaler skipped {skipped}")
    values = {**record, "first_mean": first, "last_mean": last, "ratio": last / first, "skipped": skipped}
    assert len(losses) >= 2 * WINDOW, f"too few iterations: {detail}"
    assert all(math.isfinite(x) for x in losses), f"non-finite loss: {detail}"
    assert record["autocast"] == expected_autocast(device), f"autocast {record['autocast']}: {detail}"
    assert skipped <= MAX_SKIPPED, f"the GradScaler skipped more than {MAX_SKIPPED} steps: {detail}"
    assert last <= MAX_LOSS_RATIO * first, f"the loss did not fall below {MAX_LOSS_RATIO} x its start: {detail}"
    return detail, values


def amp_checks(checker, device: torch.device, root: Path, run_iters: int = RUN_ITERS) -> None:
    """Rows ``retinanet_r18_fpn amp fp16 step`` and ``... run``."""
    tag = f"retinanet_r18_fpn amp fp16 ({expected_autocast(device)} autocast)"
    checker.run(f"{tag} step", lambda: check_step(amp_train(device, root, "step", 1, RUN_WARMUP), device))
    checker.run(f"{tag} {run_iters}-iteration run, loss falls",
                lambda: check_run(amp_train(device, root, "run", run_iters, RUN_WARMUP), device))
