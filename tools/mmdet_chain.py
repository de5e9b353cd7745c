"""A converted MMDetection model through dettool's whole chain, against MMDetection's own inference.

Two cases. Each is an MMDetection config + checkpoint that ``dettool convert mmdet`` turns into a
dettool config + checkpoint, run on synthetic val images that neither pipeline resizes (every
image already has the test scale's size: MMDetection's ``Resize`` and dettool's keep-ratio resize
both give a scale factor of exactly 1, asserted on both sides):

* ``trained``: dettool's trained Faster R-CNN R-18-FPN (configs/faster_rcnn_r18_fpn_synth.yaml,
  work_dirs/faster_rcnn_r18_fpn_synth/epoch_6.pth) as MMDetection would hold it. The config is
  written here as ``dict(...)`` literals with the same architecture, training and test settings
  (checked: the yaml ``dettool convert mmdet`` makes of it has the dettool config's model and test
  sections, and its normalisation). The checkpoint holds the trained weights under MMDetection's
  parameter names, a mapping read off dettool's converter (MMDetection's model of the config with
  tensor i filled with i + 1, converted; each converted tensor is named by its fill), every tensor
  of both sides accounted for; converting the written checkpoint back gives the trained weights bit
  for bit. Images: the 200 val images, each pasted top-left on a canvas of the largest width and
  height among them (320x256) filled with the mean colour (what the model sees in zero padding after
  normalisation), saved as PNG so that both decoders read the same pixels; annotations unchanged.
* ``random``: MMDetection's shipped RetinaNet R-50 (retinanet_r50_fpn_1x_coco, 4 classes) with
  random weights calibrated as tests/interop/test_mmdet_equivalence.py does (BN statistics and head
  scales measured on the first image), on the first ``--num-random`` val images upscaled to its
  test scale, 1333x800. Its AP is about 0 on both sides, so the detections are compared one by one.
  Calibrated on one image, its class logits run high on some others, whose kept scores are then
  all 1.0 or within a few float32 roundings of it: ties, which the comparisons count.

For each case: COCO bbox AP of MMDetection's ``init_detector`` + ``inference_detector`` (scored by
pycocotools on the same annotations, labels mapped to the sorted category ids) against that of
``dettool eval`` on the converted model; the two sets of detections matched per image as
``dettool eval-engine`` matches (runtime.parity: same label, IoU >= 0.5), with box and score
differences; then ``dettool export --to onnx`` in the custom-op, ``--portable`` and ``--fp16``
flavours, each checked by ``dettool eval-engine``. Where detections differ, the script looks for
the cause: for the two-stage model, where the two RPNs' proposals first differ (an exact score tie
broken in different order?) and whether dettool's RoI head on MMDetection's proposals gives
MMDetection's detections; for any comparison, how many differing detections have a twin of
bit-equal score on the other side; and where the random model's custom-op engine disagrees with
PyTorch, where those detections rank and whether PyTorch disagrees with itself as much under
float32-rounding-sized input noise (the model's ties, not an engine defect).

Writes OUT/chain.json (every number) and OUT/chain.md (the tables), prints the tables; the cases'
files go to OUT/trained/ and OUT/random/.

    python tools/mmdet_chain.py                        # both cases, about 50 min on 2 shared CPU cores
    python tools/mmdet_chain.py --cases trained --out work_dirs/mmdet_chain_trained

Needs MMDetection (pip install mmdet==3.3.0 mmengine==0.10.7 mmcv-lite==2.1.0); its compiled ops
are the stand-ins of tests/mmdet_reference.py.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "interop")]

import numpy as np  # noqa: E402
import test_mmdet_equivalence as eq  # noqa: E402  (random calibrated MMDetection models, the tolerances)
import torch  # noqa: E402
from detector_helpers import run_cli  # noqa: E402  (the dettool CLI in-process)
from mmdet_chain_report import findings, markdown  # noqa: E402  (tools/: the script's own folder)
from mmdet_reference import import_mmdet  # noqa: E402  (mmdet with the mmcv._ext stand-in)
from PIL import Image  # noqa: E402

from dettool.config import load_config  # noqa: E402
from dettool.errors import ConfigError  # noqa: E402
from dettool.evaluation.coco_eval import detections_to_results  # noqa: E402
from dettool.interop.mmdet_config import read_mmdet_config  # noqa: E402
from dettool.interop.mmdet_convert import translate_config  # noqa: E402
from dettool.runtime import load_backend  # noqa: E402
from dettool.runtime.parity import OutputDiff, match_detections  # noqa: E402
from dettool.runtime.torch_backend import TorchBackend  # noqa: E402
from dettool.structures.detections import Detections  # noqa: E402
from dettool.trainer import builder  # noqa: E402
from dettool.trainer.checkpoint import load_checkpoint  # noqa: E402
from dettool.trainer.evaluate import load_trained_model  # noqa: E402

TRAINED_CONFIG = REPO / "configs" / "faster_rcnn_r18_fpn_synth.yaml"
TRAINED_CKPT = REPO / "work_dirs" / "faster_rcnn_r18_fpn_synth" / "epoch_6.pth"
VAL_ANN = REPO / "data" / "synth" / "annotations" / "val.json"
VAL_DIR = REPO / "data" / "synth" / "val"
TRAIN_ANN = REPO / "data" / "synth" / "annotations" / "train.json"
RANDOM_SIZE = (1333, 800)  # (width, height): RetinaNet's test scale
FLAVOURS = (("custom", ()), ("portable", ("--portable",)), ("fp16", ("--fp16",)))
EVAL_BATCH = 2  # the batch dettool eval runs at (trainer/evaluate.py)
ENGINE_BATCH = 4  # dettool eval-engine's default batch
MMDET_CHUNK = 20  # images per inference_detector call (a progress line each)
SATURATED = 1e-5  # a score this close to 1: float32 sigmoid within ~100 roundings of 1.0, ties all over
NOISE_STD = 1e-6  # input noise of the control run: a few float32 roundings of a normalised pixel
_T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", flush=True)


# ---------------------------------------------------------------------------------------------- images

def val_annotations() -> dict:
    return json.loads(VAL_ANN.read_text())


def class_names(ann: dict) -> tuple[list[str], list[int]]:
    """Class names and category ids in label order (labels index the sorted category ids)."""
    cats = sorted(ann["categories"], key=lambda c: c["id"])
    return [c["name"] for c in cats], [c["id"] for c in cats]


def canvas_split(out: Path, fill: tuple[int, int, int]) -> tuple[Path, Path, tuple[int, int]]:
    """Every val image pasted top-left on one canvas (the largest width and height among them)
    filled with ``fill``, as PNG; the boxes keep their pixels. Returns the annotation file, the
    image folder and the canvas ``(width, height)``."""
    ann = val_annotations()
    size = (max(im["width"] for im in ann["images"]), max(im["height"] for im in ann["images"]))
    img_dir = out / "val_canvas"
    img_dir.mkdir(parents=True, exist_ok=True)
    for im in ann["images"]:
        canvas = Image.new("RGB", size, fill)
        canvas.paste(Image.open(VAL_DIR / im["file_name"]).convert("RGB"), (0, 0))
        im["file_name"] = Path(im["file_name"]).with_suffix(".png").name
        canvas.save(img_dir / im["file_name"])
        im["width"], im["height"] = size
    ann_path = out / "val_canvas.json"
    ann_path.write_text(json.dumps(ann))
    return ann_path, img_dir, size


def upscaled_split(out: Path, num_images: int, size: tuple[int, int]) -> tuple[Path, Path]:
    """The first ``num_images`` val images resized to exactly ``size`` (PIL bilinear), as PNG;
    boxes and polygons scaled alike. Returns the annotation file and the image folder."""
    ann = val_annotations()
    ann["images"] = ann["images"][:num_images]
    kept = {im["id"] for im in ann["images"]}
    ann["annotations"] = [a for a in ann["annotations"] if a["image_id"] in kept]
    img_dir = out / f"val{size[0]}"
    img_dir.mkdir(parents=True, exist_ok=True)
    scale = {}
    for im in ann["images"]:
        scale[im["id"]] = (size[0] / im["width"], size[1] / im["height"])
        resized = Image.open(VAL_DIR / im["file_name"]).convert("RGB").resize(size, Image.BILINEAR)
        im["file_name"] = Path(im["file_name"]).with_suffix(".png").name
        resized.save(img_dir / im["file_name"])
        im["width"], im["height"] = size
    for a in ann["annotations"]:
        sx, sy = scale[a["image_id"]]
        x, y, w, h = a["bbox"]
        a["bbox"] = [x * sx, y * sy, w * sx, h * sy]
        a["area"] = a["bbox"][2] * a["bbox"][3]
        a["segmentation"] = [[c * (sx if i % 2 == 0 else sy) for i, c in enumerate(poly)]
                             for poly in a["segmentation"]]
    ann_path = out / f"val{size[0]}.json"
    ann_path.write_text(json.dumps(ann))
    return ann_path, img_dir


# -------------------------------------------------------------------------------------- MMDetection

def faster_rcnn_config(size: tuple[int, int], val_ann: Path, val_dir: Path, classes: list[str],
                       reg_decoded_bbox: bool) -> str:
    """configs/faster_rcnn_r18_fpn_synth.yaml in MMDetection's words (``dict(...)`` literals).

    Test settings are dettool's schema defaults where the yaml leaves them (RPN test proposals
    nms_pre 1000 / IoU 0.7 / 1000 kept; RoIAlign aligned; finest_scale 56). The test pipeline
    resizes to ``size``, the size of every image it is given: scale factor 1. ``reg_decoded_bbox``:
    True is how MMDetection says that the box head's GIoU loss is on decoded boxes, as dettool's
    giou loss is (False would be GIoU between delta vectors); see ``translation_refusal``.
    """
    def path(p: Path) -> str:
        return repr(str(p))

    return f"""# configs/faster_rcnn_r18_fpn_synth.yaml as an MMDetection 3.x config (written by tools/mmdet_chain.py)
