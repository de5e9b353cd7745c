"""dettool.exporters: wrappers that turn trained detectors into deployable graphs.

Export code lives here, never in model code: each step is named by what goes in and what
comes out (torch2onnx, fp16, onnx2trt). The ONNX and TensorRT steps arrive with issues 4 and 5.
"""
