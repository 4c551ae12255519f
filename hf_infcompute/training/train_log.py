"""A run's training curve: the Trainer's per-logging-step training entries, small enough to keep in its record."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# What each logging step of `Trainer.train` reports; evaluation entries and the final summary are left out.
TRAIN_LOG_KEYS = ("step", "epoch", "loss", "learning_rate", "grad_norm")


def training_log(log_history: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The training entries of `TrainerState.log_history` (those with a `loss`), each cut to `TRAIN_LOG_KEYS`.

    A resumed run's history is the checkpoint's plus what followed, so its log covers the whole run.
    """
    return [{key: entry[key] for key in TRAIN_LOG_KEYS if key in entry} for entry in log_history if "loss" in entry]
