"""A hook that records every stage it sees; named in test configs as ``recording_hook:RecordingHook``."""
from __future__ import annotations

from dettool.trainer.hooks import STAGES, Hook


class RecordingHook(Hook):
    """Appends ``(stage, epoch, iter)`` to ``calls`` at every stage.

    Args:
        tag: any label, to check that config ``args`` reach the constructor.
    """

    def __init__(self, tag: str = "") -> None:
        self.tag = tag
        self.calls: list[tuple[str, int, int]] = []

    @property
    def stages(self) -> list[str]:
        return [stage for stage, _, _ in self.calls]


def _recorder(stage: str):
    def record(self, runner) -> None:
        self.calls.append((stage, runner.epoch, runner.iter))

    record.__name__ = stage
    return record


for _stage in STAGES:  # one method per stage, so a stage added to STAGES is recorded too
    setattr(RecordingHook, _stage, _recorder(_stage))
