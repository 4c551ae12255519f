"""Run ids: a record's name, built from the settings that decide its result (deterministic, no clock or host).

A setting that names a folder this package wrote (a teacher, a synthetic corpus) enters an id by what the folder holds
(`folder_identity`), not by where it lies, so an output folder keeps its run ids when it is moved.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# The files that say what a folder holds: a saved run's record, a synthetic corpus's manifest.
RUN_RECORD_FILE = "run_record.json"
SYNTHETIC_MANIFEST_FILE = "generation.json"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def folder_identity(value: str) -> str:
    """What the folder `value` holds: `run:<run_id>` for a saved run (model, ensemble, soup), `synthetic:<digest>` of
    a synthetic corpus's settings (its teacher by identity); any other value (a hub id, a foreign folder) as given."""
    folder = Path(value)
    try:
        if (folder / RUN_RECORD_FILE).is_file():
            return f"run:{json.loads((folder / RUN_RECORD_FILE).read_text())['run_id']}"
        if (folder / SYNTHETIC_MANIFEST_FILE).is_file():
            settings = dict(json.loads((folder / SYNTHETIC_MANIFEST_FILE).read_text())["settings"])
            teacher = settings.pop("teacher_id", None) or settings["teacher"]
            return f"synthetic:{_digest(json.dumps({**settings, 'teacher': teacher}, sort_keys=True, default=str))}"
    except (OSError, ValueError, KeyError, TypeError):
        pass  # an unreadable description: the folder is known by its path
    return value


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
