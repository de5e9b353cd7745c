"""RoI heads: per-region box classification and regression (two-stage detectors)."""
