"""The test pipeline is the deploy contract: keep_ratio travels in the deploy metadata, and the
export's example inputs and the TensorRT profile follow it (an exact WxH input without keep-ratio).

(These exercise runtime/metadata.py, exporters/torch2onnx.py and exporters/onnx2trt.py for the
data settings only; the rest of those modules is tested under tests/runtime and tests/exporters.)
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from dettool.config import load_config
from dettool.config.schema import DeployConfig
from dettool.errors import ExportError
from dettool.exporters.onnx2trt import profile_from_config
from dettool.exporters.torch2onnx import build_metadata, example_inputs
from dettool.runtime.metadata import DeployMetadata, Postprocess, Preprocess

REPO = Path(__file__).resolve().parents[2]
RETINA = REPO / "configs" / "retinanet_r18_fpn_synth.yaml"

META = DeployMetadata(model_type="retinanet", class_names=("a",), cat_ids=(1,),
                      preprocess=Preprocess(test_scale="300x300", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                                            size_divisor=32, keep_ratio=False),
                      postprocess=Postprocess(0.05, 0.5, 100), with_masks=False, flavour="custom", precision="fp32",
                      opset=19, custom_ops=(), dynamic_batch=True, export_batch=1, dettool_version="0.1.0")


def test_metadata_round_trips_keep_ratio_and_old_metadata_reads_as_keep_ratio():
    assert DeployMetadata.from_json(META.to_json(), "m.json").preprocess.keep_ratio is False
    old = json.loads(META.to_json())
    del old["preprocess"]["keep_ratio"]  # written before the key existed
    assert DeployMetadata.from_json(json.dumps(old), "old.json").preprocess.keep_ratio is True


@pytest.mark.parametrize("overrides,shape,image_shape", [
    ([], (2, 3, 192, 256), (192.0, 256.0)),  # 256x208 keep-ratio: a 4:3 image is 256 x 192
    (["data.keep_ratio=false", "data.test_scale=300x300"], (2, 3, 320, 320), (300.0, 300.0)),
    (["data.keep_ratio=false", "data.test_scale=512x320", "data.size_divisor=1"], (2, 3, 320, 512), (320.0, 512.0)),
])
def test_example_inputs_follow_keep_ratio(overrides, shape, image_shape):
    cfg = load_config(RETINA, ["data.synth=null", *overrides])
    images, image_shapes = example_inputs(cfg, 2)
    assert tuple(images.shape) == shape
    assert image_shapes.tolist() == [list(image_shape)] * 2


def test_build_metadata_records_keep_ratio(tmp_path):
    cfg = load_config(RETINA, ["data.synth=null", "data.keep_ratio=false", "data.test_scale=300x300"])
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"weights")
    deploy = SimpleNamespace(model_type="retinanet", with_masks=False)
    meta = build_metadata(cfg, deploy, ["a", "b", "c", "d"], [1, 3, 7, 12], portable=False, fp16=False,
                          dynamic_batch=False, batch=1, custom_ops=(), checkpoint=checkpoint)
    assert meta.preprocess == Preprocess(test_scale="300x300", mean=cfg.data.mean, std=cfg.data.std,
                                         size_divisor=32, keep_ratio=False)


def test_profile_without_keep_ratio_is_the_exact_padded_size():
    p = profile_from_config(DeployConfig(max_batch=4), "300x300", 32, META)
    assert p.min_size == p.opt_size == p.max_size == (320, 320)
    assert p.input_shapes("images") == ((1, 3, 320, 320), (1, 3, 320, 320), (4, 3, 320, 320))
    exact = profile_from_config(DeployConfig(), "512x320", 1, replace(META, preprocess=replace(META.preprocess,
                                                                                               size_divisor=1)))
    assert exact.opt_size == (320, 512)


def test_profile_without_keep_ratio_still_honours_and_checks_given_sizes():
    p = profile_from_config(DeployConfig(max_size=(640, 640)), "300x300", 32, META)
    assert (p.min_size, p.opt_size, p.max_size) == ((320, 320), (320, 320), (640, 640))
    with pytest.raises(ExportError, match="sizes min"):
        profile_from_config(DeployConfig(max_size=(256, 256)), "300x300", 32, META)


def test_profile_with_keep_ratio_is_unchanged():
    p = profile_from_config(DeployConfig(max_batch=4), "1333x800", 32,
                            replace(META, preprocess=replace(META.preprocess, test_scale="1333x800", keep_ratio=True)))
    assert (p.min_size, p.opt_size, p.max_size) == ((32, 32), (800, 1088), (1344, 1344))
