"""Run ids: a record's name, built from the settings that decide its result (deterministic, no clock or host)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def training_run_id(
    identity: Mapping[str, Any],
    *,
    recipe: str,
    model: str,
    token_budget: int,
    learning_rate: float,
    weight_decay: float,
    num_train_epochs: float,
    seed: int,
) -> str:
    """The id of one training run: its headline settings, then a digest of every setting in `identity`."""
    digest = _digest(json.dumps(dict(identity), sort_keys=True, default=str))
    return (
        f"{recipe}-{Path(model).name}-D{token_budget}-lr{learning_rate:g}-wd{weight_decay:g}"
        f"-ep{num_train_epochs:g}-s{seed}-{digest}"
    )


def ensemble_run_id(model: str, token_budget: int, member_ids: Sequence[str], combine: str = "logits") -> str:
    """The id of the logit (or probability) ensemble of `member_ids`, in order."""
    return f"ensemble-{Path(model).name}-D{token_budget}-K{len(member_ids)}-{_digest('|'.join(member_ids) + combine)}"


def soup_run_id(model: str, token_budget: int, member_ids: Sequence[str]) -> str:
    """The id of the weight average of `member_ids`."""
    return f"soup-{Path(model).name}-D{token_budget}-K{len(member_ids)}-{_digest('|'.join(member_ids) + 'soup')}"
