"""One line per run instead of the Trainer's log dicts, for runs made inside `follow_runs` (a study's).

`follow_runs(listener)` makes every run that `pretrain` builds in its scope drop the Trainer's own log printing
(`PrinterCallback`, or `ProgressCallback` without `disable_tqdm`); once the run is recorded, `announce_run` hands its
description, validation loss and wall time to `listener`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from transformers import PrinterCallback, ProgressCallback, Trainer


class RunListener(Protocol):
    """Told of each run that ends inside `follow_runs`; `study` names the study the runs belong to."""

    study: str

    def run_ended(self, run_id: str, description: str, val_loss: float, wall_time_s: float) -> None: ...


_LISTENER: ContextVar[RunListener | None] = ContextVar("hf_infcompute_run_listener", default=None)


@contextmanager
def follow_runs(listener: RunListener) -> Iterator[RunListener]:
    """Within this block, runs report to `listener` (`follow_run`) instead of printing their logs."""
    token = _LISTENER.set(listener)
    try:
        yield listener
    finally:
        _LISTENER.reset(token)


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
