"""`SearchGrid`: the discrete hyperparameter grid that coordinate descent walks, one ordered axis per coordinate.

A point is a dict `{coordinate: value}` with one value of each axis; its neighbours are the points one grid step
away along a single axis (up to two per axis, none along a pinned axis of one value).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

from hf_infcompute.errors import InputError
from hf_infcompute.method import RECIPES, STANDARD_WEIGHT_DECAY

Value = int | float
Point = dict[str, Value]

# Coordinates are named by the run settings they set (`RegularizedTrainingArguments` fields).
LEARNING_RATE = "learning_rate"
NUM_TRAIN_EPOCHS = "num_train_epochs"
WEIGHT_DECAY = "weight_decay"
RUN_AXES = (LEARNING_RATE, NUM_TRAIN_EPOCHS, WEIGHT_DECAY)

# The authors' grid (PAPER.md, "The authors' configuration").
PAPER_LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
PAPER_WEIGHT_DECAYS = (0.0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4)
PAPER_EPOCHS = (1, 2, 4, 8, 16, 32, 64)

# Our defaults: the paper's learning rates, weight decay 0.1..3.2 and epochs 1..32 in doublings.
DEFAULT_LEARNING_RATES = PAPER_LEARNING_RATES
DEFAULT_WEIGHT_DECAYS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
DEFAULT_EPOCHS = (1, 2, 4, 8, 16, 32)

# How a search extends an axis on which its optimum sits at the grid's edge (`SearchGrid.extended`): one step past
# the edge (learning rate x3 or /3, weight decay x2 or /2 and then 0, epochs x2 or /2), never past hard bounds.
SMALLEST_DECAY = 0.1
EDGE_FACTORS = {LEARNING_RATE: 3.0, WEIGHT_DECAY: 2.0, NUM_TRAIN_EPOCHS: 2}
HARD_BOUNDS = {LEARNING_RATE: (1e-5, 0.3), WEIGHT_DECAY: (0.0, 12.8), NUM_TRAIN_EPOCHS: (1, 256)}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SearchGrid:
    """Ordered values per coordinate, e.g. `{"learning_rate": [...], "num_train_epochs": [...], "weight_decay": [...]}`.

    Every axis is strictly increasing. `learning_rate` must be positive, `num_train_epochs` positive integers and
    `weight_decay` non-negative; other coordinates may be any finite numbers. An axis of one value is pinned.
    """

    axes: Mapping[str, Sequence[Value]]

    def __post_init__(self) -> None:
        if not isinstance(self.axes, Mapping) or not self.axes:
            raise InputError("a search grid needs at least one coordinate, e.g. {'learning_rate': [1e-3, 3e-3]}")
        object.__setattr__(self, "axes", {name: _validate_axis(name, values) for name, values in self.axes.items()})

    def __hash__(self) -> int:
        return hash(tuple(self.axes.items()))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(values) for values in self.axes.values())

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def pinned(self) -> tuple[str, ...]:
        """Coordinates with a single value: the search never moves along them."""
        return tuple(name for name, values in self.axes.items() if len(values) == 1)

    def index(self, point: Mapping[str, Any]) -> tuple[int, ...]:
        """Grid indices of `point`; raises InputError when a coordinate is missing, unknown or off the grid."""
        unknown = sorted(set(point) - set(self.axes))
        missing = [name for name in self.axes if name not in point]
        if unknown or missing:
            raise InputError(
                f"point {dict(point)} does not match the grid's coordinates {list(self.axes)}"
                + (f": unknown {unknown}" if unknown else "")
                + (f": missing {missing}" if missing else "")
            )
        return tuple(_position(name, values, point[name]) for name, values in self.axes.items())

    def point(self, index: Sequence[int]) -> Point:
        """The point at grid indices `index`."""
        if len(index) != len(self.axes) or any(not 0 <= i < n for i, n in zip(index, self.shape)):
            raise InputError(f"grid index {tuple(index)} is outside a grid of shape {self.shape}")
        return {name: values[i] for (name, values), i in zip(self.axes.items(), index)}

    def canonical(self, point: Mapping[str, Any]) -> Point:
        """`point` with each value replaced by the grid's own value (so 3e-3 given as "0.0030" matches 0.003)."""
        return self.point(self.index(point))

    def neighbours(self, point: Mapping[str, Any]) -> list[Point]:
        """The points one step away along one axis, in axis order, the lower step before the higher."""
        index = self.index(point)
        found = []
        for axis, size in enumerate(self.shape):
            for step in (-1, 1):
                moved = index[axis] + step
                if 0 <= moved < size:
                    found.append(self.point(index[:axis] + (moved,) + index[axis + 1 :]))
        return found

    def edges(self, point: Mapping[str, Any]) -> list[str]:
        """The free coordinates on which `point` sits at the grid's first or last value, as "weight_decay 6.4
        (largest on the grid)", or "(the hard bound)" where no search extends past it. A locally optimal point on a
        grid's edge may be bettered just past it."""
        found = []
        for (name, values), i in zip(self.axes.items(), self.index(point)):
            if len(values) > 1 and i in (0, len(values) - 1):
                side = "smallest" if i == 0 else "largest"
                bound = HARD_BOUNDS.get(name, (None, None))[0 if i == 0 else 1]
                where = "the hard bound" if bound is not None and values[i] == bound else f"{side} on the grid"
                found.append(f"{name} {format_value(values[i])} ({where})")
        return found

    def extended(self, point: Mapping[str, Any]) -> SearchGrid | None:
        """A grid with one more value past each edge that `point` sits on, along the axes of `EDGE_FACTORS` within
        `HARD_BOUNDS`; None when there is none to add (the point is interior, or at a hard bound)."""
        axes = {name: list(values) for name, values in self.axes.items()}
        added = False
        for (name, values), i in zip(self.axes.items(), self.index(point)):
            if len(values) < 2 or name not in EDGE_FACTORS:
                continue
            low, high = HARD_BOUNDS[name]
            if i == 0 and values[0] > low:
                below = values[0] / EDGE_FACTORS[name]
                if name == WEIGHT_DECAY and below < SMALLEST_DECAY:
                    below = 0.0  # below the paper's smallest decay, the next step is none at all
                below = max(low, _rounded(name, below))
                if below < values[0]:
                    axes[name].insert(0, below)
                    added = True
            if i == len(values) - 1 and values[-1] < high:
                above = min(high, _rounded(name, values[-1] * EDGE_FACTORS[name]))
                if above > values[-1]:
                    axes[name].append(above)
                    added = True
        return SearchGrid(axes) if added else None

    def including(self, point: Mapping[str, Any]) -> SearchGrid:
        """A grid holding `point`: each of its values missing from an axis added there, in order (a search started
        from the optimum of another search, whose grid was extended past this one's edge)."""
        axes = {name: list(values) for name, values in self.axes.items()}
        for name, values in self.axes.items():
            if name not in point:
                continue
            try:
                _position(name, tuple(values), point[name])
            except InputError:
                axes[name] = sorted([*values, _typed(name, point[name])])
        return SearchGrid(axes)

    def center(self) -> Point:
        """The middle value of each axis (the lower middle for an even count): a neutral starting point."""
        return self.point(tuple((n - 1) // 2 for n in self.shape))

    def replace(self, **axes: Sequence[Value]) -> SearchGrid:
        """A copy with some axes replaced (`grid.replace(num_train_epochs=[4, 8, 16])`)."""
        unknown = sorted(set(axes) - set(self.axes))
        if unknown:
            raise InputError(f"cannot replace unknown grid coordinates {unknown}; the grid has {list(self.axes)}")
        return SearchGrid({name: axes.get(name, values) for name, values in self.axes.items()})

    def to_dict(self) -> dict[str, list[Value]]:
        return {name: list(values) for name, values in self.axes.items()}


def paper_grid() -> SearchGrid:
    """The authors' full grid: 6 learning rates x 7 epoch counts x 8 weight decays."""
    return SearchGrid(
        {LEARNING_RATE: PAPER_LEARNING_RATES, NUM_TRAIN_EPOCHS: PAPER_EPOCHS, WEIGHT_DECAY: PAPER_WEIGHT_DECAYS}
    )


def default_grid() -> SearchGrid:
    """Our default grid: the paper's learning rates, epochs 1..32 and weight decay 0.1..3.2."""
    return SearchGrid(
        {LEARNING_RATE: DEFAULT_LEARNING_RATES, NUM_TRAIN_EPOCHS: DEFAULT_EPOCHS, WEIGHT_DECAY: DEFAULT_WEIGHT_DECAYS}
    )


def for_recipe(
    recipe: str,
    *,
    learning_rates: Sequence[float] | None = None,
    epochs: Sequence[int] | None = None,
    weight_decays: Sequence[float] | None = None,
) -> SearchGrid:
    """The grid a recipe searches: `regularized` tunes all three coordinates, `standard` pins weight decay at 0.1.

    Any axis left as None takes our default values.
    """
    if recipe not in RECIPES:
        raise InputError(f"unknown recipe {recipe!r} for a hyperparameter search: use one of {list(RECIPES)}")
    if recipe == "standard":
        if weight_decays is not None and [float(v) for v in weight_decays] != [STANDARD_WEIGHT_DECAY]:
            raise InputError(
                f"the standard recipe fixes weight decay at {STANDARD_WEIGHT_DECAY}: drop the weight-decay grid, "
                "or search the 'regularized' recipe to tune it"
            )
        weight_decays = (STANDARD_WEIGHT_DECAY,)
    return default_grid().replace(
        **{
            name: values
            for name, values in (
                (LEARNING_RATE, learning_rates),
                (NUM_TRAIN_EPOCHS, epochs),
                (WEIGHT_DECAY, weight_decays),
            )
            if values is not None
        }
    )


def _validate_axis(name: Any, values: Any) -> tuple[Value, ...]:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"grid coordinate names must be identifiers like 'learning_rate', got {name!r}")
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise InputError(f"grid axis {name!r} needs a non-empty list of numbers, got {values!r}")
    cleaned = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            raise InputError(f"grid axis {name!r} holds {value!r}: every value must be a finite number")
        cleaned.append(_typed(name, value))
    if any(b <= a for a, b in zip(cleaned, cleaned[1:])):
        raise InputError(
            f"grid axis {name!r} must be sorted ascending without repeats, got {list(values)}: "
            f"use {sorted(set(cleaned))}"
        )
    return tuple(cleaned)


def _typed(name: str, value: Real) -> Value:
    """Check the per-coordinate range and give the value its natural type (epochs int, rates float)."""
    if name == LEARNING_RATE:
        if value <= 0:
            raise InputError(f"learning rates must be positive, got {value!r} in the learning_rate axis")
        return float(value)
    if name == WEIGHT_DECAY:
        if value < 0:
            raise InputError(f"weight decay cannot be negative, got {value!r} in the weight_decay axis")
        return float(value)
    if name == NUM_TRAIN_EPOCHS:
        if value <= 0 or float(value) != int(value):
            raise InputError(f"epochs must be positive whole numbers, got {value!r} in the num_train_epochs axis")
        return int(value)
    return value if isinstance(value, int) else float(value)


def _rounded(name: str, value: float) -> Value:
    """A new edge value in the grid's style: whole epochs, three significant digits otherwise (1e-2 / 3 -> 0.00333)."""
    return int(round(value)) if name == NUM_TRAIN_EPOCHS else float(f"{value:.3g}")


def _position(name: str, values: tuple[Value, ...], value: Any) -> int:
    if not isinstance(value, bool) and isinstance(value, Real):
        for i, candidate in enumerate(values):
            if math.isclose(candidate, value, rel_tol=1e-9, abs_tol=1e-15):
                return i
    raise InputError(f"{name}={value!r} is not on the search grid: choose one of {list(values)}")


def format_value(value: Value) -> str:
    """A short exact text for a grid value: whole numbers without a decimal point, floats by `repr`."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def point_label(point: Mapping[str, Value]) -> str:
    """`learning_rate=0.003 num_train_epochs=8 weight_decay=0.8`, in the point's own order."""
    return " ".join(f"{name}={format_value(value)}" for name, value in point.items())
