"""TensorRT backend: a dettool engine file run with the name-based tensor API on a CUDA stream.

Inputs and outputs live in torch CUDA tensors whose addresses are handed to the execution
context (``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) with the engine's GPU
current; the context runs on the backend's own stream, which first waits for the stream that
produced the inputs. A batch is fed in pieces the optimization profile accepts (``max`` images at
most, a short last piece padded up to ``min``: ``runtime.backend.infer_in_pieces``).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from dettool.errors import BackendError
from dettool.runtime.backend import Backend, infer_in_pieces
from dettool.runtime.engine_file import check_compatible, read_engine
from dettool.runtime.tensorrt_env import tensorrt_env
from dettool.structures.detections import Detections, DetOutputs


def torch_dtype(trt, dtype) -> torch.dtype:
    """TensorRT ``DataType`` -> torch dtype (the types a dettool graph uses)."""
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.bool: torch.bool}
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    if dtype not in table:
        raise BackendError(f"engine tensor type {dtype} is not one dettool graphs use")
    return table[dtype]


class TensorRTBackend(Backend):
    """Run a dettool TensorRT engine on a CUDA device.

    Args:
        path: engine file written by ``dettool export --to tensorrt``.
        device: CUDA device (default ``cuda``).

    Refuses (``BackendError``, saying why) an engine built with another TensorRT version, for
    another GPU architecture or with another dettool plugin library.
    """

    name = "tensorrt"

    def __init__(self, path: str | Path, device: str | torch.device = "cuda") -> None:
        self.path = Path(path)
        header, plan = read_engine(self.path)
        self.device = torch.device(device)
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise BackendError(f"{self.path}: the tensorrt backend needs a CUDA device")
        # the engine's own record of its precision (engines of older dettool builds may differ from the graph's)
        self.meta = replace(header.metadata(str(self.path)), precision=header.precision)
        env = tensorrt_env(require_plugins=bool(self.meta.custom_ops))
        major, minor = torch.cuda.get_device_capability(self.device)
        check_compatible(header, self.path, env.version, f"{major}.{minor}", env.plugin_sha256)
        self.trt = env.trt
        self.header = header
        with torch.cuda.device(self.device):
            self.runtime = self.trt.Runtime(env.logger)
            self.engine = self.runtime.deserialize_cuda_engine(plan)
            if self.engine is None:
                raise BackendError(f"{self.path}: TensorRT could not deserialize the engine")
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        images_profile = header.profiles.get("images", {})
        self.max_batch = max(1, int(images_profile.get("max", [1])[0]))
        self.min_batch = min(self.max_batch, max(1, int(images_profile.get("min", [1])[0])))

    def run(self, images: torch.Tensor, image_shapes: torch.Tensor) -> DetOutputs:
        """Execute the engine on one batch (``images [B, 3, H, W]``, ``image_shapes [B, 2]``), B in
        the profile's batch range."""
        # The context, its tensors and its stream belong to self.device: TensorRT runs on the
        # current device, which need not be it.
        with torch.cuda.device(self.device):
            return self._execute(images, image_shapes)

    def _execute(self, images: torch.Tensor, image_shapes: torch.Tensor) -> DetOutputs:
        feeds = {"images": images.to(self.device, torch.float32).contiguous(),
                 "image_shapes": image_shapes.to(self.device, torch.float32).contiguous()}
        for name in self.input_names:
            if not self.context.set_input_shape(name, tuple(feeds[name].shape)):
                raise BackendError(f"{self.path}: input {name} of shape {tuple(feeds[name].shape)} is outside the "
                                   f"engine's optimization profile {self.header.profiles.get(name)}")
            self.context.set_tensor_address(name, feeds[name].data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = torch.empty(shape, dtype=torch_dtype(self.trt, self.engine.get_tensor_dtype(name)),
                                        device=self.device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise BackendError(f"{self.path}: TensorRT failed to execute the engine")
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        return DetOutputs(outputs["num_dets"], outputs["boxes"], outputs["scores"], outputs["labels"],
                          outputs.get("masks"))

    def infer(self, images: torch.Tensor, metas: list[dict]) -> list[Detections]:
        return infer_in_pieces(self.run, images, metas, max_batch=self.max_batch, min_batch=self.min_batch,
                               mask_thr=self.meta.postprocess.mask_thr, mask_paste=self.meta.postprocess.mask_paste)
