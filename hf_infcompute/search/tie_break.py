"""Tie-breaks within the seed noise: the choice among a search's optimum and its close neighbours, made on fresh seeds.

A search compares points on one seed each, so its optimum and a neighbour that differ by less than the seed noise
are ranked by chance. Here both are re-trained at fresh seeds and the point with the lower mean over those seeds is
chosen. The fresh seeds alone decide: the search's own runs were picked for being low, so their losses are biased
towards the winner; fresh draws are not.

"Within the seed noise" means a seed-0 gap below one standard deviation of the difference of two single-seed runs,
sqrt(2) x the seed sd. Before the study has measured a seed sd, the runner-up alone is re-trained, which also
measures one: its copies and the optimum's are fresh seeds of the same points.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from hf_infcompute.search.coordinate_descent import Objective, SearchResult, evaluate_points
from hf_infcompute.search.grid import point_label
from hf_infcompute.search.pretrain_objective import SEED_OFFSET
from hf_infcompute.search.store import PointResult, SweepStore, point_key


@dataclass(frozen=True)
class TieBreak:
    """The outcome of a tie-break: the chosen point, the candidates (the search's optimum first) and, per candidate
    (`point_label`), its fresh-seed losses."""

    chosen: PointResult
    candidates: tuple[PointResult, ...]
    fresh_losses: dict[str, list[float]]

    @property
    def compared_run_ids(self) -> list[str]:
        """The seed-0 runs of the candidates (picked for landing close to the optimum, so no sample of the seed sd)."""
        return [c.extra["run_id"] for c in self.candidates if c.extra.get("run_id")]

    @property
    def changed(self) -> bool:
        """Whether the fresh seeds chose another point than the search's optimum."""
        return self.chosen.point != self.candidates[0].point


def close_candidates(result: SearchResult, seed_sd: float | None) -> list[PointResult]:
    """The optimum and its finished neighbours within the seed noise of it (the optimum first, then by loss); the
    runner-up only where `seed_sd` is None."""
    if result.best is None or not result.locally_optimal:
        return []
    finished = sorted((n for n in result.neighbours if not n.failed), key=lambda n: n.loss)
    if seed_sd is None:
        return [result.best, *finished[:1]]
    threshold = math.sqrt(2) * seed_sd
    return [result.best, *(n for n in finished if n.loss - result.best.loss < threshold)]


def break_tie(
    objective: Objective,
    result: SearchResult,
    store: SweepStore,
    seeds: int,
    seed_sd: float | None,
    *,
    worker_id: str | None = None,
) -> TieBreak | None:
    """Re-train the close candidates of `result` (`close_candidates`) at `seeds` fresh seeds each through
    `objective` (which reads a point's `SEED_OFFSET`), sharing the work through `store`, and choose on seed means;
    None when there is nothing to break (no optimum, no close neighbour, or `seeds` is 0)."""
    candidates = close_candidates(result, seed_sd)
    if seeds < 1 or len(candidates) < 2:
        return None
    copies = {point_key(c.point): [{**c.point, SEED_OFFSET: i} for i in range(1, seeds + 1)] for c in candidates}
    results = evaluate_points(
        objective, [copy for group in copies.values() for copy in group], store, worker_id=worker_id
    )
    fresh = {
        point_label(candidate.point): [results[point_key(copy)].loss for copy in copies[point_key(candidate.point)]]
        for candidate in candidates
    }
    means = {label: _mean(losses) for label, losses in fresh.items()}
    # Lower seed mean first; on a tie the search's optimum (the first candidate) keeps its place.
    chosen = min(candidates, key=lambda c: (means[point_label(c.point)], candidates.index(c)))
    return TieBreak(chosen, tuple(candidates), fresh)


def _mean(losses: list[float]) -> float:
    """The mean over a candidate's fresh seeds; a failed copy (infinite loss) makes the candidate lose."""
    return statistics.fmean(losses) if all(math.isfinite(loss) for loss in losses) else math.inf
