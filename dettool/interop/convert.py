"""``dettool convert mmdet`` / ``torchvision``: a detector trained elsewhere written as a dettool config +
checkpoint."""
from __future__ import annotations

import datetime
from pathlib import Path
from typing import Callable

import yaml

from dettool.errors import ConfigError
from dettool.interop.checkpoint import read_foreign_checkpoint
from dettool.interop.mmdet_config import read_mmdet_config
from dettool.interop.mmdet_convert import convert_state_dict, translate_config
from dettool.io import atomic_save, atomic_write_bytes


def _mmengine_config(path: Path) -> dict:
    """The config as mmengine reads it: by executing it (``--trust-config`` only)."""
    try:
        from mmengine.config import Config
    except ImportError:
        raise ConfigError("--trust-config needs mmengine (pip install mmengine)") from None
    try:
        return Config.fromfile(str(path)).to_dict()
    except Exception as exc:  # noqa: BLE001 (whatever the executed config raises)
        raise ConfigError(f"{path}: mmengine could not read it ({type(exc).__name__}: {exc})") from None


def _class_names(meta: dict) -> list[str] | None:
    names = (meta.get("dataset_meta") or {}).get("classes") or meta.get("CLASSES")
    return [str(n) for n in names] if isinstance(names, (list, tuple)) else None


def _write(config: dict, header: list[str], out: Path, name: str, state_of: Callable[[dict], dict],
           meta: dict, log: Callable[[str], None], note: str = "") -> tuple[Path, Path]:
    """Write ``OUT/<name>.yaml`` (validated by dettool's loader) and ``OUT/<name>.pth`` holding
    ``state_of(the built model's state dict)``, checked by loading it into the model."""
    from dettool.config import load_config
    from dettool.trainer import builder
    from dettool.trainer.checkpoint import load_model_weights

    yaml_path, ckpt_path = out / f"{name}.yaml", out / f"{name}.pth"
    config["work_dir"] = str(out / "work_dirs" / name)
    text = "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=110)
    atomic_write_bytes(text.encode(), yaml_path)
    model = builder.build_model(load_config(yaml_path))  # the translation passes dettool's own validation
    state = state_of(model.state_dict())
    load_model_weights(model, {"model": state}, ckpt_path)
    atomic_save({"model": state, "meta": meta}, ckpt_path)
    log(f"dettool: wrote {yaml_path} and {ckpt_path} ({len(state)} tensors{note})")
    return yaml_path, ckpt_path


def convert_mmdet(config: str | Path, checkpoint: str | Path, out: str | Path, trust_config: bool = False,
                  log: Callable[[str], None] = print) -> tuple[Path, Path]:
    """Write ``OUT/<name>.yaml`` and ``OUT/<name>.pth``; returns their paths."""
    config, out = Path(config), Path(out)
    if not config.is_file():
        raise ConfigError(f"{config}: config not found")
    raw = _mmengine_config(config) if trust_config else read_mmdet_config(config)
    t = translate_config(raw, str(config))
    header = [f"# Converted by `dettool convert mmdet` from {config} and {Path(checkpoint).name}",
              f"# on {datetime.date.today().isoformat()}.",
              "# Training settings not carried over (no dettool equivalent): "
              + (", ".join(t.dropped) if t.dropped else "none")]
    foreign = read_foreign_checkpoint(checkpoint)
    meta = {"converted_from": "mmdet", "source_config": str(config), "source_checkpoint": str(checkpoint)}
    names = _class_names(foreign.meta)
    if names is not None:
        meta["class_names"] = names
    skipped = sorted(set(foreign.skipped))
    paths = _write(t.config, header, out, config.stem,
                   lambda expected: convert_state_dict(foreign.state_dict, t, expected, str(checkpoint)), meta, log,
                   note=f"; skipped the checkpoint's training state: {', '.join(skipped)}" if skipped else "")
    if t.dropped:
        log(f"dettool: training settings not carried over: {', '.join(t.dropped)}")
    return paths


def convert_torchvision(name: str, weights: str | Path, out: str | Path,
                        ann_file: str = "data/coco/annotations/instances_val2017.json",
                        img_dir: str = "data/coco/val2017", log: Callable[[str], None] = print) -> tuple[Path, Path]:
    """torchvision's detection model ``name`` with ``weights`` (its state dict, as published or
    saved by ``torch.save(model.state_dict())``) as ``OUT/<name>.yaml`` and ``OUT/<name>.pth``."""
    import torchvision

    from dettool.errors import CheckpointError
    from dettool.interop.torchvision_convert import (
        build_config,
        coco_category_names,
        convert_torchvision_state_dict,
        model_spec,
    )

    spec = model_spec(name)
    foreign = read_foreign_checkpoint(weights)
    # torchvision's own model reads the file first: it upgrades the key names of its older
    # published weights (rpn.head.conv.weight, mask_fcn1, ...) and refuses another architecture
    reference = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None)
    # (built without weights its norms are BatchNorm2d; published v1 weights come from
    # FrozenBatchNorm2d, which has no num_batches_tracked)
    try:
        missing, unexpected = reference.load_state_dict(foreign.state_dict, strict=False)
    except RuntimeError as exc:  # a shape mismatch
        first = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc))
        raise CheckpointError(f"{weights}: not the weights of torchvision's {name} ({first})") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        what = f"no {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise CheckpointError(f"{weights}: not the weights of torchvision's {name} ({what}; "
                              f"{len(missing)} missing, {len(unexpected)} unexpected)")
    state = {k: v for k, v in reference.state_dict().items()
             if k in foreign.state_dict or not k.endswith("num_batches_tracked")}
    names = coco_category_names()
    meta = {"converted_from": "torchvision", "source_model": name, "source_checkpoint": str(weights),
            "class_names": [names[i] for i in spec.category_ids], "cat_ids": spec.category_ids}
    header = [f"# Converted by `dettool convert torchvision` from torchvision's {name} and {Path(weights).name}",
              f"# on {datetime.date.today().isoformat()}, with torchvision {torchvision.__version__}'s test-time "
              "settings. Training settings are dettool's defaults."]
    return _write(build_config(name, ann_file, img_dir), header, Path(out), name,
                  lambda expected: convert_torchvision_state_dict(state, name, expected, str(weights)), meta, log)
