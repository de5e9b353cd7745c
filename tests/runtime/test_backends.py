"""Torch and ONNX Runtime backends: same detections, batching, and one-line errors for wrong files.

The quick tests use hand-made ONNX graphs (an Identity graph; a tiny graph with the deploy
graph's inputs and outputs whose one detection per image carries the image's mean as its
score). The ``slow`` ones use the session's exported tiny Mask R-CNN (tests/runtime/conftest.py).
"""
from __future__ import annotations

import dataclasses

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from runtime_helpers import FASTER_RCNN, MASK_RCNN, random_detector, tiny_sets

from dettool.config import load_config
from dettool.errors import BackendError, CheckpointError
from dettool.runtime import TENSORRT_HINT, load_backend, tensorrt_installed
from dettool.runtime.backend import batch_pieces, infer_in_pieces
from dettool.runtime.metadata import DeployMetadata, Postprocess, Preprocess, sidecar_path
from dettool.runtime.onnxruntime_backend import OnnxRuntimeBackend, read_deploy_metadata, select_providers
from dettool.runtime.tensorrt_backend import TensorRTBackend
from dettool.runtime.torch_backend import TorchBackend
from dettool.structures.detections import DetOutputs
from dettool.trainer import builder

HAS_TENSORRT = tensorrt_installed()


def fake_metadata(**changes) -> DeployMetadata:
    meta = DeployMetadata(
        model_type="faster_rcnn", class_names=("a", "b"), cat_ids=(1, 2),
        preprocess=Preprocess("128x96", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 32), postprocess=Postprocess(0.05, 0.5, 100),
        with_masks=False, flavour="portable", precision="fp32", opset=19, custom_ops=(), dynamic_batch=True,
        export_batch=1, dettool_version="test")
    return dataclasses.replace(meta, **changes)


