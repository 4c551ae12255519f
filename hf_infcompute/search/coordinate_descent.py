"""Coordinate descent to a locally optimal grid point, shared by any number of cooperating workers.

From the current point, evaluate it and all its one-step neighbours; move to the best neighbour if it is strictly
better, and repeat. The search stops at a *locally optimal* point: every neighbour evaluated, none better (the
authors' `construct_best_run_dict` rule). With `extend_edges`, a locally optimal point on the edge of an axis extends
that axis by one step (`SearchGrid.extended`) and the search goes on, until the point is interior or at a hard bound.

Ties are broken deterministically: the current point wins a tie (so the search never cycles), and among equally good
neighbours the one with the smallest grid index (lower learning rate, then fewer epochs, then lower weight decay in
the default axis order) wins. Workers started from the same point read the same shared results and so walk the same
path to the same answer, each evaluating the points the others have not claimed.
"""

from __future__ import annotations

import logging
import math
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from numbers import Real
from typing import Any

from hf_infcompute.errors import InputError, raise_if_out_of_memory
from hf_infcompute.search.grid import Point, SearchGrid, point_label
from hf_infcompute.search.store import FAILED, FINISHED, PointResult, SweepStore, default_worker_id, point_key

logger = logging.getLogger(__name__)

# An objective maps a point to its validation loss, or to a dict with "val_loss" and extra fields to store.
Objective = Callable[[Point], "float | Mapping[str, Any]"]


@dataclass(frozen=True)
class SearchResult:
    """Where a search ended.

    `best`: the final point's result (None only when nothing could be evaluated). `locally_optimal`: every
    neighbour of `best` was evaluated and none is better; `neighbours` holds their results, the proof.
    `path`: the points visited, the start first, one per move. `evaluations`: points this call evaluated;
    `reused`: points whose stored results it read instead (from other workers or earlier runs).
    """

    best: PointResult | None
    locally_optimal: bool
    neighbours: tuple[PointResult, ...]
    path: tuple[Point, ...]
    evaluations: int
    reused: int
    grid: SearchGrid | None = None  # the grid searched, with any axis extended past its edge

    @property
    def best_point(self) -> Point | None:
        return None if self.best is None else dict(self.best.point)

    @property
    def best_loss(self) -> float:
        return math.inf if self.best is None else self.best.loss

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_point": self.best_point,
            "best_loss": self.best_loss if math.isfinite(self.best_loss) else None,
            "best": None if self.best is None else self.best.to_dict(),
            "locally_optimal": self.locally_optimal,
            "neighbours": [neighbour.to_dict() for neighbour in self.neighbours],
            "path": [dict(point) for point in self.path],
            "evaluations": self.evaluations,
            "reused": self.reused,
        }


def coordinate_descent(
    objective: Objective,
    grid: SearchGrid,
    start: Mapping[str, Any],
    store: SweepStore | str | os.PathLike,
    *,
    worker_id: str | None = None,
    max_evaluations: int | None = None,
    retry_failed: bool = False,
    poll_interval: float = 2.0,
    extend_edges: bool = False,
) -> SearchResult:
    """Walk `grid` from `start` to a locally optimal point of `objective`, sharing results through `store`.

    `max_evaluations` caps how many points this call evaluates (0: report from the stored results only); when the
    cap stops the search early the result is not locally optimal. Failed points (an exception, or a non-finite loss)
    are stored as failed and count as infinitely bad; `retry_failed` evaluates again those that failed before this
    call began. While other workers hold claims on the points it needs, it evaluates what it can and then polls every
    `poll_interval` seconds. An `InputError`, a device out-of-memory error (re-raised as an `InputError` naming the
    fixes), `KeyboardInterrupt` or `SystemExit` from the objective stops the search (the point is left unclaimed, not
    failed); re-running resumes it. `extend_edges`: extend an axis past the grid's edge where the optimum sits on it.
    """
    if max_evaluations is not None and max_evaluations < 0:
        raise InputError(f"max_evaluations must be 0 or more, got {max_evaluations}")
    if poll_interval <= 0:
        raise InputError(f"poll_interval must be a positive number of seconds, got {poll_interval}")
    store = store if isinstance(store, SweepStore) else SweepStore(store)
    store.record_grid(grid.to_dict())
    search = _Search(
        objective,
        grid,
        store,
        worker_id or default_worker_id(),
        max_evaluations,
        retry_failed,
        poll_interval,
        extend_edges,
    )
    return search.run(grid.canonical(start))


