"""`PretrainObjective`: the search objective that pre-trains one model per grid point and returns its run record."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hf_infcompute.errors import InputError
from hf_infcompute.search.grid import RUN_AXES, Point

if TYPE_CHECKING:  # the search engine imports no training stack (the package itself loads torch to register)
    from hf_infcompute.training.config import RunConfig


@dataclass(frozen=True)
class PretrainObjective:
    """Pre-train `run` at a grid point with `hf_infcompute.training.pretrain`, into `output_dir`.

    A point's coordinates are run settings (`learning_rate`, `num_train_epochs`, `weight_decay`) that replace the
    run's own. Runs and their records land in `output_dir/runs/` and `output_dir/results/` (so
    `load_runs(output_dir)` lists every run of the sweep). Returns the run record, whose `val_loss` the search
    minimises, its folders relative to `output_dir` (`records.relative_paths`); a run that does not finish raises,
    and the search records the point as failed.
    """

    run: RunConfig
    output_dir: str | os.PathLike

    def run_for(self, point: Point) -> RunConfig:
        """The run of a grid point (validated: a standard recipe refuses a weight decay other than 0.1)."""
        unknown = sorted(set(point) - set(RUN_AXES))
        if unknown:
            raise InputError(
                f"pre-training has no setting for the search coordinates {unknown}: search only {list(RUN_AXES)}"
            )
        return self.run.replace(**point)

    def binding(self, axes: Iterable[str]) -> dict[str, Any]:
        """The settings a sweep over `axes` is tied to: the run's identity without the searched coordinates."""
        searched = set(axes)
        return {key: value for key, value in self.run.identity().items() if key not in searched}

    def __call__(self, point: Point) -> dict[str, Any]:
        from hf_infcompute.training import pretrain

        return _finished(pretrain(self.run_for(point), str(self.output_dir)), self.output_dir)


# The coordinate of a fresh-seed copy: the seed offset of `hf_infcompute.ensemble.members.member_config`.
SEED_OFFSET = "seed_offset"


@dataclass(frozen=True)
class FreshSeedObjective:
    """Pre-train `run` at a grid point with fresh seeds: a point's `seed_offset` i > 0 trains the run that ensemble
    member i of that point is (`member_config`, seeds offset by i), recorded as that member, so a copy trained here
    is never trained again as a member, nor the reverse."""

    run: RunConfig
    output_dir: str | os.PathLike

    def __call__(self, point: Point) -> dict[str, Any]:
        from hf_infcompute.ensemble.members import train_member

        coordinates = {name: value for name, value in point.items() if name != SEED_OFFSET}
        run = PretrainObjective(self.run, self.output_dir).run_for(coordinates)
        return _finished(train_member(run, self.output_dir, int(point[SEED_OFFSET])), self.output_dir)


def _finished(record: dict[str, Any], output_dir: str | os.PathLike) -> dict[str, Any]:
    """A run's record with its folders relative to `output_dir`; a run that did not finish raises (the search
    records its point as failed)."""
    from hf_infcompute.records import relative_paths

    if record.get("status") != "finished":
        raise RuntimeError(f"run {record.get('run_id')} ended {record.get('status')}: {record.get('error')}")
    return relative_paths(dict(record), output_dir)