def fake_deploy_graph(batch: int | str = "batch") -> onnx.ModelProto:
    """``images [B, 3, H, W]``, ``image_shapes [B, 2]`` -> one detection per image: box (h, w, h, w),
    score = mean of the image, label 0."""
    nodes = [
        helper.make_node("ReduceMean", ["images", "axes"], ["mean"], keepdims=0),     # [B]
        helper.make_node("Unsqueeze", ["mean", "one"], ["scores"]),                    # [B, 1]
        helper.make_node("Concat", ["image_shapes", "image_shapes"], ["hw2"], axis=1),  # [B, 4]
        helper.make_node("Unsqueeze", ["hw2", "one"], ["boxes"]),                      # [B, 1, 4]
        helper.make_node("Mul", ["scores", "zero"], ["zeros"]),
        helper.make_node("Cast", ["zeros"], ["labels"], to=TensorProto.INT32),
        helper.make_node("Add", ["mean", "onef"], ["ones"]),
        helper.make_node("Sub", ["ones", "mean"], ["ones2"]),
        helper.make_node("Cast", ["ones2"], ["num_dets"], to=TensorProto.INT32),
    ]
    inits = [helper.make_tensor("axes", TensorProto.INT64, [3], [1, 2, 3]),
             helper.make_tensor("one", TensorProto.INT64, [1], [1]),
             helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
             helper.make_tensor("onef", TensorProto.FLOAT, [], [1.0])]
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, "h", "w"]),
              helper.make_tensor_value_info("image_shapes", TensorProto.FLOAT, [batch, 2])]
    outputs = [helper.make_tensor_value_info("num_dets", TensorProto.INT32, [batch]),
               helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, 1, 4]),
               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 1]),
               helper.make_tensor_value_info("labels", TensorProto.INT32, [batch, 1])]
    graph = helper.make_graph(nodes, "fake_deploy", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 10
    return model


def identity_model() -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 10
    return model


def with_metadata(model: onnx.ModelProto, meta: DeployMetadata) -> onnx.ModelProto:
    model.metadata_props.append(onnx.StringStringEntryProto(key="dettool", value=meta.to_json()))
    return model


def batch_of(images: torch.Tensor) -> list[dict]:
    h, w = images.shape[-2:]
    return [{"img_shape": (h - i, w), "ori_shape": (h - i, w), "scale_factor": (1.0, 1.0), "image_id": i}
            for i in range(images.shape[0])]


# ----------------------------------------------------------------------------------- wrong files


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(BackendError, match="model file not found"):
        OnnxRuntimeBackend(tmp_path / "nope.onnx")
    with pytest.raises(BackendError, match="is a folder"):
        OnnxRuntimeBackend(tmp_path)


def test_tensorrt_engine_is_refused_with_a_hint(tmp_path):
    dettool_engine = tmp_path / "model.engine"
    dettool_engine.write_bytes(b"DTTRTENG" + bytes(64))
    raw_plan = tmp_path / "model.plan"
    raw_plan.write_bytes(b"\x00\x00\x00\x00ftrt" + bytes(64))
    for path in (dettool_engine, raw_plan):
        with pytest.raises(BackendError) as info:
            OnnxRuntimeBackend(path)
        assert str(info.value) == f"{path}: is not an ONNX model (a TensorRT engine? use --backend tensorrt)"


def test_corrupt_and_empty_files_name_the_file(tmp_path):
    data = with_metadata(fake_deploy_graph(), fake_metadata()).SerializeToString()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\xfe not a protobuf \x00\x01" * 10)
    for path in (truncated, garbage):
        with pytest.raises(BackendError, match="corrupt or truncated") as info:
            OnnxRuntimeBackend(path)
        assert str(info.value).startswith(str(path))
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(BackendError, match=f"{empty}: is not an ONNX model"):
        OnnxRuntimeBackend(empty)


def test_onnx_that_is_not_a_dettool_graph(tmp_path):
    path = tmp_path / "identity.onnx"
    onnx.save(identity_model(), path)
    with pytest.raises(BackendError, match="not a dettool deploy graph"):
        OnnxRuntimeBackend(path)
    path = tmp_path / "no_metadata.onnx"
    onnx.save(fake_deploy_graph(), path)
    with pytest.raises(BackendError, match="no 'dettool' metadata, no sidecar no_metadata.json"):
        OnnxRuntimeBackend(path)


def test_metadata_from_the_model_before_the_sidecar_and_bad_sidecar(tmp_path):
    path = tmp_path / "m.onnx"
    sidecar_path(path).write_text(fake_metadata(model_type="from_sidecar").to_json())
    assert read_deploy_metadata(fake_deploy_graph(), path).model_type == "from_sidecar"
    model = with_metadata(fake_deploy_graph(), fake_metadata(model_type="from_model"))
    assert read_deploy_metadata(model, path).model_type == "from_model"
    sidecar_path(path).write_text('{"format": "something-else"}')
    with pytest.raises(BackendError, match="m.json: not dettool deploy metadata"):
        read_deploy_metadata(fake_deploy_graph(), path)


# ----------------------------------------------------------------------------------- batching


@pytest.mark.parametrize("batch", ["batch", 1, 2])
def test_fixed_batch_graphs_run_in_pieces(tmp_path, capsys, batch):
    path = tmp_path / "fake.onnx"
    onnx.save(fake_deploy_graph(batch), path)
    sidecar_path(path).write_text(fake_metadata(dynamic_batch=batch == "batch").to_json())
    backend = OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"])
    assert backend.fixed_batch == (None if batch == "batch" else batch)
    images = torch.randn(3, 3, 32, 64, generator=torch.Generator().manual_seed(0))
    metas = batch_of(images)
    for _ in range(2):
        dets = backend.infer(images, metas)
        assert len(dets) == 3
        for i, det in enumerate(dets):
            torch.testing.assert_close(det.scores, images[i].mean().reshape(1))
            h, w = metas[i]["img_shape"]
            # box (h, w, h, w), clipped to the image (h < w): each image keeps its own shape
            torch.testing.assert_close(det.boxes, torch.tensor([[h, h, h, h]], dtype=torch.float32))
            assert det.labels.tolist() == [0]
    notes = [ln for ln in capsys.readouterr().err.splitlines() if "fixed batch" in ln]
    assert len(notes) == (0 if batch == "batch" else 1)  # said once, not per call
    if batch == 1:
        assert "running the 3 images of a batch one by one" in notes[0]


def test_batch_pieces_pad_a_short_last_piece_with_its_last_image():
    images = torch.arange(5.0).reshape(5, 1, 1, 1).expand(5, 3, 2, 2)
    shapes = torch.arange(10.0).reshape(5, 2)

    def sizes(max_batch: int, min_batch: int) -> list[tuple[int, int, int]]:
        return [(start, num_real, piece.shape[0]) for start, num_real, piece, _ in
                batch_pieces(images, shapes, max_batch, min_batch)]

    assert sizes(2, 2) == [(0, 2, 2), (2, 2, 2), (4, 1, 2)]  # fixed batch 2: the fifth image padded
    assert sizes(4, 1) == [(0, 4, 4), (4, 1, 1)]  # dynamic: a short last piece stays short
    assert sizes(4, 3) == [(0, 4, 4), (4, 1, 3)]  # ... unless it is under the minimum
    assert sizes(8, 8) == [(0, 5, 8)]
    *_, (_, _, piece, piece_shapes) = batch_pieces(images, shapes, 2, 2)
    assert torch.equal(piece, images[[4, 4]]) and torch.equal(piece_shapes, shapes[[4, 4]])
    assert list(batch_pieces(images[:0], shapes[:0], 2, 2)) == []
    with pytest.raises(ValueError, match="min_batch <= max_batch"):
        list(batch_pieces(images, shapes, 2, 3))


def fixed_batch_run(batch: int, calls: list[int]):
    """A ``run`` that, like a fixed-batch engine, takes exactly ``batch`` images; one detection per
    image, its score the image's mean, its box (0, 0, w, h) of its image_shapes."""

    def run(images: torch.Tensor, image_shapes: torch.Tensor) -> DetOutputs:
        calls.append(images.shape[0])
        assert images.shape[0] == batch and image_shapes.shape[0] == batch
        hw = image_shapes.flip(1)
        boxes = torch.cat([torch.zeros_like(hw), hw], dim=1).unsqueeze(1)
        return DetOutputs(torch.ones(batch, dtype=torch.int32), boxes, images.mean(dim=(1, 2, 3)).unsqueeze(1),
                          torch.zeros(batch, 1, dtype=torch.int32))

    return run


def test_infer_in_pieces_drops_the_padding():
    images = torch.randn(5, 3, 8, 16, generator=torch.Generator().manual_seed(1))
    metas = batch_of(images)
    calls: list[int] = []
    dets = infer_in_pieces(fixed_batch_run(2, calls), images, metas, max_batch=2, min_batch=2)
    assert calls == [2, 2, 2] and len(dets) == 5
    for i, det in enumerate(dets):
        torch.testing.assert_close(det.scores, images[i].mean().reshape(1))
        h, w = metas[i]["img_shape"]
        torch.testing.assert_close(det.boxes, torch.tensor([[0.0, 0.0, w, h]]))


class FakeTensorRT:
    """The names of the ``tensorrt`` module the backend uses."""

    float32, float16, int32, bool = "float32", "float16", "int32", "bool"

    class TensorIOMode:
        INPUT, OUTPUT = "input", "output"


class FakeEngineContext:
    """A fixed-batch engine (profile min = max = ``batch``) and its execution context, on the CPU.

    Like TensorRT it refuses an input shape outside the profile. It records which device was
    current (``current[0]``, set by the patched ``torch.cuda.device``) at each call, and writes one
    detection per image: score = the image's h from ``image_shapes``.
    """

    SHAPES = {"num_dets": (), "boxes": (1, 4), "scores": (1,), "labels": (1,)}

    def __init__(self, batch: int, current: list):
        self.batch, self.current = batch, current
        self.devices: list = []
        self.batches: list[int] = []
        self.addresses: dict[str, int] = {}

    def get_tensor_dtype(self, name: str) -> str:
        return FakeTensorRT.int32 if name in ("num_dets", "labels") else FakeTensorRT.float32

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        self.devices.append(self.current[0])
        self.batches.append(shape[0])
        return shape[0] == self.batch

    def set_tensor_address(self, name: str, address: int) -> None:
        self.devices.append(self.current[0])
        self.addresses[name] = address

    def get_tensor_shape(self, name: str) -> tuple:
        return (self.batch, *self.SHAPES[name])

    def execute_async_v3(self, stream: int) -> bool:
        import ctypes

        self.devices.append(self.current[0])
        shapes = (ctypes.c_float * (2 * self.batch)).from_address(self.addresses["image_shapes"])
        (ctypes.c_int32 * self.batch).from_address(self.addresses["num_dets"])[:] = [1] * self.batch
        (ctypes.c_float * self.batch).from_address(self.addresses["scores"])[:] = list(shapes[0::2])
        (ctypes.c_float * (4 * self.batch)).from_address(self.addresses["boxes"])[:] = [0.0] * (4 * self.batch)
        (ctypes.c_int32 * self.batch).from_address(self.addresses["labels"])[:] = [0] * self.batch
        return True


class FakeStream:
    cuda_stream = 0

    def wait_stream(self, other) -> None:
        pass


def test_tensorrt_backend_pads_for_a_fixed_batch_engine_on_its_device(monkeypatch):
    """A batch of 3 on an engine of fixed batch 2: two runs of 2 (the second padded), 3 detections,
    and every call to the context made with the backend's device current. The fake runs on the
    CPU; what is checked is that run() enters torch.cuda.device(backend.device)."""
    current: list = [None]

    class Device:
        def __init__(self, device):
            self.device = device

        def __enter__(self):
            self.previous, current[0] = current[0], self.device

        def __exit__(self, *exc):
            current[0] = self.previous

    monkeypatch.setattr(torch.cuda, "device", Device)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeStream())
    backend = TensorRTBackend.__new__(TensorRTBackend)
    engine = FakeEngineContext(2, current)
    backend.path, backend.device = "fake.engine", torch.device("cpu")
    backend.trt, backend.meta = FakeTensorRT, fake_metadata()
    backend.engine = backend.context = engine
    backend.stream = FakeStream()
    backend.header = dataclasses.make_dataclass("Header", ["profiles"])({"images": {"min": [2, 3, 32, 32]}})
    backend.input_names, backend.output_names = ["images", "image_shapes"], ["num_dets", "boxes", "scores", "labels"]
    backend.min_batch = backend.max_batch = 2
    images = torch.randn(3, 3, 32, 64, generator=torch.Generator().manual_seed(2))
    metas = batch_of(images)
    dets = backend.infer(images, metas)
    assert engine.batches == [2, 2, 2, 2]  # images and image_shapes, twice
    assert [float(d.scores) for d in dets] == [float(m["img_shape"][0]) for m in metas]
    assert engine.devices and all(d == backend.device for d in engine.devices)
    assert current[0] is None
    with pytest.raises(BackendError, match="outside the engine's optimization profile"):
        backend.run(images, image_shapes_of(metas))