def evaluate_points(
    objective: Objective,
    points: Sequence[Mapping[str, Any]],
    store: SweepStore,
    *,
    worker_id: str | None = None,
    poll_interval: float = 2.0,
) -> dict[str, PointResult]:
    """The results of every point in `points` (keyed by `point_key`), shared through `store` as the search's
    points are: each is evaluated once, by whichever worker claims it, and the others wait for it."""
    search = _Search(objective, None, store, worker_id or default_worker_id(), None, False, poll_interval)
    results = search._resolve([dict(point) for point in points])
    assert results is not None  # no evaluation budget: every point is resolved
    return results


class _Search:
    """The state of one coordinate-descent call: what it evaluated, what it reused, its budget."""

    def __init__(
        self,
        objective: Objective,
        grid: SearchGrid | None,
        store: SweepStore,
        worker_id: str,
        max_evaluations: int | None,
        retry_failed: bool,
        poll_interval: float,
        extend_edges: bool = False,
    ) -> None:
        self.objective = objective
        self.grid = grid
        self.store = store
        self.worker_id = worker_id
        self.max_evaluations = max_evaluations
        self.retry_failed = retry_failed
        self.poll_interval = poll_interval
        self.started_at = time.time()
        self.evaluated: set[str] = set()
        self.reused: set[str] = set()
        self.extend_edges = extend_edges

    def run(self, current: Point) -> SearchResult:
        path = [current]
        while True:
            neighbours = self.grid.neighbours(current)
            results = self._resolve([current, *neighbours])
            if results is None:
                return self._partial(current, neighbours, path)
            here = results[point_key(current)]
            best = min([current, *neighbours], key=lambda point: self._rank(point, results, current))
            if best == current:
                optimal = math.isfinite(here.loss)
                wider = self.grid.extended(current) if optimal and self.extend_edges else None
                if wider is not None:
                    logger.info(
                        "%s: %s is locally optimal on the grid's edge (%s): extending the grid and searching on",
                        self.worker_id,
                        point_label(current),
                        "; ".join(self.grid.edges(current)),
                    )
                    self.grid = wider
                    self.store.record_grid(wider.to_dict())
                    continue
                logger.info(
                    "%s: %s %s, loss %s (%d evaluated here, %d reused)",
                    self.worker_id,
                    "locally optimal:" if optimal else "stopped (every point around it failed):",
                    point_label(current),
                    _loss_text(here),
                    len(self.evaluated),
                    len(self.reused),
                )
                return self._result(here, [results[point_key(n)] for n in neighbours], optimal, path)
            logger.info(
                "%s: move %d: %s -> %s (loss %s -> %s)",
                self.worker_id,
                len(path),
                point_label(current),
                point_label(best),
                _loss_text(here),
                _loss_text(results[point_key(best)]),
            )
            current = best
            path.append(current)

    def _rank(
        self, point: Point, results: Mapping[str, PointResult], current: Point
    ) -> tuple[float, bool, tuple[int, ...]]:
        # Lower loss first; on a tie the current point, then the smallest grid index.
        return (results[point_key(point)].loss, point != current, self.grid.index(point))

    def _resolve(self, points: Sequence[Point]) -> dict[str, PointResult] | None:
        """Results of all `points`, evaluating or waiting for them; None when the evaluation budget runs out."""
        waiting_on: list[str] = []
        while True:
            missing = [point for point in points if self._usable(point) is None]
            if not missing:
                # Each result under the caller's point, whose coordinates come in grid order.
                return {point_key(point): replace(self._usable(point), point=point) for point in points}
            if self._budget_spent():
                return None
            if not any(self._claim_and_evaluate(point) for point in missing):
                held = [point_key(point) for point in missing]
                if held != waiting_on:
                    logger.info(
                        "%s: waiting for %d point(s) claimed by other workers: %s",
                        self.worker_id,
                        len(held),
                        "; ".join(held),
                    )
                    waiting_on = held
                time.sleep(self.poll_interval)

    def _usable(self, point: Point) -> PointResult | None:
        """The stored result of `point` if the search can use it (a failed one only when not retrying it)."""
        result = self.store.result(point)
        if result is None:
            return None
        if self.retry_failed and result.failed and (result.finished_at or 0.0) < self.started_at:
            return None
        key = point_key(point)
        if key not in self.evaluated:
            self.reused.add(key)
        return result

    def _budget_spent(self) -> bool:
        return self.max_evaluations is not None and len(self.evaluated) >= self.max_evaluations

    def _claim_and_evaluate(self, point: Point) -> bool:
        """Evaluate `point` if this worker can claim it; False when another live worker holds it."""
        if self._budget_spent():
            return False
        claim = self.store.try_claim(point, self.worker_id)
        if claim is None:
            return False
        with claim:
            if self._usable(point) is None:  # another worker may have finished it just before we claimed it
                self._evaluate(point)
        return True

    def _evaluate(self, point: Point) -> None:
        logger.info("%s: evaluating %s", self.worker_id, point_label(point))
        started = time.time()
        try:
            output = self.objective(dict(point))
        except InputError:
            raise  # the settings are wrong, not this point: every other point would fail the same way
        except Exception as error:
            raise_if_out_of_memory(error, f"search point {point_label(point)}")
            outcome = {"status": FAILED, "error": f"{type(error).__name__}: {error}"}
            extra = {"traceback": traceback.format_exc()}
        else:
            loss, extra = _split_output(output)
            if math.isfinite(loss):
                outcome = {"status": FINISHED, "loss": loss}
            else:
                outcome = {"status": FAILED, "error": f"non-finite loss {loss}"}
        finished = time.time()
        result = PointResult(
            point=dict(point),
            status=outcome["status"],
            loss=outcome.get("loss", math.inf),
            error=outcome.get("error"),
            worker_id=self.worker_id,
            wall_time_s=finished - started,
            finished_at=finished,
            extra=extra,
        )
        self.store.record(result)
        key = point_key(point)
        self.evaluated.add(key)
        self.reused.discard(key)
        if result.failed:
            logger.warning("%s: %s failed: %s", self.worker_id, point_label(point), result.error)
        else:
            logger.info("%s: %s -> loss %.4f", self.worker_id, point_label(point), result.loss)

    def _partial(self, current: Point, neighbours: list[Point], path: list[Point]) -> SearchResult:
        """The result when the budget ran out: the best point known around `current`, not locally optimal."""
        known = self._stored([current, *neighbours])
        candidates = [point for point in [current, *neighbours] if point_key(point) in known]
        best = min(candidates, key=lambda point: self._rank(point, known, current)) if candidates else None
        around = {} if best is None else self._stored(self.grid.neighbours(best))
        logger.info("%s: stopped after %d evaluation(s), not yet locally optimal", self.worker_id, len(self.evaluated))
        return self._result(None if best is None else known[point_key(best)], list(around.values()), False, path)

    def _stored(self, points: Sequence[Point]) -> dict[str, PointResult]:
        """The stored results among `points`, keyed, each under the caller's point."""
        stored = {}
        for point in points:
            result = self.store.result(point)
            if result is not None:
                stored[point_key(point)] = replace(result, point=point)
        return stored

    def _result(
        self, best: PointResult | None, neighbours: list[PointResult], optimal: bool, path: list[Point]
    ) -> SearchResult:
        return SearchResult(
            best=best,
            locally_optimal=optimal,
            neighbours=tuple(neighbours),
            path=tuple(path),
            evaluations=len(self.evaluated),
            reused=len(self.reused),
            grid=self.grid,
        )


def _split_output(output: Any) -> tuple[float, dict[str, Any]]:
    """(loss, extra fields) from an objective's return value: a number, or a dict with "val_loss"."""
    if isinstance(output, Mapping):
        if "val_loss" not in output:
            raise TypeError(f"an objective returning a dict must include 'val_loss'; got keys {sorted(output)}")
        extra = {key: value for key, value in output.items() if key != "val_loss"}
        output = output["val_loss"]
    else:
        extra = {}
    if isinstance(output, bool) or not isinstance(output, Real):
        raise TypeError(f"an objective must return a loss (a number) or a dict with 'val_loss', got {output!r}")
    return float(output), extra


def _loss_text(result: PointResult) -> str:
    return f"{result.loss:.4f}" if not result.failed else "failed"
