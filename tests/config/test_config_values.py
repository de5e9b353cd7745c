"""Config correctness: partial overrides keep each field's own defaults, values are range-checked
where they are read, the work dir and the hook list are checked before training starts."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from detector_helpers import run_cli

from dettool.config import load_config
from dettool.config import schema as S
from dettool.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"

DATA = {"train": {"ann_file": "a/train.json", "img_dir": "a/train"},
        "val": {"ann_file": "a/val.json", "img_dir": "a/val"}}
MODELS = {
    "single_stage": {"type": "single_stage", "num_classes": 3},
    "two_stage": {"type": "two_stage", "num_classes": 3},
    "cascade": {"type": "two_stage", "num_classes": 3, "roi_head": {"type": "cascade"}},
    "double_head": {"type": "two_stage", "num_classes": 3, "roi_head": {"type": "double_head"}},
    "rpn": {"type": "rpn", "num_classes": 1},
    "fcos": {"type": "single_stage", "num_classes": 3, "bbox_head": {"type": "fcos"}},
    "fsaf": {"type": "single_stage", "num_classes": 3, "bbox_head": {"type": "fsaf"}},
}


def write_config(tmp_path: Path, model: dict, **sections) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"model": model, "data": DATA, **sections}), encoding="utf-8")
    return path


def nested_sections(obj, prefix: str):
    """``(dotted key, section)`` of every dataclass reachable from ``obj`` through fields (not tuples)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            key = f"{prefix}.{f.name}" if prefix else f.name
            yield key, value
            yield from nested_sections(value, key)


def first_scalar(section) -> tuple[str, object] | None:
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if f.name != "type" and isinstance(value, (bool, int, float, str)):
            return f.name, value
    return None


