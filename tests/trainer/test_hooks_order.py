"""The Runner calls exactly the pipeline's stages, in order; config-named hooks; NaN losses stop it."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from torch import nn

from dettool.config import load_config
from dettool.config.schema import HookConfig
from dettool.data.loader import EpochSampler
from dettool.errors import ConfigError, TrainingDiverged
from dettool.trainer.builder import build_hooks, import_hook
from dettool.trainer.hooks import (
    STAGES,
    CheckpointHook,
    Hook,
    LoggerHook,
    LrScheduleHook,
    MixedPrecisionHook,
    OptimizerHook,
)
from dettool.trainer.runner import LossWrapper, Runner

HERE = Path(__file__).resolve().parent
RETINA = HERE.parents[1] / "configs" / "retinanet_r18_fpn_synth.yaml"


class TinyDetector(nn.Module):
    """One weight; ``loss`` is a smooth function of it, or NaN / inf from call ``bad_from`` on."""

    def __init__(self, bad_value: float | None = None, bad_from: int = 0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.bad_value, self.bad_from, self.calls = bad_value, bad_from, 0

    def loss(self, images: torch.Tensor, targets: list[dict], metas: list[dict]) -> dict[str, torch.Tensor]:
        self.calls += 1
        loss_y = (self.weight * images.mean() - 0.5).pow(2).sum()
        if self.bad_value is not None and self.calls > self.bad_from:
            return {"loss_x": self.weight.sum() * self.bad_value, "loss_y": loss_y}
        return {"loss_x": (self.weight - 2).pow(2).sum(), "loss_y": loss_y}


class ListLoader:
    """``num_batches`` batches of ``(images, targets, metas)``, with the sampler the Runner expects."""

    def __init__(self, num_batches: int, batch_size: int = 2) -> None:
        self.num_batches, self.batch_size = num_batches, batch_size
        self.sampler = EpochSampler(num_batches, shuffle=False)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        for i in range(self.num_batches):
            targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}] * self.batch_size
            yield torch.full((self.batch_size, 3, 8, 8), 0.1 * (i + 1)), targets, [{}] * self.batch_size


def make_runner(hooks: list[Hook], work_dir: Path, model: TinyDetector | None = None, max_epochs: int = 2,
                num_batches: int = 2, max_iters: int | None = None, evaluate=lambda m: {"bbox_AP": 0.5},
                eval_interval: int = 1) -> Runner:
    model = model or TinyDetector()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return Runner(model, LossWrapper(model), optimizer, ListLoader(num_batches), hooks, work_dir, max_epochs,
                  max_iters=max_iters, evaluate=evaluate, eval_interval=eval_interval)


@pytest.fixture
def recording_hook(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    return importlib.import_module("recording_hook")


def epoch_stages(iters: int, val: bool) -> list[str]:
    return (["before_train_epoch"] + ["before_train_iter", "after_train_iter"] * iters + ["after_train_epoch"]
            + (["before_val_epoch", "after_val_epoch"] if val else []))


# ----------------------------------------------------------------------------------- stage order


def test_stage_sequence_two_epochs_two_iters_with_validation(tmp_path, recording_hook):
    rec = recording_hook.RecordingHook()
    make_runner([rec], tmp_path).train()
    assert rec.stages == ["before_run"] + epoch_stages(2, True) * 2 + ["after_run"]
    assert set(rec.stages) == set(STAGES)
    # (stage, completed epochs, completed iterations) as each hook sees them
    assert rec.calls == [
        ("before_run", 0, 0),
        ("before_train_epoch", 0, 0),
        ("before_train_iter", 0, 0), ("after_train_iter", 0, 0),
        ("before_train_iter", 0, 1), ("after_train_iter", 0, 1),
        ("after_train_epoch", 0, 2), ("before_val_epoch", 0, 2), ("after_val_epoch", 0, 2),
        ("before_train_epoch", 1, 2),
        ("before_train_iter", 1, 2), ("after_train_iter", 1, 2),
        ("before_train_iter", 1, 3), ("after_train_iter", 1, 3),
        ("after_train_epoch", 1, 4), ("before_val_epoch", 1, 4), ("after_val_epoch", 1, 4),
        ("after_run", 2, 4),
    ]


def test_eval_interval_validates_on_interval_and_last_epoch(tmp_path, recording_hook):
    rec = recording_hook.RecordingHook()
    make_runner([rec], tmp_path, max_epochs=3, num_batches=1, eval_interval=2).train()
    expected = epoch_stages(1, False) + epoch_stages(1, True) + epoch_stages(1, True)
    assert rec.stages == ["before_run"] + expected + ["after_run"]


def test_no_evaluator_means_no_val_stages(tmp_path, recording_hook):
    rec = recording_hook.RecordingHook()
    make_runner([rec], tmp_path, evaluate=None).train()
    assert rec.stages == ["before_run"] + epoch_stages(2, False) * 2 + ["after_run"]


def test_max_iters_stops_mid_epoch_and_validates(tmp_path, recording_hook):
    rec = recording_hook.RecordingHook()
    runner = make_runner([rec], tmp_path, max_epochs=5, num_batches=2, max_iters=5, eval_interval=2)
    runner.train()
    # epoch 3 is cut after one iteration; being the last, it is validated off the interval
    expected = epoch_stages(2, False) + epoch_stages(2, True) + epoch_stages(1, True)
    assert rec.stages == ["before_run"] + expected + ["after_run"]
    assert (runner.epoch, runner.iter, runner.epoch_completed) == (2, 5, False)


def test_hooks_run_in_list_order(tmp_path):
    seen: list[tuple[str, str]] = []

    class Named(Hook):
        def __init__(self, name: str) -> None:
            self.name = name

        def before_train_iter(self, runner) -> None:
            seen.append((self.name, "before_train_iter"))

        def after_val_epoch(self, runner) -> None:
            seen.append((self.name, "after_val_epoch"))

    make_runner([Named("b"), Named("a")], tmp_path, max_epochs=1, num_batches=1).train()
    assert seen == [("b", "before_train_iter"), ("a", "before_train_iter"),
                    ("b", "after_val_epoch"), ("a", "after_val_epoch")]


def test_val_metrics_visible_to_after_val_epoch(tmp_path):
    got = []

    class Peek(Hook):
        def before_val_epoch(self, runner) -> None:
            got.append(dict(runner.val_metrics))

        def after_val_epoch(self, runner) -> None:
            got.append(dict(runner.val_metrics))

    make_runner([Peek()], tmp_path, max_epochs=1, evaluate=lambda m: {"bbox_AP": 0.25}).train()
    assert got == [{}, {"bbox_AP": 0.25}]


def test_optimizer_hook_trains_the_tiny_model(tmp_path):
    model = TinyDetector()
    make_runner([OptimizerHook()], tmp_path, model=model, max_epochs=3).train()
    assert model.weight.item() != 1.0


# ----------------------------------------------------------------------------------- hooks from a config


def test_custom_hook_named_in_config_is_built_and_called(tmp_path, recording_hook):
    cfg_file = tmp_path / "hooked.yaml"
    cfg_file.write_text(f"""\
