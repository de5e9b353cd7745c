"""dettool.trainer: models (backbone, neck, heads), the hook-driven runner and its hooks."""