def resolve(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


# ----------------------------------------------------------------------------------- partial overrides


@pytest.mark.parametrize("model", list(MODELS))
def test_set_one_key_of_any_nested_section_keeps_the_fields_defaults(tmp_path, model):
    """``--set section.key=<its value>`` must leave the section exactly as without the override:
    the section is updated on top of the field's default, not rebuilt from its class's."""
    path = write_config(tmp_path, MODELS[model])
    base = load_config(path)
    checked = 0
    for key, section in nested_sections(base, ""):
        scalar = first_scalar(section)
        if scalar is None:
            continue
        name, value = scalar
        got = resolve(load_config(path, [f"{key}.{name}={yaml.safe_dump(value).splitlines()[0]}"]), key)
        assert got == section, key
        checked += 1
    assert checked >= 8


@pytest.mark.parametrize("model", list(MODELS))
def test_yaml_partial_section_keeps_the_fields_defaults(tmp_path, model):
    base = load_config(write_config(tmp_path, MODELS[model]))
    for key, section in nested_sections(base, ""):
        scalar = first_scalar(section)
        if scalar is None or not key.startswith("model."):
            continue
        name, value = scalar
        tree = dict(MODELS[model])
        node = tree
        for part in key.split(".")[1:]:
            node[part] = dict(node.get(part, {}))
            node = node[part]
        node[name] = value
        got = resolve(load_config(write_config(tmp_path, tree)), key)
        assert got == section, key


def test_roi_assigner_override_keeps_its_neg_iou_and_min_pos_iou(tmp_path):
    """The review's example: the RoI assigner's defaults are 0.5 / 0.5 / 0.5, not the class's 0.4 / 0.0."""
    cfg = load_config(write_config(tmp_path, MODELS["two_stage"]), ["model.roi_head.assigner.pos_iou_thr=0.6"])
    a = cfg.model.roi_head.assigner
    assert (a.pos_iou_thr, a.neg_iou_thr, a.min_pos_iou) == (0.6, 0.5, 0.5)
    rpn = load_config(write_config(tmp_path, MODELS["two_stage"]), ["model.rpn_head.assigner.pos_iou_thr=0.8"])
    a = rpn.model.rpn_head.assigner
    assert (a.pos_iou_thr, a.neg_iou_thr, a.min_pos_iou) == (0.8, 0.3, 0.3)


def test_cascade_stage_list_of_the_same_length_updates_stage_by_stage(tmp_path):
    model = dict(MODELS["cascade"], roi_head={"type": "cascade", "stages": [{"loss_weight": 2.0}, {}, {}]})
    stages = load_config(write_config(tmp_path, model)).model.roi_head.stages
    default = S.CascadeRoIHeadConfig().stages
    assert stages[0].loss_weight == 2.0 and stages[0].assigner == default[0].assigner
    assert stages[1:] == default[1:]
    assert stages[2].bbox_head.target_stds == (0.033, 0.033, 0.067, 0.067)


def test_changing_a_sections_type_starts_from_the_new_class(tmp_path):
    cfg = load_config(write_config(tmp_path, MODELS["two_stage"]),
                      ["model.roi_head.sampler.type=ohem", "model.roi_head.sampler.num=64"])
    assert cfg.model.roi_head.sampler == S.OHEMSamplerConfig(num=64)


def test_shipped_cascade_configs_add_gt_in_every_stage():
    for name in ("cascade_rcnn_r18_fpn_synth", "cascade_mask_rcnn_r18_fpn_synth", "cascade_rcnn_r50_fpn_1x_coco"):
        stages = load_config(CONFIGS / f"{name}.yaml").model.roi_head.stages
        assert [s.sampler.add_gt_as_proposals for s in stages] == [True, True, True], name


# ----------------------------------------------------------------------------------- value checks

BAD_VALUES = [
    ("train.batch_size=-2", "train.batch_size", "must be >= 1"),
    ("train.max_epochs=0", "train.max_epochs", "must be >= 1"),
    ("train.max_iters=0", "train.max_iters", "must be >= 1"),
    ("train.optimizer.lr=0", "train.optimizer.lr", "must be > 0"),
    ("train.optimizer.momentum=1.5", "train.optimizer.momentum", "<= 1"),
    ("train.optimizer.grad_clip=-1", "train.optimizer.grad_clip", "must be > 0"),
    ("train.lr.steps=[11,8]", "train.lr.steps", "increasing"),
    ("train.lr.warmup_ratio=0", "train.lr.warmup_ratio", "> 0"),
    ("train.log_interval=0", "train.log_interval", ">= 1"),
    ("train.eval_interval=-1", "train.eval_interval", ">= 0"),
    ("train.checkpoint_interval=0", "train.checkpoint_interval", ">= 1"),
    ("train.keep_last=-1", "train.keep_last", ">= 0"),
    ("data.size_divisor=0", "data.size_divisor", ">= 1"),
    ("data.flip_prob=2", "data.flip_prob", "<= 1"),
    ("data.num_workers=-1", "data.num_workers", ">= 0"),
    ("test.score_thr=1.5", "test.score_thr", "<= 1"),
    ("test.nms_iou_thr=-0.1", "test.nms_iou_thr", ">= 0"),
    ("test.max_per_img=0", "test.max_per_img", ">= 1"),
    ("model.bbox_head.anchor.strides=[8,-16,32,64,128]", "model.bbox_head.anchor.strides[1]", ">= 1"),
    ("model.bbox_head.anchor.ratios=[0.5,0,2]", "model.bbox_head.anchor.ratios[1]", "> 0"),
    ("model.bbox_head.assigner.neg_iou_thr=0.6", "model.bbox_head.assigner.neg_iou_thr", "above pos_iou_thr"),
    ("model.bbox_head.feat_channels=0", "model.bbox_head.feat_channels", ">= 1"),
    ("model.bbox_head.loss_cls.alpha=1.5", "model.bbox_head.loss_cls.alpha", "<= 1"),
    ("model.backbone.depth=19", "model.backbone.depth", "not one of"),
    ("model.backbone.frozen_stages=7", "model.backbone.frozen_stages", "<= 4"),
    ("model.backbone.out_indices=[3,1]", "model.backbone.out_indices", "increasing"),
    ("model.neck.out_channels=0", "model.neck.out_channels", ">= 1"),
    ("model.num_classes=0", "model.num_classes", ">= 1"),
    ("deploy.min_batch=4", "deploy.opt_batch", "min_batch <= opt_batch"),
]


@pytest.mark.parametrize("override,key,words", BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_out_of_range_value_is_one_error_naming_the_key(tmp_path, override, key, words):
    path = write_config(tmp_path, MODELS["single_stage"])
    with pytest.raises(ConfigError) as info:
        load_config(path, [override])
    message = str(info.value)
    assert f"{path}: {key}: " in message and words in message and "\n" not in message


def test_out_of_range_value_in_yaml_names_file_and_key(tmp_path):
    path = write_config(tmp_path, MODELS["two_stage"], train={"batch_size": -2})
    with pytest.raises(ConfigError, match=r"cfg\.yaml: train\.batch_size: must be >= 1, got -2"):
        load_config(path)


def test_cli_bad_batch_size_exits_1_with_one_line(tmp_path):
    path = write_config(tmp_path, MODELS["single_stage"])
    code, out, err = run_cli(["train", path, "--set", "train.batch_size=-2"])
    assert code == 1
    assert err.strip().splitlines() == [f"dettool: error: {path}: train.batch_size: must be >= 1, got -2"]


def test_every_shipped_config_passes_the_checks():
    paths = sorted(CONFIGS.glob("*.yaml"))
    assert len(paths) >= 22
    for path in paths:
        assert load_config(path).source == str(path)


# ----------------------------------------------------------------------------------- work dir and hooks


def test_work_dir_that_is_a_file_is_one_error(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    path = write_config(tmp_path, MODELS["single_stage"])
    code, _, err = run_cli(["train", path, "--work-dir", blocker])
    assert code == 1
    assert err.strip().splitlines() == [f"dettool: error: work_dir: {blocker} exists and is not a folder"]
    code, _, err = run_cli(["train", path, "--work-dir", blocker / "sub"])
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"dettool: error: work_dir: cannot write to {blocker / 'sub'}")


def test_work_dir_that_cannot_be_written_is_one_error(tmp_path, monkeypatch):
    from dettool.trainer.train import prepare_work_dir

    def refuse(self, data):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "write_bytes", refuse)
    with pytest.raises(ConfigError, match=r"work_dir: cannot write to .* \(Permission denied\)"):
        prepare_work_dir(tmp_path / "out")


def test_fresh_run_into_a_work_dir_with_checkpoints_is_refused(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for name in ("epoch_1.pth", "epoch_2.pth", "iter_300.pth", "iter_40.pth"):
        (work / name).write_bytes(b"earlier run")
    path = write_config(tmp_path, MODELS["single_stage"])
    code, _, err = run_cli(["train", path, "--work-dir", work])
    assert code == 1
    assert err.strip().splitlines() == [
        f"dettool: error: work_dir: {work} holds checkpoints of an earlier run (epoch_1.pth, epoch_2.pth, "
        "iter_300.pth, ...); continue it with --resume, or train into another --work-dir (a fresh run would "
        "overwrite them)"]
    assert sorted(p.read_bytes() for p in work.iterdir()) == [b"earlier run"] * 4


@pytest.mark.parametrize("name", ["optimizer", "checkpoint", "logger", "lr_schedule"])
def test_builtin_hook_named_again_is_refused(tmp_path, name):
    from dettool.trainer.builder import build_hooks

    cfg = load_config(write_config(tmp_path, MODELS["single_stage"], train={"custom_hooks": [{"type": name}]}))
    with pytest.raises(ConfigError, match=rf"train\.custom_hooks\[0\]\.type: '{name}' runs already"):
        build_hooks(cfg.train)


def test_mixed_precision_hook_only_refused_when_amp_is_set(tmp_path):
    from dettool.trainer.builder import build_hooks
    from dettool.trainer.hooks import MixedPrecisionHook

    hooks = [{"type": "mixed_precision", "args": {"mode": "bf16"}}]
    cfg = load_config(write_config(tmp_path, MODELS["single_stage"], train={"custom_hooks": hooks}))
    assert isinstance(build_hooks(cfg.train)[-1], MixedPrecisionHook)
    cfg = load_config(write_config(tmp_path, MODELS["single_stage"], train={"custom_hooks": hooks, "amp": "bf16"}))
    with pytest.raises(ConfigError, match="train.amp"):
        build_hooks(cfg.train)
