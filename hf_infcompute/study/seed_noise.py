"""Seed-to-seed noise: how far apart two trainings of the same point land, measured on fresh seeds only.

A point (recipe, D, preset, learning rate, epochs, weight decay) trained at several seeds shows the training's own
randomness (initialisation, data order): the ensemble members at an optimum, the members of a member rule, a point
re-trained to settle a close call. Only exchangeable runs count: the run a search *selected* as its optimum (and the
twin record of the same training) is left out, because it was picked for landing low on validation and would bias
the sd.

Seed noise differs between points: a point trained past its stable range (a member rule of doubled epochs, an
over-trained neighbour) can vary ten times more across seeds than an optimum. So each model is judged with the noise
of its own point where the study trained that point at `MIN_OWN_SEEDS` fresh seeds or more (an optimum's members, a
member rule's members), and otherwise with the sd pooled over the points the searches chose between (their optima and
the neighbours a tie-break re-trained: where the single models of the findings come from), each weighted by its
degrees of freedom (`PointNoise`).

How a model's seed variance follows from the single-model sd `sigma` (`SeedNoise.variance`):
- one training: sigma^2;
- the mean of m trainings at fresh seeds (a point's seed copies): sigma^2 / m, as for any mean of m independent draws;
- an ensemble of k members: sigma^2 / k. Its loss is a smooth function of the mean of the members' logits, each
  member an independent draw; to first order (the delta method) the seed variance of a function of a mean of k
  independent draws falls as 1 / k. Nested ensembles (k = 1..K of the same members) share their members' noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd
from scipy import stats

POINT_COLUMNS = ["recipe", "token_budget", "preset", "learning_rate", "num_train_epochs", "weight_decay"]
SINGLE_MODEL_KINDS = ("pretrain", "ensemble_member")
CONFIDENCE = 0.95
# A point's own seed sd judges its models once it has this many fresh seeds (4 degrees of freedom); below that its sd is
# too rough (a t quantile on one degree of freedom is 12.7) and its models take the pooled sd.
MIN_OWN_SEEDS = 5
PointKey = tuple[str, int, str, float, float, float]


def point_key(values: Mapping) -> PointKey | None:
    """(recipe, D, preset, learning rate, epochs, weight decay) of a record, with the numbers rounded so that one
    setting written twice matches; None when the record lacks one of them."""
    try:
        recipe, budget, preset, *numbers = (values[column] for column in POINT_COLUMNS)
        return (str(recipe), int(budget), str(preset), *(float(f"{float(n):.10g}") for n in numbers))
    except (KeyError, TypeError, ValueError):
        return None


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
    def key(self) -> PointKey | None:
        return point_key(self.__dict__)

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


@dataclass(frozen=True)
class PointNoise:
    """The seed noise each model is judged with (see the module docstring): `own` per point trained at
    `MIN_OWN_SEEDS` fresh seeds or more, else `pool`, pooled over the searched points (over every repeated point
    when no searched point has two fresh seeds)."""

    pool: SeedNoise | None
    own: Mapping[PointKey | None, SeedNoise | None] = field(default_factory=dict)
    fresh: tuple[SeedRepeat, ...] = ()  # every point's fresh-seed runs (one seed or more)
    pooled: frozenset[PointKey | None] = frozenset()  # the points the pool was measured on

    @classmethod
    def of(cls, runs: pd.DataFrame, selected: set[str], loss: str = "val_loss") -> PointNoise:
        """The noise of `runs`' points: `selected` are the searches' picks (`StudyState.selected_run_ids`), left out
        of every sample and marking the searched points."""
        fresh = fresh_seeds(runs, selected, loss)
        repeats = [r for r in fresh if len(r.losses) >= 2]
        chosen = runs[runs["run_id"].isin(selected)] if "run_id" in runs else runs.iloc[0:0]
        searched = {point_key(record) for record in chosen.to_dict("records")}
        sample = [r for r in repeats if r.key in searched] or repeats
        own = {r.key: pooled_noise([r]) for r in repeats if len(r.losses) >= MIN_OWN_SEEDS}
        return cls(pooled_noise(sample), own, tuple(fresh), frozenset(r.key for r in sample))

    @property
    def repeats(self) -> tuple[SeedRepeat, ...]:
        """The points trained at two fresh seeds or more."""
        return tuple(r for r in self.fresh if len(r.losses) >= 2)

    def at(self, record: Mapping) -> SeedNoise | None:
        """The seed noise of the model `record` holds: its point's own for a single model or an ensemble of one
        point's members, else (a student, a soup, a point with few seeds) the pool."""
        if record.get("kind") not in (*SINGLE_MODEL_KINDS, "ensemble"):
            return self.pool
        return self.own.get(point_key(record), self.pool)
