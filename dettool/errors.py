"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class DettoolError(Exception):
    """An error caused by the user's input (config, files, data), reported without a traceback."""


class ConfigError(DettoolError):
    """A config file or override is invalid; the message names the file and key."""


class DataError(DettoolError):
    """A dataset, annotation file or image is missing or malformed; the message names the file."""


class CheckpointError(DettoolError):
    """A checkpoint is missing, corrupt or does not match the model."""


class TrainingDiverged(DettoolError):
    """The loss became NaN or infinite; training stopped, the last good checkpoint is kept."""


class ExportError(DettoolError):
    """A model, op or setting the exporter cannot carry into a deploy graph (the message names it)."""


class BackendError(DettoolError):
    """A deploy file cannot be run by the chosen backend (corrupt, wrong backend, missing runtime)."""
