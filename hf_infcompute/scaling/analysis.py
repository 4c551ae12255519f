"""The scaling analysis of a results store: best runs, the laws they follow, their asymptotes, data efficiency.

`build_report(runs)` computes everything from the store's table (`load_runs`) and writes nothing (the markdown, JSON
and figures are `hf_infcompute.scaling.report`'s). An analysis that lacks points is skipped with the reason, never
filled in. `best_runs` is the one selection of a best run, for this analysis and the study's report alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from hf_infcompute.errors import InputError
from hf_infcompute.scaling.joint import JointFit, joint_asymptote
from hf_infcompute.scaling.plots import human_count
from hf_infcompute.scaling.power_law import PowerLawFit, data_efficiency, fit_power_law

REFERENCE_RECIPE = "standard"
BILLION = 1e9  # N and D enter the laws in billions, as in the paper
MIN_POINTS = 3
REQUIRED_COLUMNS = ("kind", "status", "recipe", "token_budget", "n_params_total", "val_loss")
Skipped = list[tuple[str, str]]  # (analysis, reason it was skipped)
SIZE_COLUMNS = (
    "preset",
    "n_params_total",
    "val_loss",
    "learning_rate",
    "weight_decay",
    "num_train_epochs",
    "run_id",
    "runs",
)


class Asymptote(NamedTuple):
    analysis: str
    E: float
    stderr: float
    issues: tuple[str, ...]


@dataclass(frozen=True)
class SizeScaling:
    """Best loss per model size N of one recipe at one token budget, and the law in N through them."""

    corpus: str
    recipe: str
    token_budget: int
    table: pd.DataFrame
    fit: PowerLawFit | None


@dataclass(frozen=True)
class EnsembleScaling:
    """Best ensemble loss per (N, K) of one recipe at one token budget, the laws in K and the joint limit."""

    corpus: str
    recipe: str
    token_budget: int
    table: pd.DataFrame
    k_fits: dict[float, PowerLawFit]
    joint: JointFit | None


@dataclass(frozen=True)
class DataScaling:
    """One loss per token budget D for a series (a recipe's best run, or one of its asymptotes) and its law in D."""

    corpus: str
    series: str
    losses: dict[int, float]
    fit: PowerLawFit | None


@dataclass(frozen=True)
class ScalingReport:
    """Every analysis of a store: laws in N per (recipe, D), in K and N, K jointly per ensemble recipe and D, in D
    per series, data efficiency over the reference recipe, and the analyses skipped as (analysis, reason)."""

    source: str
    n_runs: int
    n_bootstrap: int
    sizes: list[SizeScaling]
    ensembles: list[EnsembleScaling]
    data: list[DataScaling]
    efficiency: pd.DataFrame  # corpus, series, token_budget, loss, efficiency (inf: unbounded)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def multiple_corpora(self) -> bool:
        corpora = {s.corpus for s in self.sizes} | {e.corpus for e in self.ensembles}
        return len(corpora) > 1

    def key_asymptotes(self) -> list[Asymptote]:
        """Every fitted limit: N -> inf per recipe and D, N, K -> inf per ensemble recipe and D, D -> inf per series."""
        rows = []
        for size in self.sizes:
            if size.fit:
                name = self.label(size.corpus, size.recipe, size.token_budget, "N -> inf")
                rows.append(Asymptote(name, size.fit.E, size.fit.E_stderr, size.fit.issues))
        for ensemble in self.ensembles:
            if ensemble.joint:
                name = self.label(ensemble.corpus, ensemble.recipe, ensemble.token_budget, "N, K -> inf")
                rows.append(Asymptote(name, ensemble.joint.E, ensemble.joint.E_stderr, ensemble.joint.issues))
        for data in self.data:
            if data.fit:
                name = f"{data.series}{self.corpus_note(data.corpus)}, D -> inf"
                rows.append(Asymptote(name, data.fit.E, data.fit.E_stderr, data.fit.issues))
        return rows

    def label(self, corpus: str, recipe: str, token_budget: int, limit: str) -> str:
        return f"{recipe}, D = {human_count(token_budget)}{self.corpus_note(corpus)}, {limit}"

    def corpus_note(self, corpus: str) -> str:
        """' (corpus)' when the store holds several corpora, else ''."""
        return f" ({corpus})" if self.multiple_corpora and corpus else ""


def finished_runs(runs: pd.DataFrame, source: str = "the store") -> pd.DataFrame:
    """Finished runs with a finite validation loss; InputError when there are none or columns are missing."""
    if not runs.empty and {"status", "val_loss"} <= set(runs):
        runs = runs[(runs["status"] == "finished") & np.isfinite(pd.to_numeric(runs["val_loss"], errors="coerce"))]
    if runs.empty or "status" not in runs:
        raise InputError(
            f"no finished runs with a finite val_loss in {source}; train models into it first "
            "(e.g. `hf-infcompute pretrain ... --output DIR`)"
        )
    missing = [column for column in REQUIRED_COLUMNS if column not in runs]
    if missing:
        raise InputError(f"run records in {source} lack the columns {missing}; they were not written by this package")
    runs = runs.copy()
    runs["corpus"] = runs["corpus"].fillna("").astype(str) if "corpus" in runs else ""
    return runs


def best_per_size(runs: pd.DataFrame) -> pd.DataFrame:
    """Pre-training runs: the best (lowest val_loss) run per (corpus, recipe, token_budget, N), with its
    hyperparameters and the number of runs it was chosen from."""
    single = runs[runs["kind"] == "pretrain"]
    return best_runs(single, ["corpus", "recipe", "token_budget", "n_params_total"])


def best_per_members(runs: pd.DataFrame) -> pd.DataFrame:
    """Ensemble records: the best loss per (corpus, recipe, token_budget, N, K)."""
    ensembles = runs[runs["kind"] == "ensemble"]
    if ensembles.empty or "k" not in ensembles:
        return ensembles.iloc[0:0]
    return best_runs(ensembles, ["corpus", "recipe", "token_budget", "n_params_total", "k"])


def best_per_budget(runs: pd.DataFrame) -> pd.DataFrame:
    """Pre-training runs: the best loss per (corpus, recipe, token_budget), over model sizes and hyperparameters."""
    return best_runs(runs[runs["kind"] == "pretrain"], ["corpus", "recipe", "token_budget"])


def build_report(
    runs: pd.DataFrame,
    *,
    source: str = "the store",
    huber: float | None = None,
    n_bootstrap: int = 500,
    seed: int = 0,
    multistart: bool = True,
) -> ScalingReport:
    """Every analysis the finished runs support (see the module docstring); `source` names the store in messages.
    `n_bootstrap`, `seed` and `multistart` go to every fit (`fit_power_law`)."""
    runs = finished_runs(runs, source)
    skipped: Skipped = []
    fit_options = {"huber": huber, "n_bootstrap": n_bootstrap, "seed": seed, "multistart": multistart}
    sizes = _size_scaling(best_per_size(runs), skipped, fit_options)
    ensembles = _ensemble_scaling(best_per_members(runs), skipped, fit_options)
    data = _data_scaling(best_per_budget(runs), sizes, ensembles, skipped, fit_options)
    efficiency = _efficiency(data, skipped)
    return ScalingReport(
        source=source,
        n_runs=len(runs),
        n_bootstrap=n_bootstrap,
        sizes=sizes,
        ensembles=ensembles,
        data=data,
        efficiency=efficiency,
        skipped=skipped,
    )


def best_runs(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The lowest-val_loss run per group of `keys`, with the number of runs it was chosen from (`runs`), sorted by
    `keys`; the first such run in the table on a tie."""
    if runs.empty:
        return runs.assign(runs=pd.Series(dtype=int))
    runs = runs.assign(val_loss=runs["val_loss"].astype(float))
    best = runs.loc[runs.groupby(keys, sort=True)["val_loss"].idxmin()]
    counts = runs.groupby(keys, sort=True).size().rename("runs").reset_index()
    return best.drop(columns="runs", errors="ignore").merge(counts, on=keys).reset_index(drop=True)


def _size_scaling(best: pd.DataFrame, skipped: Skipped, options: dict) -> list[SizeScaling]:
    if best.empty:
        skipped.append(("loss vs N", "no finished runs of kind 'pretrain'"))
    results = []
    for (corpus, recipe, budget), table in best.groupby(["corpus", "recipe", "token_budget"], sort=True):
        table = table.sort_values("n_params_total").reindex(columns=list(SIZE_COLUMNS)).reset_index(drop=True)
        fit = None
        if len(table) >= MIN_POINTS:
            fit = fit_power_law(table["n_params_total"], table["val_loss"], scale=BILLION, **options)
        else:
            skipped.append(
                (
                    f"loss vs N, {recipe}, D = {human_count(budget)}",
                    f"needs >= {MIN_POINTS} model sizes, found {len(table)}",
                )
            )
        results.append(SizeScaling(corpus, recipe, int(budget), table, fit))
    return results


def _ensemble_scaling(best: pd.DataFrame, skipped: Skipped, options: dict) -> list[EnsembleScaling]:
    if best.empty:
        skipped.append(("ensembles", "no finished runs of kind 'ensemble'"))
        return []
    results = []
    for (corpus, recipe, budget), table in best.groupby(["corpus", "recipe", "token_budget"], sort=True):
        where = f"{recipe}, D = {human_count(budget)}"
        curves = {}
        for n, curve in table.groupby("n_params_total", sort=True):
            if len(curve) >= MIN_POINTS:
                curves[float(n)] = curve
            else:
                skipped.append(
                    (
                        f"loss vs K, {where}, N = {human_count(n)}",
                        f"needs >= {MIN_POINTS} ensemble sizes, found {len(curve)}",
                    )
                )
        joint = None
        if len(curves) >= MIN_POINTS:
            points = table[table["n_params_total"].isin(curves)][["n_params_total", "k", "val_loss"]]
            joint = joint_asymptote(points, n_scale=BILLION, **options)
            k_fits = joint.k_fits
        else:
            skipped.append(
                (f"joint N, K limit, {where}", f"needs K-curves at >= {MIN_POINTS} model sizes, found {len(curves)}")
            )
            k_fits = {n: fit_power_law(c["k"], c["val_loss"], **options) for n, c in curves.items()}
        table = table.reindex(columns=["preset", "n_params_total", "k", "val_loss", "runs"])
        table = table.sort_values(["n_params_total", "k"])
        results.append(EnsembleScaling(corpus, recipe, int(budget), table.reset_index(drop=True), k_fits, joint))
    return results


def _data_scaling(
    best: pd.DataFrame, sizes: list[SizeScaling], ensembles: list[EnsembleScaling], skipped: Skipped, options: dict
) -> list[DataScaling]:
    """Per corpus, one series per recipe (its best run at each D), plus its N -> inf and N, K -> inf asymptotes
    at each D where those fits are well conditioned."""
    series: dict[tuple[str, str], dict[int, float]] = {}
    for row in best.itertuples(index=False):
        series.setdefault((row.corpus, row.recipe), {})[int(row.token_budget)] = float(row.val_loss)
    for size in sizes:
        if size.fit and size.fit.well_conditioned:
            series.setdefault((size.corpus, f"{size.recipe} (N -> inf)"), {})[size.token_budget] = size.fit.E
    for ensemble in ensembles:
        if ensemble.joint and ensemble.joint.well_conditioned:
            name = f"{ensemble.recipe} ensembles (N, K -> inf)"
            series.setdefault((ensemble.corpus, name), {})[ensemble.token_budget] = ensemble.joint.E
    results = []
    for (corpus, name), losses in sorted(series.items()):
        losses = dict(sorted(losses.items()))
        fit = None
        if len(losses) >= MIN_POINTS:
            fit = fit_power_law(list(losses), list(losses.values()), scale=BILLION, **options)
        else:
            skipped.append((f"data scaling, {name}", f"needs >= {MIN_POINTS} token budgets, found {len(losses)}"))
        results.append(DataScaling(corpus, name, losses, fit))
    return results


def _efficiency(data: list[DataScaling], skipped: Skipped) -> pd.DataFrame:
    """Data efficiency of every series at every D over the reference recipe's data law of the same corpus."""
    references = {d.corpus: d.fit for d in data if d.series == REFERENCE_RECIPE and d.fit}
    rows = []
    for corpus in sorted({d.corpus for d in data}):
        reference = references.get(corpus)
        if reference is None:
            skipped.append(
                (
                    "data efficiency",
                    f"needs a data-scaling fit of the {REFERENCE_RECIPE!r} recipe (>= {MIN_POINTS} token budgets)",
                )
            )
            continue
        if not reference.well_conditioned:
            skipped.append(
                (
                    "data efficiency",
                    f"the {REFERENCE_RECIPE!r} data law is ill-conditioned: {'; '.join(reference.issues)}",
                )
            )
            continue
        for d in data:
            if d.corpus == corpus and d.series != REFERENCE_RECIPE:
                for budget, loss in d.losses.items():
                    rows.append(
                        {
                            "corpus": corpus,
                            "series": d.series,
                            "token_budget": budget,
                            "loss": loss,
                            "efficiency": data_efficiency(loss, budget, reference),
                        }
                    )
    return pd.DataFrame(rows, columns=["corpus", "series", "token_budget", "loss", "efficiency"])
