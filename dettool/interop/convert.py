"""``dettool convert mmdet``: an MMDetection config + checkpoint written as a dettool config + checkpoint."""
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


def convert_mmdet(config: str | Path, checkpoint: str | Path, out: str | Path, trust_config: bool = False,
                  log: Callable[[str], None] = print) -> tuple[Path, Path]:
    """Write ``OUT/<name>.yaml`` and ``OUT/<name>.pth``; returns their paths."""
    from dettool.config import load_config
    from dettool.trainer import builder
    from dettool.trainer.checkpoint import load_model_weights

    config, out = Path(config), Path(out)
    if not config.is_file():
        raise ConfigError(f"{config}: config not found")
    raw = _mmengine_config(config) if trust_config else read_mmdet_config(config)
    t = translate_config(raw, str(config))
    name = config.stem
    yaml_path, ckpt_path = out / f"{name}.yaml", out / f"{name}.pth"
    t.config["work_dir"] = str(out / "work_dirs" / name)
    header = [f"# Converted by `dettool convert mmdet` from {config} and {Path(checkpoint).name}",
              f"# on {datetime.date.today().isoformat()}.",
              "# Training settings not carried over (no dettool equivalent): "
              + (", ".join(t.dropped) if t.dropped else "none")]
    text = "\n".join(header) + "\n" + yaml.safe_dump(t.config, sort_keys=False, default_flow_style=None, width=110)
    atomic_write_bytes(text.encode(), yaml_path)
    cfg = load_config(yaml_path)  # the translation passes dettool's own validation
    model = builder.build_model(cfg)
    foreign = read_foreign_checkpoint(checkpoint)
    state = convert_state_dict(foreign.state_dict, t, model.state_dict(), str(checkpoint))
    load_model_weights(model, {"model": state}, ckpt_path)
    meta = {"converted_from": "mmdet", "source_config": str(config), "source_checkpoint": str(checkpoint),
            "classes": _class_names(foreign.meta)}
    atomic_save({"model": state, "meta": meta}, ckpt_path)
    log(f"dettool: wrote {yaml_path} and {ckpt_path} ({len(state)} tensors"
        + (f"; skipped the checkpoint's training state: {', '.join(sorted(set(foreign.skipped)))}"
           if foreign.skipped else "") + ")")
    if t.dropped:
        log(f"dettool: training settings not carried over: {', '.join(t.dropped)}")
    return yaml_path, ckpt_path