classes = {tuple(classes)!r}
model = dict(
    type='FasterRCNN',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_size_divisor=32),
    backbone=dict(type='ResNet', depth=18, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=-1,
                  norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False, style='pytorch', init_cfg=None),
    neck=dict(type='FPN', in_channels=[64, 128, 256, 512], out_channels=96, num_outs=5),
    rpn_head=dict(
        type='RPNHead', in_channels=96, feat_channels=96,
        anchor_generator=dict(type='AnchorGenerator', scales=[4], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0], target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=0.1111111111, loss_weight=1.0)),
    roi_head=dict(
        type='StandardRoIHead',
        bbox_roi_extractor=dict(type='SingleRoIExtractor',
                                roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2, aligned=True),
                                out_channels=96, featmap_strides=[4, 8, 16, 32], finest_scale=56),
        bbox_head=dict(
            type='Shared2FCBBoxHead', in_channels=96, fc_out_channels=256, roi_feat_size=7, num_classes={len(classes)},
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                            target_stds=[0.1, 0.1, 0.2, 0.2]),
            reg_class_agnostic=False, reg_decoded_bbox={reg_decoded_bbox},
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=2.0))),
    train_cfg=dict(
        rpn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                               match_low_quality=True, ignore_iof_thr=-1),
                 sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5, neg_pos_ub=-1,
                              add_gt_as_proposals=False),
                 allowed_border=-1, pos_weight=-1, debug=False),
        rpn_proposal=dict(nms_pre=1000, max_per_img=500, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                                match_low_quality=True, ignore_iof_thr=-1),
                  sampler=dict(type='RandomSampler', num=128, pos_fraction=0.25, neg_pos_ub=-1,
                               add_gt_as_proposals=True),
                  pos_weight=-1, debug=False)),
    test_cfg=dict(
        rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(256, 208), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale={size!r}, keep_ratio=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8, num_workers=2,
    dataset=dict(type='CocoDataset', data_root={path(TRAIN_ANN.parents[1])} + '/', ann_file='annotations/train.json',
                 data_prefix=dict(img='train/'), metainfo=dict(classes=classes), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=2,
    dataset=dict(type='CocoDataset', data_root={path(val_ann.parent)} + '/', ann_file={val_ann.name!r},
                 data_prefix=dict(img={val_dir.name + '/'!r}), metainfo=dict(classes=classes), test_mode=True,
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
"""


def retinanet_config(val_ann: Path, val_dir: Path, num_classes: int) -> str:
    """MMDetection's shipped retinanet_r50_fpn_1x_coco with ``num_classes`` and its data read from here."""
    split = (f"dict(dataset=dict(data_root={str(val_ann.parent) + '/'!r}, ann_file={val_ann.name!r}, "
             f"data_prefix=dict(img={val_dir.name + '/'!r})))")
    return (f"_base_ = {str(eq.mmdet_configs() / 'retinanet' / 'retinanet_r50_fpn_1x_coco.py')!r}\n"
            f"model = dict(bbox_head=dict(num_classes={num_classes}))\n"
            f"train_dataloader = {split}\nval_dataloader = {split}\ntest_dataloader = val_dataloader\n")


def build_mmdet_model(config: Path) -> torch.nn.Module:
    """MMDetection's model of ``config`` (initialised, no pretrained backbone), in eval mode."""
    import_mmdet()
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    cfg = Config.fromfile(str(config))
    cfg.model.backbone.init_cfg = None
    return MODELS.build(cfg.model).eval()


def mmdet_detections(config: Path, ckpt: Path, ann_path: Path, img_dir: Path) -> dict[int, Detections]:
    """MMDetection's own inference (``init_detector`` + ``inference_detector``) on every image of
    ``ann_path``: image id -> detections (original-image pixels). Asserts that the checkpoint loaded
    whole and that the pipeline resized nothing (scale factor 1, image shape = original shape)."""
    import_mmdet()
    from mmdet.apis import inference_detector, init_detector
    from mmengine.config import Config

    cfg = Config.fromfile(str(config))
    cfg.model.backbone.init_cfg = None
    with contextlib.redirect_stdout(io.StringIO()):
        detector = init_detector(cfg, str(ckpt), device="cpu")
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    loaded = detector.state_dict()
    assert loaded.keys() == saved.keys(), "MMDetection's model and the checkpoint hold different tensors"
    assert all(torch.equal(loaded[k], saved[k]) for k in saved), "a checkpoint tensor did not load"
    images = json.loads(ann_path.read_text())["images"]
    out: dict[int, Detections] = {}
    for start in range(0, len(images), MMDET_CHUNK):
        chunk = images[start:start + MMDET_CHUNK]
        samples = inference_detector(detector, [str(img_dir / im["file_name"]) for im in chunk])
        for im, sample in zip(chunk, samples):
            shape = (im["height"], im["width"])
            assert tuple(sample.scale_factor) == (1.0, 1.0) and sample.img_shape == sample.ori_shape == shape, \
                f"MMDetection resized {im['file_name']}: {sample.metainfo}"
            pred = sample.pred_instances
            out[im["id"]] = Detections(boxes=pred.bboxes.float(), scores=pred.scores.float(), labels=pred.labels.long())
        log(f"  MMDetection inference_detector: {len(out)}/{len(images)} images")
    return out


def translation_refusal(config_text: str, probe: Path) -> str | None:
    """What dettool's converter refuses in a config (written to ``probe``), or None."""
    probe.write_text(config_text)
    try:
        translate_config(read_mmdet_config(probe), str(probe))
    except ConfigError as exc:
        return str(exc)
    return None


# ------------------------------------------------------------------------------------------- dettool

def convert(config: Path, ckpt: Path, out: Path) -> tuple[Path, Path]:
    """``dettool convert mmdet CONFIG CKPT --out OUT``: the written yaml and checkpoint."""
    code, _, err = run_cli(["convert", "mmdet", config, ckpt, "--out", out])
    assert code == 0, f"dettool convert mmdet {config.name} failed: {err.strip()}"
    return out / f"{config.stem}.yaml", out / f"{config.stem}.pth"


def name_mapping(config: Path, out: Path) -> tuple[dict[str, str], Path]:
    """dettool parameter name -> MMDetection's, read off ``dettool convert mmdet``: MMDetection's
    model of ``config`` with its tensor i filled with i + 1 is converted, and each converted tensor
    is named by its fill. Asserts a one-to-one mapping of every tensor of both sides (the converter
    itself checks the dettool side's names and shapes). Returns it and the converted yaml."""
    reference = build_mmdet_model(config).state_dict()
    names = list(reference)
    probe = {name: torch.full_like(t, i + 1) for i, (name, t) in enumerate(reference.items())}
    out.mkdir(parents=True, exist_ok=True)
    probe_ckpt = out / "probe_mmdet.pth"
    torch.save({"meta": {}, "state_dict": probe}, probe_ckpt)
    yaml_path, converted_path = convert(config, probe_ckpt, out)
    mapping = {}
    for name, t in load_checkpoint(converted_path)["model"].items():
        fill = t.reshape(-1)[0].item()
        assert bool((t == fill).all()), f"{name}: the converter mixed tensors"
        source = names[int(fill) - 1]
        assert t.shape == reference[source].shape, f"{name} {tuple(t.shape)} <- {source}"
        mapping[name] = source
    assert sorted(mapping.values()) == sorted(names), "an MMDetection tensor is dropped or used twice"
    return mapping, yaml_path


def differences(a, b, prefix: str) -> list[str]:
    """``prefix.key: a != b`` for each leaf where two config objects differ."""
    if dataclasses.is_dataclass(a) and type(a) is type(b):
        return [d for f in dataclasses.fields(a)
                for d in differences(getattr(a, f.name), getattr(b, f.name), f"{prefix}.{f.name}")]
    return [] if a == b else [f"{prefix}: {a!r} != {b!r}"]


def compare_settings(converted_yaml: Path, size: tuple[int, int]) -> dict:
    """The converted config against configs/faster_rcnn_r18_fpn_synth.yaml: model and test sections,
    and the data settings the deploy graph reads; ``test_scale`` must be the canvas (no resize)."""
    got, want = load_config(converted_yaml), load_config(TRAINED_CONFIG)
    diffs = differences(got.model, want.model, "model") + differences(got.test, want.test, "test")
    data_keys = ("channel_order", "mean", "std", "size_divisor", "keep_ratio", "train_scale", "flip_prob")
    diffs += [d for k in data_keys for d in differences(getattr(got.data, k), getattr(want.data, k), f"data.{k}")]
    assert not diffs, "the converted config differs from the dettool one:\n" + "\n".join(diffs)
    assert got.data.test_scale == f"{size[0]}x{size[1]}", got.data.test_scale
    return {"model_equal": True, "test_equal": True, "data_equal": list(data_keys),
            "test_scale": {"converted": got.data.test_scale, "dettool_config": want.data.test_scale}}


def dettool_eval(cfg_path: Path, ckpt_path: Path, out: Path) -> dict:
    """``dettool eval`` through its CLI: the metrics it writes."""
    code, _, err = run_cli(["eval", cfg_path, ckpt_path, "--out", out, "--device", "cpu"])
    assert code == 0, f"dettool eval failed: {err.strip()}"
    return json.loads(out.read_text())


def dettool_detections(cfg_path: Path, ckpt_path: Path) -> dict[int, Detections]:
    """The detections ``dettool eval`` scores (its model loading, val loader at its batch, predict):
    image id -> detections. Asserts that the pipeline resized nothing."""
    cfg = load_config(cfg_path)
    model = load_trained_model(cfg, ckpt_path, torch.device("cpu"))
    dataset = builder.build_dataset(cfg, "val")
    loader = builder.build_dataloader(cfg, dataset, train=False, batch_size=EVAL_BATCH)
    out = {}
    with torch.inference_mode():
        for images, _, metas in loader:
            for meta, det in zip(metas, model.predict(images, metas)):
                assert tuple(meta["scale_factor"]) == (1.0, 1.0) and meta["img_shape"] == meta["ori_shape"], meta
                out[meta["image_id"]] = det
    return out


def coco_bbox(ann_path: Path, dets: dict[int, Detections], cat_ids: list[int]) -> dict:
    """pycocotools COCOeval bbox of per-image detections (labels -> ``cat_ids``): AP, AP50, AP75."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = detections_to_results(list(dets.values()), [{"image_id": i} for i in dets], cat_ids)
    if not results:
        return {"bbox_AP": 0.0, "bbox_AP50": 0.0, "bbox_AP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_path))
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"bbox_AP": float(ev.stats[0]), "bbox_AP50": float(ev.stats[1]), "bbox_AP75": float(ev.stats[2])}


def agreement(mmdet: dict[int, Detections], dettool: dict[int, Detections]) -> dict:
    """MMDetection's detections (reference) against dettool's, matched per image as eval-engine
    matches. ``within_test_tol``: matched pairs within tests/interop's tolerances (boxes 1e-2 px,
    scores ``SCORE_TOL``); ``differing_images``: the ids of images with any pair outside them or
    any detection unmatched."""
    assert mmdet.keys() == dettool.keys()
    total, differing = OutputDiff(), []
    for image_id, ref in mmdet.items():
        one = OutputDiff()
        one.add(ref, dettool[image_id])
        total.add(ref, dettool[image_id])
        if one.unmatched_engine or one.unmatched_torch or any(
                b > 1e-2 or d > eq.SCORE_TOL for b, d in zip(one.box_linf, one.score_diff)):
            differing.append(image_id)
    s = total.summary()
    close = sum(b <= 1e-2 and d <= eq.SCORE_TOL for b, d in zip(total.box_linf, total.score_diff))
    return {"detections_mmdet": sum(len(d) for d in mmdet.values()),
            "detections_dettool": sum(len(d) for d in dettool.values()), "matched": s["matched"],
            "unmatched_mmdet": s["unmatched_torch"], "unmatched_dettool": s["unmatched_engine"],
            "within_test_tol": close, "box_linf_px_max": s.get("box_linf_px_max"),
            "score_diff_max": s.get("score_diff_max"), "differing_images": differing,
            "ties": tie_evidence(mmdet, dettool)}


def tie_evidence(ref: dict[int, Detections], got: dict[int, Detections]) -> dict:
    """How far exact score ties explain where ``got`` differs from ``ref`` (detections per image id).

    ``saturated``: detections of ``ref`` scored exactly 1.0 (float32 sigmoid saturation) and the
    images having any. ``unmatched_*`` and ``*_with_twin``: unmatched detections of each side, and
    those for which the other side has an unmatched detection of the same label and bit-equal score
    (a tie the two broke in different order). ``images_with_unmatched`` and ``*_saturated_list``:
    the images with unmatched detections, and those whose reference list holds nothing but scores
    within ``SATURATED`` of 1 (a list of ties, cut at ``max_per_img``). ``pairs_over_1e-2px`` and
    ``*_tied``: matched pairs whose boxes differ by more than 1e-2 px, and those whose reference
    score is shared by another detection of its label in its list.
    """
    out = dict.fromkeys(("saturated", "images_with_saturated", "unmatched_ref", "unmatched_ref_with_twin",
                         "unmatched_got", "unmatched_got_with_twin", "images_with_unmatched",
                         "images_with_unmatched_saturated_list", "pairs_over_1e-2px", "pairs_over_1e-2px_tied"), 0)
    for image_id, r in ref.items():
        g = got[image_id]
        pairs = match_detections(r, g)
        keys_r = [(int(label), float(score)) for label, score in zip(r.labels, r.scores)]
        keys_g = [(int(label), float(score)) for label, score in zip(g.labels, g.scores)]
        unmatched_r = [keys_r[i] for i in sorted(set(range(len(r))) - {i for i, _ in pairs})]
        unmatched_g = [keys_g[j] for j in sorted(set(range(len(g))) - {j for _, j in pairs})]
        saturated = int((r.scores == 1.0).sum())
        out["saturated"] += saturated
        out["images_with_saturated"] += int(saturated > 0)
        out["unmatched_ref"] += len(unmatched_r)
        out["unmatched_got"] += len(unmatched_g)
        out["unmatched_ref_with_twin"] += sum(k in set(unmatched_g) for k in unmatched_r)
        out["unmatched_got_with_twin"] += sum(k in set(unmatched_r) for k in unmatched_g)
        if unmatched_r or unmatched_g:
            out["images_with_unmatched"] += 1
            out["images_with_unmatched_saturated_list"] += int(bool(len(r)) and float(r.scores.min()) >= 1 - SATURATED)
        counts = Counter(keys_r)
        off = [i for i, j in pairs if float((r.boxes[i] - g.boxes[j]).abs().max()) > 1e-2]
        out["pairs_over_1e-2px"] += len(off)
        out["pairs_over_1e-2px_tied"] += sum(counts[keys_r[i]] > 1 for i in off)
    return out


def diagnose_proposals(config: Path, mmdet_ckpt: Path, mmdet: dict[int, Detections], cfg_path: Path,
                       ckpt_path: Path, image_ids: list[int]) -> list[dict]:
    """Two-stage models, per image whose detections differ: where the two RPNs' proposals (each in
    its descending score order) first differ, with both scores there (bit-equal scores: a tie the
    two broke in different order), how many proposals either lacks, and how far dettool's RoI head
    given MMDetection's proposals is from MMDetection's detections. Both models read the same
    input (asserted: MMDetection's pipeline + preprocessor gives dettool's tensor bit for bit)."""
    import_mmdet()
    from mmcv.transforms import Compose
    from mmdet.apis import init_detector
    from mmdet.utils import get_test_pipeline_cfg
    from mmengine.config import Config

    from dettool.structures.detections import image_shapes_tensor, outputs_to_detections
    from dettool.trainer.models.postprocess.batched import pad_rows

    mm_cfg = Config.fromfile(str(config))
    mm_cfg.model.backbone.init_cfg = None
    with contextlib.redirect_stdout(io.StringIO()):
        detector = init_detector(mm_cfg, str(mmdet_ckpt), device="cpu")
    pipeline = Compose(get_test_pipeline_cfg(mm_cfg))
    cfg = load_config(cfg_path)
    model = load_trained_model(cfg, ckpt_path, torch.device("cpu"))
    dataset = builder.build_dataset(cfg, "val")
    collate = builder.build_dataloader(cfg, dataset, train=False, batch_size=1).collate_fn
    out = []
    for image_id in image_ids:
        images, _, metas = collate([dataset[dataset.image_ids.index(image_id)]])
        packed = pipeline({"img_path": str(dataset.img_dir / metas[0]["file_name"]), "img_id": image_id})
        mm_input = detector.data_preprocessor({"inputs": [packed["inputs"]], "data_samples": [packed["data_samples"]]},
                                              False)["inputs"]
        assert torch.equal(mm_input, images), f"image {image_id}: the two pipelines give different input tensors"
        h, w = metas[0]["img_shape"]
        with torch.no_grad():
            mm_props = detector.rpn_head.predict(detector.extract_feat(images), eq.data_samples(1, h, w),
                                                 rescale=False)[0]
            feats, rpn_raw = model(images)
            shapes = image_shapes_tensor(metas)
            props = model.rpn_head.proposals(rpn_raw, shapes, training=False)
            n = int(props.num_dets[0])
            boxes, scores = props.boxes[0, :n], props.scores[0, :n]
            num, padded = pad_rows([mm_props.bboxes])
            on_mm_props = outputs_to_detections(model.roi_head.decode(feats, num, padded, shapes), metas)[0]
        same = (boxes[:, None, :] - mm_props.bboxes[None, :, :]).abs().amax(-1) <= 1e-3
        first = next((i for i in range(min(n, len(mm_props))) if not same[i, i]), None)
        diff = OutputDiff()
        diff.add(mmdet[image_id], on_mm_props)
        d = diff.summary()
        out.append({"image_id": image_id, "proposals": [len(mm_props), n],
                    "proposals_only_mmdet": int((~same.any(0)).sum()),
                    "proposals_only_dettool": int((~same.any(1)).sum()),
                    "first_difference_rank": first,
                    "scores_there": None if first is None else [float(mm_props.scores[first]), float(scores[first])],
                    "tie": first is not None and bool(mm_props.scores[first] == scores[first]),
                    "dettool_roi_head_on_mmdet_proposals": {
                        "matched": d["matched"], "unmatched": [d["unmatched_torch"], d["unmatched_engine"]],
                        "box_linf_px_max": d.get("box_linf_px_max"), "score_diff_max": d.get("score_diff_max")}})
    return out


def export_and_check(cfg_path: Path, ckpt_path: Path, out: Path, stem: str) -> dict:
    """``dettool export --to onnx`` in each flavour, then ``dettool eval-engine`` on it: per
    flavour the parity rows, the matched-detection summary and the engine's class metadata."""
    rows = {}
    for flavour, flags in FLAVOURS:
        onnx_path, report_path = out / f"{stem}_{flavour}.onnx", out / f"eval_engine_{flavour}.json"
        report_path.unlink(missing_ok=True)
        code, _, err = run_cli(["export", cfg_path, ckpt_path, "--to", "onnx", "--dynamic-batch", "--out", onnx_path,
                                *flags])
        if code != 0:
            rows[flavour] = {"error": f"dettool export failed: {err.strip().splitlines()[-1]}"}
            log(f"  {flavour}: {rows[flavour]['error']}")
            continue
        log(f"  exported {onnx_path.name}; dettool eval-engine ...")
        code, _, err = run_cli(["eval-engine", cfg_path, ckpt_path, "--engine", onnx_path, "--device", "cpu",
                                "--iters", "0", "--num-show", "0", "--out", report_path])
        if not report_path.is_file():
            rows[flavour] = {"error": f"dettool eval-engine failed: {err.strip().splitlines()[-1]}"}
            log(f"  {flavour}: {rows[flavour]['error']}")
            continue
        report = json.loads(report_path.read_text())
        meta = json.loads(onnx_path.with_suffix(".json").read_text())
        rows[flavour] = {"exit_status": code, "precision": report["precision"], "custom_ops": meta["custom_ops"],
                         "parity": report["parity"], "outputs": report["outputs"],
                         "engine_class_names": meta["class_names"], "engine_cat_ids": meta["cat_ids"]}
        p, o = report["parity"][0], report["outputs"]
        log(f"  {flavour}: {p['metric']} torch {p['torch']:.4f} engine {p['engine']:.4f} delta {p['delta']:.4f} "
            f"({'passed' if p['passed'] else 'FAILED'}); detections matched {o['matched']}, unmatched "
            f"{o['unmatched_torch']}/{o['unmatched_engine']}, max box {o['box_linf_px_max']:.3g} px")
    return rows


def chain(config: Path, mmdet_ckpt: Path, ann_path: Path, img_dir: Path, cat_ids: list[int], out: Path,
          stem: str) -> tuple[dict, Path, Path]:
    """Steps 3-5 of a case: MMDetection's inference, conversion, dettool eval, export + eval-engine."""
    log("MMDetection's own inference ...")
    mmdet = mmdet_detections(config, mmdet_ckpt, ann_path, img_dir)
    row: dict = {"mmdet": coco_bbox(ann_path, mmdet, cat_ids)}
    cfg_path, ckpt_path = convert(config, mmdet_ckpt, out / "converted")
    log(f"dettool convert mmdet -> {cfg_path}; dettool eval ...")
    row["dettool_eval"] = {k: v for k, v in dettool_eval(cfg_path, ckpt_path, out / "dettool_eval.json").items()
                           if k in ("bbox_AP", "bbox_AP50", "bbox_AP75", "num_images")}
    dettool = dettool_detections(cfg_path, ckpt_path)
    recomputed = coco_bbox(ann_path, dettool, cat_ids)["bbox_AP"]
    assert recomputed == row["dettool_eval"]["bbox_AP"], (recomputed, row["dettool_eval"])  # the same detections
    row["ap_equal_4dp"] = f"{row['mmdet']['bbox_AP']:.4f}" == f"{row['dettool_eval']['bbox_AP']:.4f}"
    torch.save({name: {i: dataclasses.asdict(d) for i, d in dets.items()}
                for name, dets in (("mmdet", mmdet), ("dettool", dettool))}, out / "detections.pt")
    row["agreement"] = agreement(mmdet, dettool)
    a = row["agreement"]
    log(f"bbox AP: MMDetection {row['mmdet']['bbox_AP']:.4f}, dettool eval {row['dettool_eval']['bbox_AP']:.4f}; "
        f"detections {a['detections_mmdet']} / {a['detections_dettool']}, matched {a['matched']}, max box "
        f"{a['box_linf_px_max'] or 0:.2e} px, max score {a['score_diff_max'] or 0:.2e}; images differing: "
        f"{a['differing_images']}")
    if a["differing_images"] and hasattr(load_config(cfg_path).model, "roi_head"):
        row["proposal_diagnosis"] = diagnose_proposals(config, mmdet_ckpt, mmdet, cfg_path, ckpt_path,
                                                       a["differing_images"])
        for d in row["proposal_diagnosis"]:
            log(f"  image {d['image_id']}: proposals first differ at rank {d['first_difference_rank']} (scores "
                f"{d['scores_there']}, tie: {d['tie']}); dettool's RoI head on MMDetection's proposals: "
                f"{d['dettool_roi_head_on_mmdet_proposals']}")
    log("dettool export + eval-engine, three flavours ...")
    row["eval_engine"] = export_and_check(cfg_path, ckpt_path, out, stem)
    return row, cfg_path, ckpt_path


# ----------------------------------------------------------------------------------------------- cases

def trained_case(out: Path) -> dict:
    """Case A: dettool's trained Faster R-CNN as an MMDetection config + checkpoint, through the chain."""
    out.mkdir(parents=True, exist_ok=True)
    dettool_cfg = load_config(TRAINED_CONFIG)
    names, cat_ids = class_names(val_annotations())
    fill = tuple(int(round(m)) for m in dettool_cfg.data.mean)
    ann_path, img_dir, size = canvas_split(out, fill)
    log(f"trained: {len(json.loads(ann_path.read_text())['images'])} val images on a {size[0]}x{size[1]} canvas "
        f"filled with {fill}")
    config = out / "faster_rcnn_r18_fpn_synth_mmdet.py"
    # MMDetection's own spelling of a GIoU box loss first; the converter has refused it before
    refusal = translation_refusal(faster_rcnn_config(size, ann_path, img_dir, names, reg_decoded_bbox=True), config)
    if refusal is not None:
        log(f"dettool convert refuses reg_decoded_bbox=True with GIoULoss ({refusal}); the config says False")
    config.write_text(faster_rcnn_config(size, ann_path, img_dir, names, reg_decoded_bbox=refusal is None))
    mapping, probe_yaml = name_mapping(config, out / "probe")
    settings = compare_settings(probe_yaml, size)
    log(f"converted config equals {TRAINED_CONFIG.name} (model, test, normalisation); name mapping: "
        f"{len(mapping)} tensors, {sum(a != b for a, b in mapping.items())} renamed")
    trained = load_checkpoint(TRAINED_CKPT)["model"]
    assert trained.keys() == mapping.keys(), "the trained checkpoint and the converter's names differ"
    mmdet_ckpt = out / "faster_rcnn_r18_fpn_synth_mmdet.pth"
    torch.save({"meta": {"dataset_meta": {"classes": tuple(names)}},
                "state_dict": {mapping[k]: v for k, v in trained.items()}}, mmdet_ckpt)
    row, _, ckpt_path = chain(config, mmdet_ckpt, ann_path, img_dir, cat_ids, out, "faster_rcnn")
    back = load_checkpoint(ckpt_path)["model"]
    assert back.keys() == trained.keys() and all(torch.equal(back[k], trained[k]) for k in trained), \
        "converting the MMDetection checkpoint back did not give the trained weights"
    return {"case": "trained", "model": "Faster R-CNN R-18-FPN (dettool, trained 6 epochs)",
            "checkpoint": str(TRAINED_CKPT.relative_to(REPO)),
            "images": len(json.loads(ann_path.read_text())["images"]),
            "size": f"{size[0]}x{size[1]}", "settings": settings, "tensors": len(mapping),
            "renamed_tensors": sum(a != b for a, b in mapping.items()), "round_trip_bit_exact": True,
            "giou_reg_decoded_bbox_refused": refusal, "classes": names, "cat_ids": cat_ids, **row}


def random_case(out: Path, num_images: int) -> dict:
    """Case B: MMDetection's RetinaNet R-50 with random calibrated weights at 1333x800."""
    out.mkdir(parents=True, exist_ok=True)
    names, cat_ids = class_names(val_annotations())
    ann_path, img_dir = upscaled_split(out, num_images, RANDOM_SIZE)
    log(f"random: {num_images} val images upscaled to {RANDOM_SIZE[0]}x{RANDOM_SIZE[1]}")
    config = out / "retinanet_r50_fpn_1x_4classes.py"
    config.write_text(retinanet_config(ann_path, img_dir, len(names)))
    first = np.asarray(Image.open(sorted(img_dir.iterdir())[0]).convert("RGB"), dtype=np.float32)
    mean, std = np.array([123.675, 116.28, 103.53], np.float32), np.array([58.395, 57.12, 57.375], np.float32)
    calibration = torch.from_numpy((first - mean) / std).permute(2, 0, 1)[None].contiguous()
    # class logits around -5.5 (std 1): some thousand (anchor, class) pairs per image pass score_thr
    layers = {"bbox_head.retina_cls": (1.0, -5.5), "bbox_head.retina_reg": 0.3}
    reference = eq.mmdet_model(config, layers, calibration=calibration)
    mmdet_ckpt = out / "mmdet_retinanet.pth"
    torch.save({"meta": {"dataset_meta": {"classes": tuple(names)}}, "state_dict": reference.state_dict()}, mmdet_ckpt)
    del reference
    log("random weights calibrated on the first image; checkpoint written")
    row, cfg_path, ckpt_path = chain(config, mmdet_ckpt, ann_path, img_dir, cat_ids, out, "retinanet")
    custom = row["eval_engine"].get("custom", {}).get("outputs")
    if custom and (custom["unmatched_engine"] or custom["unmatched_torch"] or custom["box_linf_px_max"] > 0.5):
        log("engine and PyTorch disagree on some detections: investigating ...")
        row["investigation"] = investigate(cfg_path, ckpt_path, out / "retinanet_custom.onnx")
    return {"case": "random", "model": "RetinaNet R-50-FPN (MMDetection's config, random calibrated weights)",
            "checkpoint": "random", "images": num_images, "size": f"{RANDOM_SIZE[0]}x{RANDOM_SIZE[1]}",
            "classes": names, "cat_ids": cat_ids, **row}


def investigate(cfg_path: Path, ckpt_path: Path, onnx_path: Path) -> dict:
    """Why the custom-op engine's detections differ from PyTorch's, on the same batches as eval-engine.

    ``engine``: PyTorch against the engine; ``noise_control``: PyTorch against itself with N(0,
    ``NOISE_STD``) added to the normalised input (a few float32 roundings, the size of the engine's
    own differences: how sensitive the model's detections are to rounding). ``ties``:
    ``tie_evidence`` of each (unmatched detections with bit-equal twins on the other side, on
    images whose lists are all saturated ties: a tie broken in another order, not a defect).
    ``ranks``: the score rank (0 = best) of each unmatched detection in its image's list, and of
    the matched pairs whose boxes differ by over 1 px (at the end of a list of ``max_per_img``:
    ties reordered at the cut).
    """
    cfg = load_config(cfg_path)
    torch_backend = TorchBackend.from_checkpoint(cfg, ckpt_path, "cpu")
    engine = load_backend("onnxruntime", onnx_path, "cpu")
    dataset = builder.build_dataset(cfg, "val")
    loader = builder.build_dataloader(cfg, dataset, train=False, batch_size=ENGINE_BATCH)
    dets: dict[str, dict[int, Detections]] = {"torch": {}, "engine": {}, "noise_control": {}}
    generator = torch.Generator().manual_seed(0)
    for images, _, metas in loader:
        noisy = images + NOISE_STD * torch.randn(images.shape, generator=generator)
        for key, result in (("torch", torch_backend.infer(images, metas)), ("engine", engine.infer(images, metas)),
                            ("noise_control", torch_backend.infer(noisy, metas))):
            dets[key].update({meta["image_id"]: d for meta, d in zip(metas, result)})
        log(f"  investigation: {len(dets['torch'])}/{len(dataset)} images")
    out: dict = {"max_per_img": cfg.test.max_per_img, "images": len(dets["torch"]), "noise_std": NOISE_STD,
                 "images_at_cap": sum(len(d) == cfg.test.max_per_img for d in dets["torch"].values())}
    ranks: dict[str, list[int]] = {"unmatched_torch": [], "unmatched_engine": [], "matched_box_over_1px": []}
    for key in ("engine", "noise_control"):
        diff = OutputDiff()
        for image_id, r in dets["torch"].items():
            g = dets[key][image_id]
            diff.add(r, g)
            if key != "engine":
                continue
            rank_r = torch.argsort(torch.argsort(r.scores, descending=True, stable=True))
            rank_g = torch.argsort(torch.argsort(g.scores, descending=True, stable=True))
            pairs = match_detections(r, g)
            ranks["unmatched_torch"] += rank_r[sorted(set(range(len(r))) - {i for i, _ in pairs})].tolist()
            ranks["unmatched_engine"] += rank_g[sorted(set(range(len(g))) - {j for _, j in pairs})].tolist()
            ranks["matched_box_over_1px"] += [int(rank_r[i]) for i, j in pairs
                                              if float((r.boxes[i] - g.boxes[j]).abs().max()) > 1.0]
        out[key] = {**diff.summary(), "ties": tie_evidence(dets["torch"], dets[key])}

    def summary(values: list[int]) -> dict:
        v = np.array(values)
        return {"count": len(values), "min": int(v.min()) if len(v) else None,
                "median": float(np.median(v)) if len(v) else None,
                "in_last_half": int((v >= cfg.test.max_per_img // 2).sum())}

    out["ranks"] = {k: summary(v) for k, v in ranks.items()}
    return out


def git_state() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("work_dirs/mmdet_chain"))
    ap.add_argument("--cases", nargs="+", choices=("trained", "random"), default=["trained", "random"])
    ap.add_argument("--num-random", type=int, default=20, help="val images of the random case (1333x800)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    git_at_start = git_state()
    cases = []
    if "trained" in args.cases:
        cases.append(trained_case(args.out / "trained"))
    if "random" in args.cases:
        cases.append(random_case(args.out / "random", args.num_random))
    git = git_at_start if git_state() == git_at_start else f"{git_at_start} (at the end: {git_state()})"
    result = {"cases": cases, "findings": findings(cases), "git": git, "cpus": torch.get_num_threads(),
              "seconds": round(time.perf_counter() - _T0, 1)}
    (args.out / "chain.json").write_text(json.dumps(result, indent=1))
    table = markdown(result, str(TRAINED_CONFIG.relative_to(REPO)))
    (args.out / "chain.md").write_text(table)
    print(table)
    log(f"wrote {args.out / 'chain.json'} and {args.out / 'chain.md'}")
    passed = all(c["ap_equal_4dp"] and all(p["passed"] for r in c["eval_engine"].values() for p in r.get("parity", []))
                 and all("error" not in r for r in c["eval_engine"].values()) for c in cases)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
