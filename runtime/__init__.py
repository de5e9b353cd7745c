"""dettool.runtime: inference backends (torch, onnxruntime, tensorrt) behind one interface.

The backends arrive with issue 4 (torch, onnxruntime) and issue 5 (tensorrt).
"""
