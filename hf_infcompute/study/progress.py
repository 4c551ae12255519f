"""How far a study is: runs finished out of an estimate of those it plans, and the time left at the pace so far."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path

from hf_infcompute.method import STANDARD_WEIGHT_DECAY
from hf_infcompute.records import read_record, results_dir
from hf_infcompute.search import SearchGrid
from hf_infcompute.search.grid import WEIGHT_DECAY
from hf_infcompute.study.search_counts import free_axes, tie_break_members, tie_break_runs
from hf_infcompute.study.search_plan import STANDARD_START, search_nodes, start_sources
from hf_infcompute.study.spec import OPTIMUM, StudySpec

# Records written from other records (no training of their own): not runs.
_DERIVED_KINDS = ("ensemble", "soup")


def search_runs_estimate(grid: SearchGrid) -> int:
    """Runs one coordinate descent is expected to train: the start, its neighbours and one move's new neighbours
    (two per free axis each), at most the whole grid. An estimate: the real count depends on the path."""
    return min(grid.size, 1 + 4 * free_axes(grid))


def further_start_estimate(grid: SearchGrid, label: str) -> int:
    """Runs a search adds from a start after its first (`search_plan.start_sources`, e.g. a regularized search's
    start at the standard optimum): that point and its neighbours, two per free axis, less, from the standard
    optimum, the one below the standard weight decay when that is the grid's smallest. An estimate: some of them the
    search from its first start may have trained, and a move adds more."""
    decays = grid.axes.get(WEIGHT_DECAY, ())
    below_edge = label == STANDARD_START and len(decays) > 1 and min(decays) == STANDARD_WEIGHT_DECAY
    return min(grid.size, 1 + 2 * free_axes(grid) - below_edge)


def members_estimate(spec: StudySpec) -> int:
    """Members the ensembles train: `k` per candidate rule, per preset. The first member of the 'optimum' candidate is
    the search's optimum itself (same run), and its next `tie_break_seeds` the regularized tie-break's fresh seeds at
    that optimum (`tie_break_members`), not trained again."""
    ensemble = spec.ensemble
    reused = (1 + tie_break_members(spec)) if OPTIMUM in ensemble.member_candidates else 0
    per_preset = ensemble.k * len(ensemble.member_candidates) - reused
    return len(ensemble.presets or spec.presets) * per_preset


def search_estimate(spec: StudySpec, grids: Mapping[str, SearchGrid]) -> int:
    """Runs the searches are expected to train (`search_plan.search_nodes`, `grids` holding each recipe's grid): each
    from its first start and from each further start (together at most the grid), and its tie-break
    (`tie_break_seeds` fresh seeds of the best point and of the runner-up). Edge extensions are not expected."""
    runs = 0
    for node in search_nodes(spec):
        grid = grids[node.recipe]
        labels = list(start_sources(spec, node))
        seeds = (spec.standard if node.recipe == "standard" else spec.regularized).tie_break_seeds
        further = sum(further_start_estimate(grid, label) for label in labels[1:])
        runs += min(grid.size, search_runs_estimate(grid) + further)  # the starts share the grid's points
        runs += tie_break_runs(grid, seeds)[0]
    return runs


def after_searches_estimate(spec: StudySpec) -> int:
    """Runs `spec` trains once its searches are over: the ensemble members and the students."""
    distillation = spec.distillation
    teachers = 1 + distillation.self_distillation + distillation.token_level
    return members_estimate(spec) + teachers * len(distillation.weight_decay)


def planned_runs(spec: StudySpec, grids: Mapping[str, SearchGrid]) -> int:
    """An estimate of the runs `spec` trains: its searches (`search_estimate`; `grids`: each recipe's grid), the
    ensemble members, the students."""
    return search_estimate(spec, grids) + after_searches_estimate(spec)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class StudyProgress:
    """A `RunListener` that prints one line per run: what ran, its validation loss and time, and the study's
    progress. Finished runs are counted in the results store (earlier sessions and other workers included); the time
    left is the runs left times this process's mean time per run, shared among the study's `workers`."""

    def __init__(self, output_dir: str | Path, planned: int, study: str, workers: int = 1) -> None:
        self.output_dir = Path(output_dir)
        self.planned = planned
        self.study = study
        self.workers = workers
        self.wall_times: list[float] = []
        self._read: set[str] = set()  # run ids of the store's records read so far (a record's kind never changes)
        self._runs: set[str] = set()  # those of them that trained

    def replan(self, runs_left: int) -> None:
        """Plan on the runs recorded so far and `runs_left` more: once the searches are over, whose count depends on
        the paths they took, the rest is known better."""
        self.planned = self.finished() + runs_left

    def finished(self, run_id: str | None = None) -> int:
        """Runs recorded so far, counting `run_id` (ending now, whether or not its record is written yet). Only
        records new since the last call are read."""
        for path in results_dir(self.output_dir).glob("*.json"):  # one file per run id (`append_record`)
            if path.stem in self._read:
                continue
            record = read_record(self.output_dir, path.stem)
            if record is None:  # corrupt (named in a warning): read again at the next line
                continue
            self._read.add(path.stem)
            if record.get("kind") not in _DERIVED_KINDS:
                self._runs.add(record["run_id"])
        return len(self._runs | ({run_id} if run_id else set()))

    def line(self, run_id: str, description: str, val_loss: float, wall_time_s: float) -> str:
        self.wall_times.append(wall_time_s)
        done = self.finished(run_id)
        planned = max(self.planned, done)
        left = (planned - done) * statistics.fmean(self.wall_times) / self.workers
        return (
            f"{description}: val loss {val_loss:.4f} in {_duration(wall_time_s)} | study: {done} of ~{planned} runs "
            f"(estimated), ~{_duration(left)} left"
        )

    def run_ended(self, run_id: str, description: str, val_loss: float, wall_time_s: float) -> None:
        print(self.line(run_id, description, val_loss, wall_time_s), flush=True)
