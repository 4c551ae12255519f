"""Seed-to-seed noise: how far apart two trainings of the same point land, from the points a study trains at
several seeds (a search's optimum and the ensemble members trained at it, or the members of one member rule).

The findings' paired intervals resample validation rows, so they cover which rows were drawn but not the training's
own randomness (initialisation, data order). These repeats measure that part, from few seeds: a coarse estimate, and
the report says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

POINT_COLUMNS = ["preset", "learning_rate", "num_train_epochs", "weight_decay"]
SINGLE_MODEL_KINDS = ("pretrain", "ensemble_member")


@dataclass(frozen=True)
class SeedRepeat:
    """One point of the regularized recipe trained at several seeds: each seed's validation loss."""

    preset: str
    learning_rate: float
    num_train_epochs: float
    weight_decay: float
    losses: dict[int, float]

    def at(self, preset: str, point: dict[str, float]) -> bool:
        """Whether this is `point` (learning rate, epochs, weight decay) of `preset`."""
        return self.preset == preset and all(
            math.isclose(getattr(self, axis), float(value)) for axis, value in point.items()
        )

    @property
    def sd(self) -> float:
        """The sample standard deviation of the losses over seeds."""
        values = list(self.losses.values())
        mean = sum(values) / len(values)
        return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def seed_repeats(runs: pd.DataFrame, token_budget: int) -> list[SeedRepeat]:
    """Every regularized point at `token_budget` with finished single-model runs at two or more seeds."""
    if runs.empty or "seed" not in runs:
        return []
    done = runs[
        runs["kind"].isin(SINGLE_MODEL_KINDS)
        & (runs["status"] == "finished")
        & (runs["recipe"] == "regularized")
        & (runs["token_budget"] == token_budget)
    ]
    repeats = []
    for (preset, lr, epochs, wd), group in done.groupby(POINT_COLUMNS):
        losses = group.groupby("seed")["val_loss"].last()
        if len(losses) >= 2:
            losses = {int(seed): float(loss) for seed, loss in losses.items()}
            repeats.append(SeedRepeat(preset, float(lr), float(epochs), float(wd), losses))
    return repeats


def difference_noise(sd: float) -> float:
    """Two sds of the difference of two single models trained at different seeds: a gap between them smaller than
    this may be seed noise."""
    return 2 * math.sqrt(2) * sd


def pooled_sd(repeats: list[SeedRepeat]) -> tuple[float, int] | None:
    """The seed standard deviation pooled over `repeats` (each weighted by its degrees of freedom) and those
    degrees of freedom; None without repeats."""
    dof = sum(len(r.losses) - 1 for r in repeats)
    if not dof:
        return None
    return math.sqrt(sum((len(r.losses) - 1) * r.sd**2 for r in repeats) / dof), dof
