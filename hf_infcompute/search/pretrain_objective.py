"""`PretrainObjective`: the search objective that pre-trains one model per grid point and returns its run record."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hf_infcompute.errors import InputError
from hf_infcompute.search.grid import EPOCHS, LEARNING_RATE, WEIGHT_DECAY, Point

# Search coordinate -> the recipe key that sets it.
CONFIG_KEYS = {LEARNING_RATE: "learning_rate", EPOCHS: "num_train_epochs", WEIGHT_DECAY: "weight_decay"}


@dataclass(frozen=True)
class PretrainObjective:
    """Pre-train the recipe `config` at a grid point with `hf_infcompute.training.pretrain`, into `output_dir`.

    `config` is the flat recipe (corpus, token_budget, preset, seed, ...); the point's coordinates replace its
    `learning_rate`, `num_train_epochs` and `weight_decay`. Runs and their records land in `output_dir/runs/` and
    `output_dir/results/` (so `load_runs(output_dir)` lists every run of the sweep). Returns the run record, whose
    `val_loss` the search minimises; a run that does not finish raises, and the search records the point as failed.
    """

    config: Mapping[str, Any]
    output_dir: str | os.PathLike

    def config_for(self, point: Point) -> dict[str, Any]:
        unknown = sorted(set(point) - set(CONFIG_KEYS))
        if unknown:
            raise InputError(
                f"pre-training has no setting for the search coordinates {unknown}: search only {sorted(CONFIG_KEYS)}"
            )
        return {**self.config, **{CONFIG_KEYS[name]: value for name, value in point.items()}}

    def __call__(self, point: Point) -> dict[str, Any]:
        # Imported on use: the search engine itself stays free of torch and the training stack.
        from hf_infcompute.training import pretrain

        record = pretrain(self.config_for(point), str(self.output_dir))
        if record.get("status") != "finished":
            raise RuntimeError(f"run {record.get('run_id')} ended {record.get('status')}: {record.get('error')}")
        return dict(record)
