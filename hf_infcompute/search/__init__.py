"""Hyperparameter search: coordinate descent over a discrete grid to a locally optimal point, shared by workers.

The engine is independent of training: an objective is any callable from a point (`{coordinate: value}`) to a
validation loss. `PretrainObjective` (in `hf_infcompute.search.pretrain_objective`) trains a model per point.
"""

from hf_infcompute.search.coordinate_descent import Objective, SearchResult, coordinate_descent
from hf_infcompute.search.grid import SearchGrid, default_grid, for_recipe, paper_grid
from hf_infcompute.search.store import PointResult, SweepStore, point_key

__all__ = [
    "Objective",
    "PointResult",
    "SearchGrid",
    "SearchResult",
    "SweepStore",
    "coordinate_descent",
    "default_grid",
    "for_recipe",
    "paper_grid",
    "point_key",
]
