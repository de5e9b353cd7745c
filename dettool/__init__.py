"""dettool: train MMDetection-style detectors and carry them to verified deployment."""

__version__ = "0.1.0"
