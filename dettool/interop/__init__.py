"""Bringing other tools' detectors into dettool: MMDetection configs and checkpoints."""