def image_shapes_of(metas: list[dict]) -> torch.Tensor:
    return torch.tensor([m["img_shape"] for m in metas], dtype=torch.float32)


def test_requested_cuda_falls_back_to_cpu_with_a_note(capsys):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    assert select_providers(["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert "pip install onnxruntime-gpu" in capsys.readouterr().err
    assert select_providers(None) == ["CPUExecutionProvider"]


# ----------------------------------------------------------------------------------- load_backend


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is installed")
def test_tensorrt_backend_without_tensorrt(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"DTTRTENG" + bytes(64))
    with pytest.raises(BackendError) as info:
        load_backend("tensorrt", engine)
    assert str(info.value) == TENSORRT_HINT
    assert str(info.value).startswith("TensorRT is not installed") and "pip install tensorrt" in str(info.value)


def test_load_backend_errors(tmp_path):
    with pytest.raises(BackendError, match="engine file not found"):
        load_backend("tensorrt", tmp_path / "missing.engine")
    with pytest.raises(BackendError, match="unknown backend"):
        load_backend("openvino", tmp_path / "m.xml")


# ----------------------------------------------------------------------------------- torch backend


def test_torch_backend_is_model_predict(tiny_synth, tmp_path):
    cfg = load_config(FASTER_RCNN, tiny_sets(tiny_synth))
    model = random_detector(cfg)
    checkpoint = tmp_path / "faster.pth"
    torch.save({"model": model.state_dict()}, checkpoint)
    backend = TorchBackend.from_checkpoint(cfg, checkpoint, "cpu")
    dataset = builder.build_dataset(cfg, "val")
    images, _, metas = next(iter(builder.build_dataloader(cfg, dataset, train=False, batch_size=2)))
    with torch.no_grad():
        ref = model.predict(images, metas)
    got = backend.infer(images, metas)
    assert sum(len(d) for d in ref) > 0
    for r, d in zip(ref, got):
        assert torch.equal(r.boxes, d.boxes) and torch.equal(r.scores, d.scores) and torch.equal(r.labels, d.labels)
    wrong = load_config(MASK_RCNN, tiny_sets(tiny_synth))
    with pytest.raises(CheckpointError, match="does not match the config's model"):
        TorchBackend.from_checkpoint(wrong, checkpoint, "cpu")


# ----------------------------------------------------------------------------------- exported tiny Mask R-CNN


def assert_same(ref, got, box_atol: float = 1e-3, score_atol: float = 1e-4, mask_flips: float = 1e-3) -> None:
    """Same detections up to float noise (a box edge moved by 1e-4 px can flip a pasted mask pixel)."""
    assert len(ref) == len(got)
    for r, d in zip(ref, got):
        assert len(r) == len(d)
        assert torch.equal(r.labels.cpu(), d.labels.cpu())
        torch.testing.assert_close(d.boxes.cpu(), r.boxes.cpu(), atol=box_atol, rtol=0)
        torch.testing.assert_close(d.scores.cpu(), r.scores.cpu(), atol=score_atol, rtol=0)
        assert (r.masks.cpu() != d.masks.cpu()).float().mean() <= mask_flips


def val_batch(cfg, size: int):
    dataset = builder.build_dataset(cfg, "val")
    images, _, metas = next(iter(builder.build_dataloader(cfg, dataset, train=False, batch_size=size)))
    return images, metas


@pytest.mark.slow
@pytest.mark.parametrize("flavour", ["custom", "portable"])
def test_onnxruntime_equals_torch(tiny_export, flavour):
    cfg = tiny_export.cfg()
    engine = load_backend("onnxruntime", getattr(tiny_export, flavour), "cpu")
    assert engine.meta.flavour == flavour and engine.meta.with_masks and engine.fixed_batch is None
    assert bool(engine.meta.custom_ops) == (flavour == "custom")
    torch_backend = TorchBackend.from_checkpoint(cfg, tiny_export.checkpoint, "cpu")
    images, metas = val_batch(cfg, 3)
    assert len({m["img_shape"] for m in metas}) > 1  # varied sizes, padded into one batch
    ref = torch_backend.infer(images, metas)
    assert sum(len(d) for d in ref) > 0
    assert_same(ref, engine.infer(images, metas))


@pytest.mark.slow
def test_batch_of_three_equals_batches_of_one(tiny_export):
    engine = OnnxRuntimeBackend(tiny_export.custom)
    images, metas = val_batch(tiny_export.cfg(), 3)
    singles = [engine.infer(images[i:i + 1], metas[i:i + 1])[0] for i in range(3)]
    assert_same(singles, engine.infer(images, metas))


@pytest.mark.slow
def test_exported_graph_with_batch_fixed_at_one(tiny_export, tmp_path, capsys):
    """The dynamic graph with its batch pinned to 1 (as an export without --dynamic-batch) runs
    a batch of three image by image, with one note."""
    model = onnx.load(str(tiny_export.custom))
    for value in model.graph.input:
        value.type.tensor_type.shape.dim[0].dim_value = 1
    path = tmp_path / "fixed.onnx"
    onnx.save(model, path)
    engine = OnnxRuntimeBackend(path)
    assert engine.fixed_batch == 1
    images, metas = val_batch(tiny_export.cfg(), 3)
    assert_same(OnnxRuntimeBackend(tiny_export.custom).infer(images, metas), engine.infer(images, metas))
    assert capsys.readouterr().err.count("fixed batch of 1") == 1


@pytest.mark.slow
def test_export_command_says_what_it_wrote(tiny_export):
    """The session's custom-op graph was written by ``dettool export --to onnx``."""
    lines = tiny_export.export_stdout.splitlines()
    assert lines[0].startswith("dettool: exporting ") and "to ONNX" in lines[0]
    assert lines[-1].startswith(f"dettool: wrote {tiny_export.custom} (")
    for fragment in ("MB;", "mask_rcnn, opset 19, fp32, batch dynamic",
                     "custom ops: DettoolBatchedNMS, DettoolMultiLevelRoIAlign",
                     f"metadata sidecar {sidecar_path(tiny_export.custom)}"):
        assert fragment in lines[-1]
    assert sidecar_path(tiny_export.custom).is_file()