base: {RETINA}
train:
  custom_hooks:
    - {{type: 'recording_hook:RecordingHook', args: {{tag: from-config}}}}
    - {{type: mixed_precision, args: {{mode: bf16}}}}
""", encoding="utf-8")
    cfg = load_config(cfg_file, ["train.lr.warmup_iters=1", "train.log_interval=1"])
    assert cfg.train.custom_hooks[0] == HookConfig("recording_hook:RecordingHook", {"tag": "from-config"})
    hooks = build_hooks(cfg.train)
    assert [type(h) for h in hooks] == [LrScheduleHook, OptimizerHook, CheckpointHook, LoggerHook,
                                       recording_hook.RecordingHook, MixedPrecisionHook]
    rec = hooks[4]
    assert rec.tag == "from-config"
    assert hooks[5].mode == "bf16"  # a built-in hook the config does not run already may be named

    (tmp_path / "work").mkdir()  # train() creates it; the bare Runner does not
    make_runner(hooks[:5], tmp_path / "work", max_epochs=1).train()
    assert rec.stages == ["before_run"] + epoch_stages(2, True) + ["after_run"]
    assert (tmp_path / "work" / "epoch_1.pth").is_file()
    assert (tmp_path / "work" / "last_checkpoint").read_text().strip() == "epoch_1.pth"
    assert (tmp_path / "work" / "log.jsonl").is_file()


def test_import_hook_resolves_module_path(recording_hook):
    assert import_hook(HookConfig("recording_hook:RecordingHook"), 0) is recording_hook.RecordingHook


def test_amp_adds_mixed_precision_hook_first(tmp_path):
    hooks = build_hooks(load_config(RETINA, ["train.amp=bf16"]).train)
    assert isinstance(hooks[0], MixedPrecisionHook) and hooks[0].mode == "bf16"


@pytest.mark.parametrize("hook_type, words", [
    ("NoColonHook", "neither a built-in hook"),
    ("no_such_module_for_dettool_tests:Hook", "cannot import 'no_such_module_for_dettool_tests'"),
    ("recording_hook:NoSuchClass", "has no 'NoSuchClass'"),
])
def test_bad_custom_hook_type_is_a_config_error(recording_hook, hook_type, words):
    cfg = load_config(RETINA, [f"train.custom_hooks=[{{type: '{hook_type}'}}]"])
    with pytest.raises(ConfigError, match="train.custom_hooks\\[0\\].type") as info:
        build_hooks(cfg.train)
    assert words in str(info.value)


def test_bad_custom_hook_args_are_a_config_error(recording_hook):
    cfg = load_config(RETINA, ["train.custom_hooks=[{type: 'recording_hook:RecordingHook', args: {colour: red}}]"])
    with pytest.raises(ConfigError, match=r"train.custom_hooks\[0\].args") as info:
        build_hooks(cfg.train)
    assert "colour" in str(info.value)


def test_custom_hook_entry_with_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match=r"train.custom_hooks\[0\].arg.*did you mean 'args'"):
        load_config(RETINA, ["train.custom_hooks=[{type: checkpoint, arg: {}}]"])


# ----------------------------------------------------------------------------------- diverging loss


@pytest.mark.parametrize("bad, shown", [(float("nan"), "loss_x=nan"), (float("inf"), "loss_x=inf")])
def test_non_finite_loss_raises_training_diverged(tmp_path, recording_hook, bad, shown):
    model = TinyDetector(bad_value=bad)
    rec = recording_hook.RecordingHook()
    runner = make_runner([OptimizerHook(), rec], tmp_path, model=model)
    with pytest.raises(TrainingDiverged) as info:
        runner.train()
    msg = str(info.value)
    assert shown in msg and "loss_y=" in msg
    assert "epoch 1, iteration 1" in msg and "none written yet" in msg
    assert model.weight.item() == 1.0  # no step was taken with the bad loss
    assert rec.stages == ["before_run", "before_train_epoch", "before_train_iter"]


def test_diverged_message_names_last_good_checkpoint(tmp_path):
    model = TinyDetector(bad_value=float("nan"), bad_from=3)  # epoch 2, iteration 2 goes bad
    runner = make_runner([OptimizerHook(), CheckpointHook(interval=1)], tmp_path, model=model, evaluate=None)
    with pytest.raises(TrainingDiverged) as info:
        runner.train()
    msg = str(info.value)
    assert "epoch 2, iteration 4" in msg
    assert str(tmp_path / "epoch_1.pth") in msg
    assert (tmp_path / "epoch_1.pth").is_file() and not (tmp_path / "epoch_2.pth").exists()
