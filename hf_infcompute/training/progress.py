"""One line per run instead of the Trainer's log dicts, for runs made inside `follow_runs` (a study's).

`follow_runs(listener)` makes every run that `pretrain` builds in its scope drop the Trainer's own log printing
(`PrinterCallback`, or `ProgressCallback` without `disable_tqdm`); once the run is recorded, `announce_run` hands its
description, validation loss and wall time to `listener`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from transformers import PrinterCallback, ProgressCallback, Trainer
from transformers.utils import logging as transformers_logging


class RunListener(Protocol):
    """Told of each run that ends inside `follow_runs`; `study` names the study the runs belong to."""

    study: str

    def run_ended(self, run_id: str, description: str, val_loss: float, wall_time_s: float) -> None: ...


_LISTENER: ContextVar[RunListener | None] = ContextVar("hf_infcompute_run_listener", default=None)


class _OncePerMessage(logging.Filter):
    """Lets each distinct warning through once: transformers repeats some for every run it builds (e.g. that
    `torch_compile` speeds up only recent GPUs), which would bury the runs' lines."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


@contextmanager
def follow_runs(listener: RunListener) -> Iterator[RunListener]:
    """Within this block, runs report to `listener` (`follow_run`) instead of printing their logs; transformers'
    progress bars (one per saved model) are off and each of its warnings is shown once."""
    token = _LISTENER.set(listener)
    filters = {handler: _OncePerMessage() for handler in transformers_logging.get_logger().handlers}
    for handler, once in filters.items():
        handler.addFilter(once)
    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield listener
    finally:
        _LISTENER.reset(token)
        for handler, once in filters.items():
            handler.removeFilter(once)
        if bars:
            transformers_logging.enable_progress_bar()


def current_study() -> str | None:
    """The study whose runs are being made (inside `follow_runs`), or None."""
    listener = _LISTENER.get()
    return None if listener is None else listener.study


def follow_run(trainer: Trainer) -> None:
    """Inside `follow_runs`: drop `trainer`'s log printing (`announce_run` gives the run's line); elsewhere, nothing."""
    if _LISTENER.get() is None:
        return
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def announce_run(record: dict[str, Any], description: str) -> None:
    """Inside `follow_runs`: hand a finished run's record to the listener (its line); elsewhere, nothing."""
    listener = _LISTENER.get()
    if listener is None:
        return
    point = f"lr={record['learning_rate']:g} epochs={record['num_train_epochs']:g} wd={record['weight_decay']:g}"
    listener.run_ended(record["run_id"], f"{description} {point}", record["val_loss"], record["wall_time_s"])
