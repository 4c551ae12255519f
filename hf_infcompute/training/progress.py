"""One line per run instead of the Trainer's log dicts, for runs made inside `follow_runs` (a study's).

`follow_runs(listener)` makes every run that `pretrain` builds in its scope drop the Trainer's own log printing
(`PrinterCallback`, or `ProgressCallback` without `disable_tqdm`) for a `RunLineCallback`, which hands the run's
description, validation loss and wall time to `listener` once the run's final evaluation is in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Protocol

from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback


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


class RunLineCallback(TrainerCallback):
    """Calls `listener.run_ended` at the first evaluation after training (the run's validation loss)."""

    def __init__(self, description: str, listener: RunListener) -> None:
        self.description = description
        self.listener = listener
        self._started = time.perf_counter()
        self._trained = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._started = time.perf_counter()
        self._trained = False

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._trained = True

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> None:
        if not (self._trained and metrics and "eval_loss" in metrics):
            return
        self._trained = False
        if state.is_world_process_zero:
            point = f"lr={args.learning_rate:g} epochs={args.num_train_epochs:g} wd={args.weight_decay:g}"
            self.listener.run_ended(
                Path(args.output_dir).name,
                f"{self.description} {point}",
                metrics["eval_loss"],
                time.perf_counter() - self._started,
            )


def follow_run(trainer: Trainer, description: str) -> None:
    """Inside `follow_runs`: replace `trainer`'s log printing by one line at the run's end; elsewhere, nothing."""
    listener = _LISTENER.get()
    if listener is None:
        return
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(RunLineCallback(description, listener))
