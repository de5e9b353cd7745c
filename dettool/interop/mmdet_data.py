"""MMDetection data settings (preprocessor, pipelines, datasets) and training schedule -> dettool's;
training settings dettool has no equivalent for are listed in ``Translation.dropped``."""
from __future__ import annotations

from dettool.interop.mmdet_optim_wrapper import HANDLED, optim_wrapper
from dettool.interop.mmdet_section import Section, Translation

# ---------------------------------------------------------------------------------------- data, train

def preprocessor(t: Translation, s: Section) -> None:
    """``model.data_preprocessor``: channel order, mean / std and padding into ``data``."""
    s.expect("type", ("DetDataPreprocessor",))
    s.expect("pad_mask", (True, False), False)
    s.expect("pad_value", (0,), 0)
    s.expect("pad_seg", (True, False), False)  # dettool's semantic loss pads each label map with 255
    s.expect("seg_pad_value", (255,), 255)
    s.expect("boxtype2tensor", (True,), True)
    d = t.config.setdefault("data", {})
    d["channel_order"] = "rgb" if s.get("bgr_to_rgb", False) else "bgr"  # MMDetection decodes BGR
    d["mean"], d["std"] = list(s.get("mean")), list(s.get("std"))
    d["size_divisor"] = s.get("pad_size_divisor", 1)
    if s.get("batch_augments", None):  # training-time batch transforms (LSJ's fixed-size padding)
        t.dropped.append(f"{s.where}.batch_augments ({', '.join(a.get('type', '?') for a in s.d['batch_augments'])})")
    s.done()


def _scale(t: Translation, s: Section) -> str:
    """A ``Resize``'s scale: keeping the ratio ``LONGxSHORT``; without (SSD) the exact ``WxH``,
    and ``data.keep_ratio`` false (train and test must agree)."""
    scale = s.get("scale")
    keep = s.expect("keep_ratio", (True, False), False)
    if not (isinstance(scale, (list, tuple)) and len(scale) == 2):
        raise t.fail(f"{s.where}.scale", f"{scale!r} is not one (width, height) scale")
    d = t.config.setdefault("data", {})
    if d.get("keep_ratio", True) != keep and ("train_scale" in d or "test_scale" in d):
        raise t.fail(f"{s.where}.keep_ratio", f"{keep} here, {not keep} in the other pipeline: dettool's train "
                                              "and test pipelines share data.keep_ratio")
    if keep:
        return f"{max(scale)}x{min(scale)}"
    d["keep_ratio"] = False
    return f"{scale[0]}x{scale[1]}"


def _ssd_transform(t: Translation, s: Section) -> dict:
    """SSD's augmentations as dettool's pipeline steps (same names and settings)."""
    step: dict = {"type": s.type}
    if s.type == "Expand":
        d = t.config.get("data", {})
        rgb = d.get("channel_order") == "rgb"
        if list(s.get("mean", (0, 0, 0))) != d.get("mean") or s.get("to_rgb", True) != rgb:
            raise t.fail(f"{s.where}.mean", "dettool's Expand fills with data.mean (the data_preprocessor's, in its "
                                            "channel order); this one differs")
        step.update(ratio_range=list(s.get("ratio_range", (1, 4))), prob=s.get("prob", 0.5))
        s.expect("seg_ignore_label", (None,), None)
    elif s.type == "MinIoURandomCrop":
        step.update(min_ious=list(s.get("min_ious", (0.1, 0.3, 0.5, 0.7, 0.9))),
                    min_crop_size=s.get("min_crop_size", 0.3), bbox_clip_border=s.get("bbox_clip_border", True))
    else:
        step.update(brightness_delta=s.get("brightness_delta", 32),
                    contrast_range=list(s.get("contrast_range", (0.5, 1.5))),
                    saturation_range=list(s.get("saturation_range", (0.5, 1.5))), hue_delta=s.get("hue_delta", 18))
    s.done()
    return step


_SSD_TRANSFORMS = ("Expand", "MinIoURandomCrop", "PhotoMetricDistortion")


_LOADING = ("LoadImageFromFile", "LoadAnnotations", "LoadProposals", "PackDetInputs")


def _flat(pipeline: list) -> list:
    """The steps of a pipeline with ``ProposalBroadcaster`` wrappers opened (they apply their
    transforms to the image and its proposals alike, as dettool's transforms do)."""
    out = []
    for step in pipeline:
        if isinstance(step, dict) and step.get("type") == "ProposalBroadcaster":
            out += _flat(step.get("transforms", []))
        else:
            out.append(step)
    return out


def _multi_scale(step: dict) -> str | None:
    """MMDetection's multi-scale resizes in the paper's notation: ``RandomResize`` between two
    scales (range mode), ``RandomChoiceResize`` over evenly spaced ones (value mode); None when
    the scales do not share their long side or are not evenly spaced, or the ratio is not kept."""
    scales = step.get("scale") if step.get("type") == "RandomResize" else step.get("scales")
    if (not step.get("keep_ratio") or not isinstance(scales, (list, tuple)) or len(scales) < 2
            or not all(isinstance(s, (list, tuple)) and len(s) == 2 for s in scales)):
        return None
    longs, shorts = {max(s) for s in scales}, sorted(min(s) for s in scales)
    if len(longs) != 1:
        return None
    if step["type"] == "RandomResize":
        return f"{longs.pop()}x[{shorts[0]}:{shorts[-1]}]" if len(scales) == 2 else None
    steps = {b - a for a, b in zip(shorts, shorts[1:])}
    return f"{longs.pop()}x[{shorts[0]}:{shorts[-1]}:{steps.pop()}]" if len(steps) == 1 else None


