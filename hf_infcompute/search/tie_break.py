"""Tie-breaks within the seed noise: the choice among a search's optimum and its close neighbours, made on fresh seeds.

A search compares points on one seed each, so its optimum and a neighbour that differ by less than the seed noise
are ranked by chance. Here both are re-trained at fresh seeds and the point with the lower mean over those seeds is
chosen. The fresh seeds alone decide: the search's own runs were picked for being low, so their losses are biased
towards the winner; fresh draws are not.

"Within the seed noise" means a seed-0 gap below one standard deviation of the difference of two single-seed runs,
sqrt(2) x the seed sd. Before the study has measured a seed sd, the runner-up alone is re-trained, which also
measures one: its copies and the optimum's are fresh seeds of the same points.

A choice on seed means is certified as the search's own is: where it sits on an edge of the grid, the point past
that edge is trained too (at seed 0 and at the same fresh seeds) and the choice moves there when its mean is lower,
until it is interior or at a hard bound (`continue_past_edge`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from hf_infcompute.errors import InputError
from hf_infcompute.search.coordinate_descent import Objective, SearchResult, evaluate_points
from hf_infcompute.search.grid import SearchGrid, point_label
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
    fresh = _fresh_losses(objective, [c.point for c in candidates], store, seeds, worker_id)
    return TieBreak(_lowest_mean(candidates, fresh), tuple(candidates), fresh)


def _fresh_losses(
    objective: Objective, points: list[dict], store: SweepStore, seeds: int, worker_id: str | None
) -> dict[str, list[float]]:
    """Each of `points` (`point_label`) re-trained at fresh seeds 1..`seeds` through `objective`: their losses."""
    copies = {point_key(p): [{**p, SEED_OFFSET: i} for i in range(1, seeds + 1)] for p in points}
    results = evaluate_points(
        objective, [copy for group in copies.values() for copy in group], store, worker_id=worker_id
    )
    return {point_label(p): [results[point_key(copy)].loss for copy in copies[point_key(p)]] for p in points}


def _lowest_mean(contenders: list[PointResult], fresh: dict[str, list[float]]) -> PointResult:
    """The contender with the lowest fresh-seed mean; on a tie the earlier one (the standing choice) keeps its
    place."""
    means = {point_label(c.point): _mean(fresh[point_label(c.point)]) for c in contenders}
    return min(contenders, key=lambda c: (means[point_label(c.point)], contenders.index(c)))


def _mean(losses: list[float]) -> float:
    """The mean over a candidate's fresh seeds; a failed copy (infinite loss) makes the candidate lose."""
    return statistics.fmean(losses) if all(math.isfinite(loss) for loss in losses) else math.inf


def continue_past_edge(
    objective: Objective,
    fresh_objective: Objective,
    tie: TieBreak,
    grid: SearchGrid,
    search_store: SweepStore,
    seeds_store: SweepStore,
    seeds: int,
    *,
    worker_id: str | None = None,
) -> tuple[TieBreak, SearchGrid]:
    """Certify a tie-break's choice as the search certifies its own: while the chosen point sits on an edge of the
    grid that can be extended (`SearchGrid.extended`), train each new neighbour past that edge at seed 0 through
    `objective` (a point of the search, in its store) and at the same `seeds` fresh seeds through
    `fresh_objective`, and move to the lowest fresh-seed mean (the chosen point keeps its place on a tie). Ends with
    the choice interior or at a hard bound; returns the tie-break and the grid, with every point it trained."""
    while (wider := grid.extended(tie.chosen.point)) is not None:
        past = [point for point in wider.neighbours(tie.chosen.point) if not _on(grid, point)]
        grid = wider
        if not past:
            break
        found = evaluate_points(objective, past, search_store, worker_id=worker_id)
        fresh = {**tie.fresh_losses, **_fresh_losses(fresh_objective, past, seeds_store, seeds, worker_id)}
        contenders = [tie.chosen, *(found[point_key(point)] for point in past)]
        chosen = _lowest_mean(contenders, fresh)
        tie = TieBreak(chosen, (*tie.candidates, *contenders[1:]), fresh)
        if chosen is contenders[0]:
            break
    return tie, grid


def _on(grid: SearchGrid, point: dict) -> bool:
    """Whether `point` lies on `grid`."""
    try:
        grid.index(point)
    except InputError:
        return False
    return True
