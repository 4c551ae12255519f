"""How far a study is: runs finished out of an estimate of those it plans, and the time left at the pace so far."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from hf_infcompute.records import iter_records
from hf_infcompute.search import SearchGrid
from hf_infcompute.study.spec import StudySpec

# Records written from other records (no training of their own): not runs.
_DERIVED_KINDS = ("ensemble", "soup")


def search_runs_estimate(grid: SearchGrid) -> int:
    """Runs one coordinate descent is expected to train: the start, its neighbours and one move's new neighbours
    (two per free axis each), at most the whole grid. An estimate: the real count depends on the path."""
    free_axes = sum(1 for n in grid.shape if n > 1)
    return min(grid.size, 1 + 4 * free_axes)


def planned_runs(spec: StudySpec, grids: Sequence[SearchGrid]) -> int:
    """An estimate of the runs `spec` trains: its searches (one grid each), the ensemble members, the students."""
    ensemble = spec.ensemble
    # tune_k members per candidate; the full ensemble adds k - tune_k to the chosen candidate's
    per_preset = ensemble.tune_k * len(ensemble.member_candidates) + ensemble.k - ensemble.tune_k
    members = len(ensemble.presets or spec.presets) * per_preset
    distillation = spec.distillation
    teachers = 1 + distillation.self_distillation + distillation.token_level
    students = teachers * len(distillation.weight_decay)
    return sum(search_runs_estimate(grid) for grid in grids) + members + students


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class StudyProgress:
    """A `RunListener` that prints one line per run: what ran, its validation loss and time, and the study's
    progress. Finished runs are counted in the results store (earlier sessions and other workers included); the time
    left is the runs left times this process's mean time per run."""

    def __init__(self, output_dir: str | Path, planned: int, study: str) -> None:
        self.output_dir = Path(output_dir)
        self.planned = planned
        self.study = study
        self.wall_times: list[float] = []

    def finished(self, run_id: str) -> int:
        """Runs recorded so far, counting `run_id` (ending now, whether or not its record is written yet)."""
        ids = {r["run_id"] for r in iter_records(self.output_dir) if r.get("kind") not in _DERIVED_KINDS}
        return len(ids | {run_id})

    def line(self, run_id: str, description: str, val_loss: float, wall_time_s: float) -> str:
        self.wall_times.append(wall_time_s)
        done = self.finished(run_id)
        planned = max(self.planned, done)
        left = (planned - done) * statistics.fmean(self.wall_times)
        return (
            f"{description}: val loss {val_loss:.4f} in {_duration(wall_time_s)} | study: {done} of ~{planned} runs "
            f"(estimated), ~{_duration(left)} left"
        )

    def run_ended(self, run_id: str, description: str, val_loss: float, wall_time_s: float) -> None:
        print(self.line(run_id, description, val_loss, wall_time_s), flush=True)
