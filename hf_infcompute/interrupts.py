"""Ctrl-C and SIGTERM: a run stops with its last checkpoint saved and one line saying how to resume.

SIGTERM (what a cluster scheduler sends some seconds before it kills a job) asks the training in progress to save a
checkpoint at the end of its current step and stop (`StopOnSignal`, the Trainer's own `should_save` and
`should_training_stop`); `pretrain` then raises `Interrupted` instead of recording the run. When no step ends within
`SIGTERM_GRACE_S` seconds, or no training is in progress, the process stops at once, as after Ctrl-C: the last whole
checkpoint stays, and a rerun of the same command resumes from it.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

# How long a SIGTERM waits for the current step to end and its checkpoint to be written.
SIGTERM_GRACE_S = 20.0


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop (Ctrl-C or SIGTERM); `signal_name` says which."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class _Progress:
    """What the process has asked for and saved so far (one per process: signals reach the process)."""

    stop_requested: str | None = None
    training: int = 0
    last_checkpoint: str | None = None
    deadline: threading.Timer | None = None


PROGRESS = _Progress()


def last_saved() -> str | None:
    """The newest checkpoint this process saved, or None."""
    return PROGRESS.last_checkpoint


@contextmanager
def training() -> Iterator[None]:
    """Around `Trainer.train`: a SIGTERM meanwhile stops it after a checkpoint, and `Interrupted` is raised after."""
    PROGRESS.training += 1
    try:
        yield
    finally:
        PROGRESS.training -= 1
        if PROGRESS.deadline is not None:
            PROGRESS.deadline.cancel()
            PROGRESS.deadline = None
    if PROGRESS.stop_requested is not None:
        raise Interrupted(PROGRESS.stop_requested)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if PROGRESS.training and PROGRESS.stop_requested is None:
        PROGRESS.stop_requested = "SIGTERM"  # the training saves and stops at the end of its step
        # Then a second SIGTERM, to the main thread (it wakes a blocking call), stops the process at once.
        main = threading.main_thread().ident
        PROGRESS.deadline = threading.Timer(SIGTERM_GRACE_S, signal.pthread_kill, args=(main, signal.SIGTERM))
        PROGRESS.deadline.daemon = True
        PROGRESS.deadline.start()
        return
    raise Interrupted("SIGTERM")


def _default_in_child() -> None:
    """A forked child (a `datasets` or DataLoader worker) dies of SIGTERM as usual: process pools end their workers
    with it, and a worker waiting on a lock would never run a Python handler."""
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_default_in_child)


@contextmanager
def handling_sigterm() -> Iterator[None]:
    """SIGTERM handled as this module says while inside (in the main thread; elsewhere signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        PROGRESS.stop_requested = None


class StopOnSignal(TrainerCallback):
    """Saves a checkpoint and stops training at the end of the step during which a SIGTERM arrived; notes every
    checkpoint saved, for the line that says what was kept."""

    def on_step_end(self, args, state, control, **kwargs):
        if PROGRESS.stop_requested is not None:
            control.should_save = True
            control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        PROGRESS.last_checkpoint = str(Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
