"""Each detector's full TensorRT engine against the PyTorch model on the same GPU.

For every detector family (tiny random-init models at 128x96; heads re-initialised so that scores
spread out): export the custom-op ONNX graph (FP32 and FP16, dynamic batch), build the engine with
``exporters.onnx2trt.build_engine``, run it through ``TensorRTBackend`` and compare with
``TorchBackend`` (eager ``model.predict``) on the tiny val images. FP32: every detection matches
(same label, IoU >= 0.9) with scores within 1e-3; FP16: at least 90% of the detections match at
IoU >= 0.5. Needs TensorRT, a CUDA device and the built plugin library; skips cleanly otherwise.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed")
if not hasattr(trt, "Builder"):  # a folder named tensorrt on sys.path, not the library
    sys.modules.pop("tensorrt", None)
    pytest.skip("TensorRT is not installed", allow_module_level=True)

from detector_helpers import CONFIGS, random_detector, tiny_sets  # noqa: E402

from dettool.config import load_config  # noqa: E402
from dettool.exporters.onnx2trt import ShapeProfile, build_engine  # noqa: E402
from dettool.exporters.torch2onnx import export_onnx  # noqa: E402
from dettool.io import atomic_save  # noqa: E402
from dettool.runtime.parity import match_detections  # noqa: E402
from dettool.runtime.tensorrt_backend import TensorRTBackend  # noqa: E402
from dettool.runtime.torch_backend import TorchBackend  # noqa: E402
from dettool.trainer import builder  # noqa: E402

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]

MODELS = {"retinanet": "retinanet_r18_fpn_synth.yaml", "fcos": "fcos_r18_fpn_synth.yaml",
          "faster_rcnn": "faster_rcnn_r18_fpn_synth.yaml", "mask_rcnn": "mask_rcnn_r18_fpn_synth.yaml",
          "cascade_mask_rcnn": "cascade_mask_rcnn_r18_fpn_synth.yaml", "dcn": "faster_rcnn_r18_fpn_dconv_synth.yaml"}
PROFILE = ShapeProfile(1, 2, 4, (32, 32), (96, 128), (256, 256))


def tiny_checkpoint(cfg, path: Path) -> Path:
    atomic_save({"model": random_detector(cfg).state_dict(), "meta": {}}, path)
    return path


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("name", list(MODELS))
def test_detector_engine_matches_pytorch(name, fp16, plugin_library, tiny_synth, tmp_path):
    cfg = load_config(CONFIGS / MODELS[name], tiny_sets(tiny_synth))
    ckpt = tiny_checkpoint(cfg, tmp_path / "model.pth")
    onnx_path, _ = export_onnx(cfg, ckpt, tmp_path / "model.onnx", fp16=fp16, dynamic_batch=True)
    build_engine(onnx_path, tmp_path / "model.engine", PROFILE, workspace_mb=1024)
    engine = TensorRTBackend(tmp_path / "model.engine", "cuda")
    torch_backend = TorchBackend.from_checkpoint(cfg, ckpt, "cuda")
    dataset = builder.build_dataset(cfg, "val")
    images, _, metas = next(iter(builder.build_dataloader(cfg, dataset, train=False, batch_size=3)))
    ref = torch_backend.infer(images.cuda(), metas)
    got = engine.infer(images.cuda(), metas)
    total = sum(len(r) for r in ref)
    assert total > 0
    matched = 0
    for r, g in zip(ref, got):
        pairs = match_detections(r, g, iou_thr=0.5 if fp16 else 0.9)
        matched += len(pairs)
        if not fp16:
            assert len(pairs) == len(r) == len(g)
            for i, j in pairs:
                assert abs(float(r.scores[i]) - float(g.scores[j])) < 1e-3
    assert matched >= (0.9 if fp16 else 1.0) * total