def _dataset(ds: dict) -> tuple[dict, int]:
    """The dataset inside MMDetection's ``RepeatDataset`` wrappers and how many times it repeats
    per epoch (dettool counts those passes as epochs)."""
    times = 1
    while isinstance(ds, dict) and ds.get("type") == "RepeatDataset":
        times *= int(ds.get("times", 1))
        ds = ds.get("dataset", {})
    return (ds if isinstance(ds, dict) else {}), times


def pipelines(t: Translation, cfg: dict) -> None:
    """Train / test pipelines and dataset paths into ``data``; unknown training transforms are listed as dropped."""
    d = t.config.setdefault("data", {})
    test = cfg.get("test_dataloader", {}).get("dataset", {}).get("pipeline") or cfg.get("test_pipeline") or []
    for i, step in enumerate(_flat(test)):
        s = Section(t, step, f"test_pipeline[{i}]")
        if s.type == "Resize":
            d["test_scale"] = _scale(t, s)
            s.done()
        elif s.type not in _LOADING:
            raise t.fail(f"{s.where}.type", f"test transform {s.type!r} is not implemented by dettool")
    train_ds, _ = _dataset(cfg.get("train_dataloader", {}).get("dataset", {}))
    steps: list[dict] = []
    for i, step in enumerate(_flat(train_ds.get("pipeline") or [])):
        s = Section(t, step, f"train_pipeline[{i}]")
        if s.type == "Resize":
            d["train_scale"] = _scale(t, s)
            steps.append({"type": "Resize"})
        elif s.type in ("RandomResize", "RandomChoiceResize") and _multi_scale(step):
            d["train_scale"] = _multi_scale(step)
            steps.append({"type": "Resize"})
        elif s.type == "RandomFlip":
            d["flip_prob"] = s.get("prob")
            steps.append({"type": "RandomFlip"})
        elif s.type in _SSD_TRANSFORMS:
            steps.append(_ssd_transform(t, s))
        elif s.type not in _LOADING:
            t.dropped.append(f"{s.where} ({s.type})")
    if any(step["type"] in _SSD_TRANSFORMS for step in steps):  # otherwise dettool's default pipeline
        d["train_pipeline"] = steps + [{"type": "Normalize"}, {"type": "Pad"}]
    for split, key in (("train", "train_dataloader"), ("val", "val_dataloader")):
        ds = train_ds if split == "train" else cfg.get(key, {}).get("dataset", {})
        root = ds.get("data_root", "")
        if "ann_file" in ds:
            d[split] = {"ann_file": root + ds["ann_file"], "img_dir": root + ds.get("data_prefix", {}).get("img", "")}
            if "seg" in ds.get("data_prefix", {}):  # HTC's semantic label maps (COCO-stuff)
                d[split]["seg_dir"] = root + ds["data_prefix"]["seg"]
        if ds.get("proposal_file"):  # MMDetection's pickled proposals: dettool reads its own .pt files
            t.dropped.append(f"{key}.dataset.proposal_file ({ds['proposal_file']}: write dettool proposals "
                             f"files with an RPN and set data.{split}.proposals_file)")


def training(t: Translation, cfg: dict) -> None:
    """Epochs (times RepeatDataset's), batch size, SGD, gradient clipping and the LR schedule into ``train``."""
    tr = t.config.setdefault("train", {})
    loop = cfg.get("train_cfg") or {}
    _, repeat = _dataset(cfg.get("train_dataloader", {}).get("dataset", {}))  # RepeatDataset: x passes per epoch
    if loop.get("type") == "EpochBasedTrainLoop":
        tr["max_epochs"] = loop.get("max_epochs") * repeat
    if bs := cfg.get("train_dataloader", {}).get("batch_size"):
        tr["batch_size"] = bs
    opt = (cfg.get("optim_wrapper") or {}).get("optimizer") or {}
    if opt.get("type") == "SGD":
        tr["optimizer"] = {"type": "sgd", "lr": opt.get("lr"), "momentum": opt.get("momentum", 0.0),
                           "weight_decay": opt.get("weight_decay", 0.0), "decay_norm_and_bias": True}
    elif opt:
        t.dropped.append(f"optim_wrapper.optimizer ({opt.get('type')})")
    wrapper = cfg.get("optim_wrapper") or {}
    for key in sorted(set(wrapper) - {"optimizer", "clip_grad", *HANDLED}):
        t.dropped.append(f"optim_wrapper.{key}")
    optim_wrapper(t, wrapper)
    clip = wrapper.get("clip_grad") or {}
    if clip and "optimizer" in tr and clip.get("norm_type", 2) == 2:
        tr["optimizer"]["grad_clip"] = clip.get("max_norm")
    elif clip:
        t.dropped.append("optim_wrapper.clip_grad")
    lr: dict = {}
    for i, sch in enumerate(cfg.get("param_scheduler") or []):
        if sch.get("type") == "LinearLR" and not sch.get("by_epoch", True):
            lr.update(warmup="linear", warmup_iters=sch.get("end"), warmup_ratio=sch.get("start_factor"))
        elif sch.get("type") == "ConstantLR" and not sch.get("by_epoch", True):
            lr.update(warmup="constant", warmup_iters=sch.get("end"), warmup_ratio=sch.get("factor"))
        elif sch.get("type") == "MultiStepLR" and sch.get("by_epoch", True):
            lr.update(policy="step", steps=[m * repeat for m in sch.get("milestones")], gamma=sch.get("gamma", 0.1))
        else:
            t.dropped.append(f"param_scheduler[{i}] ({sch.get('type')})")
    if lr:
        tr["lr"] = lr
