"""Seed-to-seed noise: how far apart two trainings of the same point land, measured on fresh seeds only.

A point (recipe, D, preset, learning rate, epochs, weight decay) trained at several seeds shows the training's own
randomness (initialisation, data order): the ensemble members at an optimum, the members of a member rule, a point
re-trained to settle a close call. Only exchangeable runs count: the run a search *selected* as its optimum (and the
twin record of the same training) is left out, because it was picked for landing low on validation and would bias
the sd. The sd is pooled over points, each weighted by its degrees of freedom: this assumes one seed sd across sizes
and recipes, which the study has too few seeds to measure one by one.

How a model's seed variance follows from the single-model sd `sigma` (`SeedNoise.variance`):
- one training: sigma^2;
- the mean of m trainings at fresh seeds (a point's seed copies): sigma^2 / m, as for any mean of m independent draws;
- an ensemble of k members: sigma^2 / k. Its loss is a smooth function of the mean of the members' logits, each
  member an independent draw; to first order (the delta method) the seed variance of a function of a mean of k
  independent draws falls as 1 / k. Nested ensembles (k = 1..K of the same members) share their members' noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
from scipy import stats

POINT_COLUMNS = ["recipe", "token_budget", "preset", "learning_rate", "num_train_epochs", "weight_decay"]
SINGLE_MODEL_KINDS = ("pretrain", "ensemble_member")
CONFIDENCE = 0.95


@dataclass(frozen=True)
class SeedRepeat:
    """One point trained at several fresh seeds: each seed's loss (on the report split) and run id."""

    recipe: str
    token_budget: int
    preset: str
    learning_rate: float
    num_train_epochs: float
    weight_decay: float
    losses: dict[int, float]
    run_ids: tuple[str, ...]

    def at(self, preset: str, point: dict[str, float], recipe: str | None = None) -> bool:
        """Whether this is `point` (learning rate, epochs, weight decay) of `preset` (and of `recipe`, if given)."""
        return (
            self.preset == preset
            and (recipe is None or self.recipe == recipe)
            and all(math.isclose(getattr(self, axis), float(value)) for axis, value in point.items())
        )

    @property
    def sd(self) -> float:
        """The sample standard deviation of the losses over seeds."""
        values = list(self.losses.values())
        mean = sum(values) / len(values)
        return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@dataclass(frozen=True)
class SeedNoise:
    """The pooled seed sd of a single model, its degrees of freedom and its `CONFIDENCE` interval (from the
    chi-square distribution of a pooled variance)."""

    sd: float
    dof: int
    low: float
    high: float

    def variance(self, copies: float = 1) -> float:
        """The seed variance of a model that averages `copies` independent trainings: a seed mean of m copies, or
        an ensemble of k members (see the module docstring)."""
        return self.sd**2 / copies

    def __str__(self) -> str:
        return f"{self.sd:.4f} [{self.low:.4f}, {self.high:.4f}] ({self.dof} degrees of freedom)"


def seed_repeats(runs: pd.DataFrame, selected: set[str], loss: str = "val_loss") -> list[SeedRepeat]:
    """Every point with finished single-model runs at two or more fresh seeds (`fresh_seeds`)."""
    return [repeat for repeat in fresh_seeds(runs, selected, loss) if len(repeat.losses) >= 2]


def fresh_seeds(runs: pd.DataFrame, selected: set[str], loss: str = "val_loss") -> list[SeedRepeat]:
    """Every point with finished single-model runs, less the `selected` runs (search optima, by run id, and records
    of the same training): their `loss` per seed (one seed or more)."""
    if runs.empty or "seed" not in runs or loss not in runs:
        return []
    done = runs[runs["kind"].isin(SINGLE_MODEL_KINDS) & (runs["status"] == "finished")]
    done = done[pd.to_numeric(done[loss], errors="coerce").notna()]
    twins = done["same_training_as"] if "same_training_as" in done else pd.Series(None, index=done.index)
    twins = twins.map(lambda v: v if isinstance(v, str) else None)
    trainings = set(selected) | set(twins[done["run_id"].isin(selected)].dropna())
    done = done[~done["run_id"].isin(trainings) & ~twins.isin(trainings)]
    repeats = []
    for (recipe, budget, preset, lr, epochs, wd), group in done.groupby(POINT_COLUMNS):
        by_seed = group.groupby("seed").last()
        if len(by_seed):
            repeats.append(
                SeedRepeat(
                    str(recipe),
                    int(budget),
                    str(preset),
                    float(lr),
                    float(epochs),
                    float(wd),
                    {int(seed): float(value) for seed, value in by_seed[loss].items()},
                    tuple(by_seed["run_id"]),
                )
            )
    return repeats


def pooled_noise(repeats: list[SeedRepeat]) -> SeedNoise | None:
    """The seed sd pooled over `repeats` (each weighted by its degrees of freedom) with its interval; None without
    repeats."""
    dof = sum(len(r.losses) - 1 for r in repeats)
    if not dof:
        return None
    sd = math.sqrt(sum((len(r.losses) - 1) * r.sd**2 for r in repeats) / dof)
    tail = (1 - CONFIDENCE) / 2
    low = sd * math.sqrt(dof / stats.chi2.ppf(1 - tail, dof))
    high = sd * math.sqrt(dof / stats.chi2.ppf(tail, dof))
    return SeedNoise(sd, dof, low, high)
