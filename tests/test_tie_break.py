"""Tie-breaks within the seed noise: fresh seeds, not the search's own seed, choose among close points."""

from __future__ import annotations

import math
import random
import tempfile
from pathlib import Path

import numpy as np

from hf_infcompute.search import SearchGrid, SweepStore, coordinate_descent, point_key
from hf_infcompute.search.grid import point_label
from hf_infcompute.search.pretrain_objective import SEED_OFFSET
from hf_infcompute.search.tie_break import break_tie, close_candidates, continue_past_edge

GRID = SearchGrid({"learning_rate": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1], "num_train_epochs": [2, 4, 8, 16, 32]})


class NoisyBowl:
    """A shallow bowl plus seed noise of sd `sd`: a point's loss at seed offset i is a fixed draw of (point, i)."""

    def __init__(self, optimum: tuple[int, int], sd: float, study: int, curvature: float = 0.01):
        self.optimum, self.sd, self.study, self.curvature = optimum, sd, study, curvature
        self.calls: list[str] = []

    def true_loss(self, point: dict) -> float:
        index = GRID.index({k: v for k, v in point.items() if k != SEED_OFFSET})
        return 2.0 + self.curvature * sum((i - o) ** 2 for i, o in zip(index, self.optimum))

    def __call__(self, point: dict) -> float:
        self.calls.append(point_key(point))
        draw = random.Random(f"{self.study}/{point_key(point)}/{point.get(SEED_OFFSET, 0)}").gauss(0.0, self.sd)
        return self.true_loss(point) + draw


def search(objective: NoisyBowl, tmp_path, name: str = "sweep"):
    return coordinate_descent(objective, GRID, GRID.point(objective.optimum), SweepStore(tmp_path / name))


def test_close_candidates_are_the_neighbours_within_the_noise_or_the_runner_up_before_any_is_measured(tmp_path):
    objective = NoisyBowl((2, 2), sd=0.0, study=0)
    result = search(objective, tmp_path)
    neighbours = sorted(result.neighbours, key=lambda n: n.loss)
    assert close_candidates(result, None) == [result.best, neighbours[0]]
    # every neighbour lies 0.01 above: inside sqrt(2) x 0.01, outside sqrt(2) x 0.005
    assert close_candidates(result, 0.01) == [result.best, *neighbours]
    assert close_candidates(result, 0.005) == [result.best]


def test_fresh_seeds_are_trained_once_and_decide(tmp_path):
    objective = NoisyBowl((2, 2), sd=0.02, study=1)
    result = search(objective, tmp_path)
    seeds = SweepStore(tmp_path / "seeds")
    tie = break_tie(objective, result, seeds, 3, None)
    assert tie is not None and len(tie.fresh_losses) == 2 and all(len(v) == 3 for v in tie.fresh_losses.values())
    means = {label: np.mean(losses) for label, losses in tie.fresh_losses.items()}
    assert point_label(tie.chosen.point) == min(means, key=means.get)
    assert tie.compared_run_ids == []  # the objective returns plain losses, with no run ids
    fresh_calls = [call for call in objective.calls if SEED_OFFSET in call]
    assert len(fresh_calls) == len(set(fresh_calls)) == 6
    again = break_tie(objective, result, seeds, 3, None)
    assert again == tie and len([c for c in objective.calls if SEED_OFFSET in c]) == 6  # read back, not retrained
    assert break_tie(objective, result, seeds, 0, None) is None


def test_fresh_seed_means_choose_the_true_optimum_more_often_than_the_search_seed():
    """Simulated searches on a bowl as shallow as the seed noise: the search's own pick is often a neighbour; the
    choice on the means of 4 fresh seeds is right more often, and never picks outside the candidates."""
    search_right = tie_right = 0
    studies = 60
    for study in range(studies):
        objective = NoisyBowl((2, 2), sd=0.02, study=100 + study, curvature=0.02)
        with tempfile.TemporaryDirectory() as folder:
            result = search(objective, Path(folder))
            tie = break_tie(objective, result, SweepStore(Path(folder) / "seeds"), 4, 0.02)
        truth = GRID.point((2, 2))
        search_right += result.best_point == truth
        chosen = result.best_point if tie is None else {k: tie.chosen.point[k] for k in truth}
        tie_right += chosen == truth
    assert tie_right > search_right + studies // 10


class BiasedAtTheEdge:
    """A bowl in (learning rate, epochs) with its optimum at 64 epochs, past the grid's edge (32); seed 0 reads every
    point of 32 epochs or more 0.05 high, so the search stops inside (16 epochs) and only fresh seeds see the edge."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, point: dict) -> float:
        self.calls.append(point_key(point))
        lr_steps = round(2 * math.log10(point["learning_rate"])) + 4  # 1e-2 -> 0, 3e-2 -> 1, 3e-3 -> -1
        doublings = math.log2(point["num_train_epochs"])  # 64 epochs -> 6
        loss = 2.0 + 0.01 * lr_steps**2 + 0.01 * (doublings - 6) ** 2
        biased = point.get(SEED_OFFSET, 0) == 0 and point["num_train_epochs"] >= 32
        return loss + (0.05 if biased else 0.0)


def test_a_tie_break_that_chooses_a_point_on_the_edge_goes_on_past_it(tmp_path):
    objective = BiasedAtTheEdge()
    start = {"learning_rate": 1e-2, "num_train_epochs": 16}
    search_store, seeds_store = SweepStore(tmp_path / "sweep"), SweepStore(tmp_path / "seeds")
    result = coordinate_descent(objective, GRID, start, search_store)
    assert result.best_point == start and result.locally_optimal
    tie = break_tie(objective, result, seeds_store, 2, 0.05)
    assert tie.changed and tie.chosen.point["num_train_epochs"] == 32  # on the grid's edge
    certified, grid = continue_past_edge(objective, objective, tie, GRID, search_store, seeds_store, 2)
    assert certified.chosen.point == {"learning_rate": 1e-2, "num_train_epochs": 64}
    assert tuple(grid.axes["num_train_epochs"][-2:]) == (64, 128) and grid.edges(certified.chosen.point) == []
    past = [{"learning_rate": 1e-2, "num_train_epochs": epochs} for epochs in (64, 128)]
    assert all(search_store.result(point) is not None for point in past)  # seed 0, as the search's points
    assert all(len(certified.fresh_losses[point_label(point)]) == 2 for point in past)
    calls = list(objective.calls)
    assert len(calls) == len(set(calls))  # nothing trained twice
    assert continue_past_edge(objective, objective, tie, GRID, search_store, seeds_store, 2) == (certified, grid)
    assert objective.calls == calls  # read back, not retrained


def test_a_tie_break_that_keeps_the_search_optimum_changes_nothing(tmp_path):
    objective = NoisyBowl((2, 2), sd=0.0, study=0)
    result = search(objective, tmp_path)
    tie = break_tie(objective, result, SweepStore(tmp_path / "seeds"), 1, 0.01)
    assert not tie.changed
    assert continue_past_edge(
        objective, objective, tie, GRID, SweepStore(tmp_path / "sweep"), SweepStore(tmp_path / "seeds"), 1
    ) == (tie, GRID)
