"""What a study's searches train beyond one coordinate descent from one start, counted before anything trains.

Shared by the plan (`hf_infcompute.planning.recipe.plan_study`) and the study's own progress estimate
(`hf_infcompute.study.progress.planned_runs`):

- edge extensions: a search whose optimum sits on its grid's edge extends that axis (`SearchGrid.extended`), so the
  grid it may reach is its grid extended along every axis out to the hard bounds (`fully_extended`);
- tie-breaks: once a search is locally optimal, its best point and the neighbours within the seed noise are each
  re-trained at `tie_break_seeds` fresh seeds (`tie_break_runs`); a choice on a grid edge goes on past it, each
  point past the edge at those fresh seeds too (`continuation_upper`);
- the fresh seeds of the chosen regularized optimum at the main budget are the ensemble's members 1..s, not trained
  again (`tie_break_members`).
"""

from __future__ import annotations

from hf_infcompute.search import SearchGrid
from hf_infcompute.search.grid import NUM_TRAIN_EPOCHS
from hf_infcompute.study.spec import OPTIMUM, StudySpec


def fully_extended(grid: SearchGrid) -> SearchGrid:
    """`grid` extended past both edges of every axis as far as `SearchGrid.extended` goes (each extensible axis out to
    its hard bound): every grid a search extending its edges can reach lies on it."""
    for corner in (lambda shape: tuple(0 for _ in shape), lambda shape: tuple(n - 1 for n in shape)):
        while (wider := grid.extended(grid.point(corner(grid.shape)))) is not None:
            grid = wider
    return grid


def reachable_grid(grid: SearchGrid, extend_edges: bool) -> SearchGrid:
    """The grid a search may train on: `fully_extended(grid)` where it extends its edges, else `grid` itself."""
    return fully_extended(grid) if extend_edges else grid


def free_axes(grid: SearchGrid) -> int:
    """Axes of more than one value: those a search moves along."""
    return sum(1 for n in grid.shape if n > 1)


def most_neighbours(grid: SearchGrid) -> int:
    """The most neighbours a point of `grid` has: two per axis of three values or more, one per axis of two."""
    return sum(min(2, n - 1) for n in grid.shape)


def tie_break_runs(grid: SearchGrid, seeds: int) -> tuple[int, int]:
    """Trainings of one search's tie-break, expected and at most: `seeds` fresh seeds of the best point and of the
    runner-up neighbour (expected), or of the best point and every neighbour (at most, all within the seed noise)."""
    expected = seeds * (1 + min(1, free_axes(grid)))
    return expected, seeds * (1 + most_neighbours(grid))


def tie_break_epochs_upper(grid: SearchGrid) -> float:
    """The most epochs one seed of a tie-break trains: the largest sum, over a point of `grid`, of its epochs and its
    neighbours' (each re-trained for that many epochs x the budget's tokens)."""
    epochs = grid.axes[NUM_TRAIN_EPOCHS]
    others = most_neighbours(grid) - min(2, len(epochs) - 1)  # neighbours along the other axes: the point's epochs
    best = 0.0
    for i, value in enumerate(epochs):
        along = [epochs[j] for j in (i - 1, i + 1) if 0 <= j < len(epochs)]
        best = max(best, value * (1 + others) + sum(along))
    return best


def tie_break_members(spec: StudySpec) -> int:
    """Members of each ensemble the regularized tie-break at the main budget trains: the chosen optimum's fresh seeds
    1..s are the 'optimum' candidate's members 1..s (member 0 being the search's own run)."""
    if OPTIMUM not in spec.ensemble.member_candidates:
        return 0
    return min(spec.regularized.tie_break_seeds, spec.ensemble.k - 1)


def continuation_upper(grid: SearchGrid, reachable: SearchGrid, seeds: int) -> tuple[int, float]:
    """The most fresh-seed trainings a tie-break's continuation past the grid's edge adds
    (`hf_infcompute.search.tie_break.continue_past_edge`), and their most epochs: `seeds` of each value `reachable`
    adds to an axis of `grid` (their seed-0 runs lie on `reachable`, counted with the search), each at most the
    largest epochs of `reachable`."""
    added = sum(len(reachable.axes[name]) - len(values) for name, values in grid.axes.items())
    return seeds * added, seeds * added * float(max(reachable.axes[NUM_TRAIN_EPOCHS]))
