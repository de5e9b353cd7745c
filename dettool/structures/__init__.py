"""Detection data shared by training, export and the runtimes: boxes, detections, pasted masks.

Nothing here knows of models, ONNX or training; ``dettool.runtime`` depends on this package
instead of the trainer.
"""
