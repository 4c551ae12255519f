"""The scaling analysis of a results store: best runs, the laws they follow, their asymptotes, data efficiency.

`build_report(runs)` computes everything from the store's table (`load_runs`) and writes nothing (the markdown, JSON
and figures are `hf_infcompute.scaling.report`'s). An analysis that lacks points is skipped with the reason, never
filled in. `best_runs` is the one selection of a best run, for this analysis and the study's report alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from hf_infcompute.errors import InputError
from hf_infcompute.scaling.joint import (
    FREE_K_EXPONENT_MIN,
    K_EXPONENT,
    MIN_K_POINTS,
    JointFit,
    MemberLimit,
    choose_member_rule,
    fit_k_law,
    joint_asymptote,
    member_limit,
)
from hf_infcompute.scaling.plots import human_count
from hf_infcompute.scaling.power_law import (
    PowerLawFit,
    data_efficiency,
    fit_power_law,
    interpolated_data,
    invertible,
)

REFERENCE_RECIPE = "standard"
BILLION = 1e9  # N and D enter the laws in billions, as in the paper
MIN_POINTS = 3
# Token budgets the reference recipe's data law should have: 3 parameters fit 3 points exactly, leaving no noise.
USABLE_DATA_BUDGETS = 4
REQUIRED_COLUMNS = ("kind", "status", "recipe", "token_budget", "n_params_total", "val_loss")
NOISE_COLUMN = "loss_sd"  # the standard deviation of a run's reported loss, when the caller measured it
Skipped = list[tuple[str, str]]  # (analysis, reason it was skipped)
# Columns of the best-run tables; `test_loss` and `loss_sd` only where the runs have them, `loss` the reported one.
SIZE_COLUMNS = (
    "preset",
    "n_params_total",
    "val_loss",
    "test_loss",
    "loss",
    NOISE_COLUMN,
    "learning_rate",
    "weight_decay",
    "num_train_epochs",
    "run_id",
    "runs",
)
MEMBER_COLUMNS = ("preset", "n_params_total", "k", "val_loss", "test_loss", "loss", NOISE_COLUMN, "run_id", "runs")
_OPTIONAL_COLUMNS = ("test_loss", NOISE_COLUMN)
EFFICIENCY_COLUMNS = (
    "corpus",
    "series",
    "token_budget",
    "loss",
    "reference_loss",
    "efficiency",
    "efficiency_interpolated",
    "method",
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
    """Best ensemble loss per (N, K) of one recipe at one token budget, the laws in K and the joint limit; `notes`
    say how the K-laws were fitted (a fixed exponent below `FREE_K_EXPONENT_MIN` member counts)."""

    corpus: str
    recipe: str
    token_budget: int
    table: pd.DataFrame
    k_fits: dict[float, PowerLawFit]
    joint: JointFit | None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataScaling:
    """One loss per token budget D for a series (a recipe's best run, or one of its asymptotes) and its law in D;
    `loss_sd` the standard deviation of each loss where the runs carry one; `measured`: a recipe's best runs (not
    an asymptote)."""

    corpus: str
    series: str
    losses: dict[int, float]
    fit: PowerLawFit | None
    loss_sd: dict[int, float] | None = None
    measured: bool = True


@dataclass(frozen=True)
class ScalingReport:
    """Every analysis of a store: laws in N per (recipe, D), in K and N, K jointly per ensemble recipe and D, in D
    per series, data efficiency over the reference recipe, and the analyses skipped as (analysis, reason). Each
    best run was chosen by `select_on`; every loss and law is `report_on`'s."""

    source: str
    n_runs: int
    n_bootstrap: int
    sizes: list[SizeScaling]
    ensembles: list[EnsembleScaling]
    data: list[DataScaling]
    efficiency: pd.DataFrame  # EFFICIENCY_COLUMNS (efficiency inf: unbounded; NaN: no usable law or range)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    select_on: str = "val_loss"
    report_on: str = "val_loss"

    @property
    def split(self) -> str:
        """The reported split in words: 'validation', 'test', or the column's name."""
        return split_name(self.report_on)

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


def split_name(column: str) -> str:
    """'val_loss' -> 'validation', 'test_loss' -> 'test'; any other column by its name."""
    return {"val_loss": "validation", "test_loss": "test"}.get(column, column)


def finished_runs(runs: pd.DataFrame, source: str = "the store", *, select_on: str = "val_loss") -> pd.DataFrame:
    """Finished runs with a finite `select_on` loss; InputError when there are none or columns are missing."""
    if not runs.empty and {"status", select_on} <= set(runs):
        runs = runs[(runs["status"] == "finished") & np.isfinite(pd.to_numeric(runs[select_on], errors="coerce"))]
    if runs.empty or "status" not in runs:
        raise InputError(
            f"no finished runs with a finite {select_on} in {source}; train models into it first "
            "(e.g. `hf-infcompute pretrain ... --output DIR`)"
        )
    missing = [column for column in REQUIRED_COLUMNS if column not in runs]
    if missing:
        raise InputError(f"run records in {source} lack the columns {missing}; they were not written by this package")
    runs = runs.copy()
    runs["corpus"] = runs["corpus"].fillna("").astype(str) if "corpus" in runs else ""
    return runs


def best_per_size(runs: pd.DataFrame, select_on: str = "val_loss") -> pd.DataFrame:
    """Pre-training runs: the best (lowest `select_on`) run per (corpus, recipe, token_budget, N), with its
    hyperparameters and the number of runs it was chosen from."""
    single = runs[runs["kind"] == "pretrain"]
    return best_runs(single, ["corpus", "recipe", "token_budget", "n_params_total"], select_on=select_on)


def best_per_members(runs: pd.DataFrame, select_on: str = "val_loss") -> pd.DataFrame:
    """Ensemble records: the best (lowest `select_on`) per (corpus, recipe, token_budget, N, K), of the member rule
    chosen at that N (`chosen_member_rules`)."""
    ensembles = runs[runs["kind"] == "ensemble"]
    if ensembles.empty or "k" not in ensembles:
        return ensembles.iloc[0:0]
    ensembles = chosen_member_rules(ensembles, select_on, member_losses(runs, select_on))
    return best_runs(ensembles, ["corpus", "recipe", "token_budget", "n_params_total", "k"], select_on=select_on)


def member_losses(runs: pd.DataFrame, select_on: str = "val_loss") -> pd.Series:
    """`select_on` of every single-model run, by run id: what an ensemble's members measured."""
    single = runs[runs["kind"] != "ensemble"].drop_duplicates("run_id") if "run_id" in runs else runs.iloc[0:0]
    return pd.Series(single[select_on].to_numpy(dtype=float), index=single["run_id"] if len(single) else None)


def member_rule_limit(curve: pd.DataFrame, select_on: str, losses: pd.Series) -> MemberLimit:
    """A member rule's K -> inf asymptote (`joint.member_limit`) through its best ensemble per member count, its
    standard error from the seed sd of its largest ensemble's members 1..K-1 (fresh seeds: member 0 may be a
    search's selected run) as found in `losses` (`member_losses`)."""
    by_k = pd.Series(curve[select_on].to_numpy(dtype=float), index=curve["k"].to_numpy(dtype=float))
    by_k = by_k.groupby(level=0).min().sort_index()
    sd, dof = math.nan, None
    members = curve.loc[curve["k"].idxmax()].get("members")
    if isinstance(members, list | tuple | np.ndarray):
        fresh = losses.reindex([str(m) for m in list(members)[1:]]).dropna().to_numpy()
        if fresh.size >= 2:
            sd, dof = float(np.std(fresh, ddof=1)), int(fresh.size - 1)
    return member_limit(by_k.index, by_k.to_numpy(), member_sd=sd, member_dof=dof, multistart=False)


def chosen_member_rules(ensembles: pd.DataFrame, select_on: str, losses: pd.Series) -> pd.DataFrame:
    """The ensembles of one member rule per (corpus, recipe, token_budget, N): the rule (`member_rule`) that
    `joint.choose_member_rule` picks from each rule's K -> inf asymptote on `select_on` (`member_rule_limit`, with
    the members' losses `losses`), as the study chooses it. Mixing rules, the best per K, would join a curve of one
    rule's small ensembles to another's large ones."""
    if "member_rule" not in ensembles:
        return ensembles
    rules = ensembles["member_rule"].fillna("none").astype(str)
    keep = pd.Series(False, index=ensembles.index)
    for _, group in ensembles.groupby(["corpus", "recipe", "token_budget", "n_params_total"], sort=False):
        limits = {
            rule: member_rule_limit(curve, select_on, losses)
            for rule, curve in group.groupby(rules[group.index], sort=True)
        }
        chosen, _ = choose_member_rule(limits)
        keep[group.index[rules[group.index] == chosen]] = True
    return ensembles[keep]


def best_per_budget(runs: pd.DataFrame, select_on: str = "val_loss") -> pd.DataFrame:
    """Pre-training runs: the best per (corpus, recipe, token_budget), over model sizes and hyperparameters."""
    return best_runs(runs[runs["kind"] == "pretrain"], ["corpus", "recipe", "token_budget"], select_on=select_on)


def build_report(
    runs: pd.DataFrame,
    *,
    source: str = "the store",
    huber: float | None = None,
    n_bootstrap: int = 500,
    seed: int = 0,
    multistart: bool = True,
    select_on: str = "val_loss",
    report_on: str = "val_loss",
    every_asymptote: bool = False,
) -> ScalingReport:
    """Every analysis the finished runs support (see the module docstring); `source` names the store in messages.
    `n_bootstrap`, `seed` and `multistart` go to every fit (`fit_power_law`). The data laws and multipliers take an
    N -> inf or N, K -> inf asymptote only from a well-conditioned fit; `every_asymptote` takes it from every fit
    made, for the replicates of a resampled analysis (`study.confidence.ResampledAnalysis`): an interval is the
    spread of the estimate over every replicate, and keeping only those where the fit looks identified would narrow it
    to the lucky ones.

    Each best run (per size, per (N, K), per budget) is the lowest `select_on` loss; the laws are fitted to its
    `report_on` loss (e.g. select on validation, report on test), and a best run without a finite `report_on` is
    left out of the fits (`skipped` says so). Where the runs have a `loss_sd` column (the standard deviation of each
    run's reported loss), the selected runs' values are each fit's per-point noise (`fit_power_law`'s `noise`).
    """
    runs = finished_runs(runs, source, select_on=select_on)
    skipped: Skipped = []
    fit_options = {"huber": huber, "n_bootstrap": n_bootstrap, "seed": seed, "multistart": multistart}
    sizes = _size_scaling(_reported(best_per_size(runs, select_on), report_on, skipped), skipped, fit_options)
    members = _reported(best_per_members(runs, select_on), report_on, skipped)
    ensembles = _ensemble_scaling(members, skipped, fit_options)
    budgets = _reported(best_per_budget(runs, select_on), report_on, skipped)
    data = _data_scaling(budgets, sizes, ensembles, skipped, fit_options, every_asymptote=every_asymptote)
    efficiency = _efficiency(data, ensembles, skipped, every_asymptote=every_asymptote)
    return ScalingReport(
        source=source,
        n_runs=len(runs),
        n_bootstrap=n_bootstrap,
        sizes=sizes,
        ensembles=ensembles,
        data=data,
        efficiency=efficiency,
        skipped=skipped,
        select_on=select_on,
        report_on=report_on,
    )


def best_runs(runs: pd.DataFrame, keys: list[str], *, select_on: str = "val_loss") -> pd.DataFrame:
    """The lowest-`select_on` run per group of `keys`, with the number of runs it was chosen from (`runs`), sorted
    by `keys`; the first such run in the table on a tie."""
    if runs.empty:
        return runs.assign(runs=pd.Series(dtype=int))
    runs = runs.assign(**{select_on: runs[select_on].astype(float)})
    best = runs.loc[runs.groupby(keys, sort=True)[select_on].idxmin()]
    counts = runs.groupby(keys, sort=True).size().rename("runs").reset_index()
    return best.drop(columns="runs", errors="ignore").merge(counts, on=keys).reset_index(drop=True)


def _reported(best: pd.DataFrame, report_on: str, skipped: Skipped) -> pd.DataFrame:
    """The best runs with `loss` = their `report_on` loss; those without a finite one are dropped (and listed)."""
    values = pd.to_numeric(best[report_on], errors="coerce") if report_on in best else pd.Series(np.nan, best.index)
    finite = np.isfinite(values.astype(float))
    if not finite.all():
        ids = best.loc[~finite, "run_id"].astype(str).tolist() if "run_id" in best else []
        skipped.append(
            (
                f"best runs without a {report_on}",
                f"{len(ids)} selected run(s) have no finite {report_on} and are left out of the fits"
                + (f": {', '.join(ids)}" if ids else ""),
            )
        )
    return best[finite].assign(loss=values[finite].astype(float)).reset_index(drop=True)


def _table(best: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """`columns` of a best-run table, the optional ones only where the runs have them."""
    return best.reindex(columns=[c for c in columns if c not in _OPTIONAL_COLUMNS or c in best])


def _noise(table: pd.DataFrame) -> np.ndarray | None:
    """The rows' `loss_sd` as per-point noise when every row has a finite one, else None (noise from residuals)."""
    if NOISE_COLUMN not in table:
        return None
    sd = pd.to_numeric(table[NOISE_COLUMN], errors="coerce").to_numpy(dtype=float)
    return sd if sd.size and np.all(np.isfinite(sd) & (sd >= 0)) else None


def _size_scaling(best: pd.DataFrame, skipped: Skipped, options: dict) -> list[SizeScaling]:
    if best.empty:
        skipped.append(("loss vs N", "no finished runs of kind 'pretrain'"))
    results = []
    for (corpus, recipe, budget), table in best.groupby(["corpus", "recipe", "token_budget"], sort=True):
        table = _table(table.sort_values("n_params_total"), SIZE_COLUMNS).reset_index(drop=True)
        fit = None
        if len(table) >= MIN_POINTS:
            fit = fit_power_law(table["n_params_total"], table["loss"], scale=BILLION, noise=_noise(table), **options)
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
            if curve["k"].nunique() >= MIN_K_POINTS:
                curves[float(n)] = curve
            else:
                skipped.append(
                    (
                        f"loss vs K, {where}, N = {human_count(n)}",
                        f"needs >= {MIN_K_POINTS} ensemble sizes, found {curve['k'].nunique()}",
                    )
                )
        joint = None
        if len(curves) >= MIN_POINTS:
            used = table[table["n_params_total"].isin(curves)]
            columns = ["n_params_total", "k", "loss"] + ([NOISE_COLUMN] if _noise(used) is not None else [])
            joint = joint_asymptote(used[columns], n_scale=BILLION, **options)
            k_fits = joint.k_fits
        else:
            skipped.append(
                (f"joint N, K limit, {where}", f"needs K-curves at >= {MIN_POINTS} model sizes, found {len(curves)}")
            )
            k_fits = {n: fit_k_law(c["k"], c["loss"], noise=_noise(c), **options) for n, c in curves.items()}
        table = _table(table, MEMBER_COLUMNS).sort_values(["n_params_total", "k"]).reset_index(drop=True)
        results.append(EnsembleScaling(corpus, recipe, int(budget), table, k_fits, joint, _k_law_notes(k_fits)))
    return results


def _k_law_notes(k_fits: dict[float, PowerLawFit]) -> tuple[str, ...]:
    """How the K-laws were fitted: which fix the exponent, and why."""
    fixed = [n for n, fit in k_fits.items() if fit.alpha_fixed]
    if not fixed:
        return ()
    sizes = ", ".join(human_count(n) for n in fixed)
    return (
        f"K-laws at N = {sizes} fix the exponent at {K_EXPONENT:g} (loss = B / K + E_K): fewer than "
        f"{FREE_K_EXPONENT_MIN} member counts, and the paper finds loss falls about as 1/K; from "
        f"{FREE_K_EXPONENT_MIN} member counts on, all three parameters are fitted",
    )


def _data_scaling(
    best: pd.DataFrame,
    sizes: list[SizeScaling],
    ensembles: list[EnsembleScaling],
    skipped: Skipped,
    options: dict,
    *,
    every_asymptote: bool = False,
) -> list[DataScaling]:
    """Per corpus, one series per recipe (its best run at each D; every recipe with >= 3 budgets gets its own law),
    plus its N -> inf and N, K -> inf asymptotes at each D where those fits are well conditioned (`every_asymptote`:
    wherever they were made)."""
    series: dict[tuple[str, str], dict[int, float]] = {}
    spread: dict[tuple[str, str], dict[int, float]] = {}
    for row in best.itertuples(index=False):
        series.setdefault((row.corpus, row.recipe), {})[int(row.token_budget)] = float(row.loss)
        sd = float(getattr(row, NOISE_COLUMN, math.nan))
        spread.setdefault((row.corpus, row.recipe), {})[int(row.token_budget)] = sd
    measured = set(series)
    for size in sizes:
        if size.fit and (every_asymptote or size.fit.well_conditioned):
            series.setdefault((size.corpus, f"{size.recipe} (N -> inf)"), {})[size.token_budget] = size.fit.E
    for ensemble in ensembles:
        if ensemble.joint and (every_asymptote or ensemble.joint.well_conditioned):
            name = f"{ensemble.recipe} ensembles (N, K -> inf)"
            series.setdefault((ensemble.corpus, name), {})[ensemble.token_budget] = ensemble.joint.E
    results = []
    for (corpus, name), losses in sorted(series.items()):
        losses = dict(sorted(losses.items()))
        sds = spread.get((corpus, name), {})
        loss_sd = {d: sds[d] for d in losses} if sds and all(np.isfinite(list(sds.values()))) else None
        fit = None
        if len(losses) >= MIN_POINTS:
            noise = list(loss_sd.values()) if loss_sd else None
            fit = fit_power_law(list(losses), list(losses.values()), scale=BILLION, noise=noise, **options)
        else:
            skipped.append((f"data scaling, {name}", f"needs >= {MIN_POINTS} token budgets, found {len(losses)}"))
        results.append(DataScaling(corpus, name, losses, fit, loss_sd, (corpus, name) in measured))
    return results


class _Target(NamedTuple):
    series: str
    token_budget: int
    loss: float


def joint_bound_series(recipe: str) -> str:
    """The series of a recipe's K -> inf limit at its largest model size: a bound on its joint N, K -> inf limit
    (which lies below it wherever the limit falls in N, as the paper's law in N does)."""
    return f"{recipe} ensembles (K -> inf, largest N)"


def _targets(
    corpus: str, data: list[DataScaling], ensembles: list[EnsembleScaling], *, every_asymptote: bool = False
) -> list[_Target]:
    """What the data efficiency is measured for: every series but the reference's at each of its budgets (a
    recipe's best run as '<recipe> (best single model)', its asymptotes by their series name), each size's
    largest ensemble ('ensemble K=5 <preset>', the recipe added where several recipes ensemble), and each ensemble
    recipe's K -> inf limit at its largest size (`joint_bound_series`; from a well-conditioned K-fit unless
    `every_asymptote`)."""
    targets = []
    for d in data:
        if d.corpus != corpus or d.series == REFERENCE_RECIPE:
            continue
        name = f"{d.series} (best single model)" if d.measured else d.series
        targets += [_Target(name, budget, loss) for budget, loss in d.losses.items()]
    ensembles = [e for e in ensembles if e.corpus == corpus]
    several = len({e.recipe for e in ensembles}) > 1
    for ensemble in ensembles:
        for _, curve in ensemble.table.groupby("n_params_total", sort=True):
            row = curve.loc[curve["k"].idxmax()]
            size = row["preset"] if isinstance(row["preset"], str) else human_count(row["n_params_total"])
            recipe = f" ({ensemble.recipe})" if several else ""
            targets.append(_Target(f"ensemble K={row['k']:g} {size}{recipe}", ensemble.token_budget, row["loss"]))
        if ensemble.k_fits:
            largest = ensemble.k_fits[max(ensemble.k_fits)]
            if every_asymptote or largest.well_conditioned:
                targets.append(_Target(joint_bound_series(ensemble.recipe), ensemble.token_budget, largest.E))
    return targets


def _efficiency(
    data: list[DataScaling], ensembles: list[EnsembleScaling], skipped: Skipped, *, every_asymptote: bool = False
) -> pd.DataFrame:
    """Data efficiency of every target (`_targets`) at its budget D over the reference recipe of the same corpus,
    normalised at the reference's own best loss at D (`data_efficiency`): by the reference's data law where it is
    usable (well conditioned), and by monotone interpolation between its trained budgets where the target's loss
    lies inside their range (`interpolated_data`)."""
    rows = []
    for corpus in sorted({d.corpus for d in data}):
        where = f" ({corpus})" if corpus and len({d.corpus for d in data}) > 1 else ""
        reference = next((d for d in data if d.corpus == corpus and d.series == REFERENCE_RECIPE), None)
        if reference is None:
            skipped.append(("data efficiency" + where, f"no finished {REFERENCE_RECIPE!r} runs to measure against"))
            continue
        targets = _targets(corpus, data, ensembles, every_asymptote=every_asymptote)
        law = reference.fit if reference.fit is not None and invertible(reference.fit) else None
        if law is None or not law.well_conditioned:
            skipped.append(("data efficiency" + where, _budgets_to_train(reference, targets, usable=law is not None)))
        budgets, losses = list(reference.losses), list(reference.losses.values())
        untrained = sorted({t.token_budget for t in targets if t.token_budget not in reference.losses})
        if untrained:
            skipped.append(
                (
                    "data efficiency" + where,
                    f"the {REFERENCE_RECIPE!r} recipe has no finished run at D = "
                    f"{', '.join(human_count(b) for b in untrained)}, so targets there have no reference loss",
                )
            )
        for target in targets:
            reference_loss = reference.losses.get(target.token_budget)
            if reference_loss is None:
                continue
            by_law, how = math.nan, ["law: unusable (see skipped)"]
            if law is not None:
                by_law = data_efficiency(target.loss, reference_loss, law)
                how = ["law: the standard data law inverted at the loss, over the same at the standard's best at D"]
                if not law.well_conditioned:
                    how[0] += f" (its asymptote is not pinned down: {'; '.join(law.issues)})"
                if math.isnan(by_law):
                    how = ["law: the standard's own loss at D lies below its law's asymptote"]
            interpolated = math.nan
            if len(budgets) >= 2:
                needed = interpolated_data(target.loss, budgets, losses)
                at_reference = interpolated_data(reference_loss, budgets, losses)
                if needed is not None and at_reference is not None:
                    interpolated = needed / at_reference
                    how.append("interpolated: PCHIP of log D on the standard's best losses")
                else:
                    how.append("interpolated: the loss lies outside the standard's trained losses")
            else:
                how.append("interpolated: needs the standard at >= 2 budgets")
            rows.append(
                {
                    "corpus": corpus,
                    "series": target.series,
                    "token_budget": target.token_budget,
                    "loss": target.loss,
                    "reference_loss": reference_loss,
                    "efficiency": by_law,
                    "efficiency_interpolated": interpolated,
                    "method": "; ".join(how),
                }
            )
    return pd.DataFrame(rows, columns=list(EFFICIENCY_COLUMNS))


def _budgets_to_train(reference: DataScaling, targets: list[_Target], *, usable: bool = False) -> str:
    """Why the reference's data law is unusable (or, `usable`, used though ill-conditioned), and which token budgets
    of the reference recipe would fix it."""
    budgets = sorted(reference.losses)
    largest = budgets[-1]
    at_largest = reference.losses[largest]
    if reference.fit is None:
        why = f"has {len(budgets)} token budget(s), too few for a law (>= {MIN_POINTS})"
    else:
        why = f"is ill-conditioned ({'; '.join(reference.fit.issues)})"
    parts = [f"the {REFERENCE_RECIPE!r} data law {why}"]
    if usable:
        parts[0] += (
            ": its multipliers are read off it all the same, and their intervals (the analysis redone on resamples) "
            "say how far that can be trusted"
        )
    below = [t.loss for t in targets if t.loss < at_largest]
    larger = ", ".join(human_count(factor * largest) for factor in (2, 4, 8))
    if below:
        parts.append(
            f"the targets' losses (down to {min(below):.4f}) lie below the {REFERENCE_RECIPE} recipe's best loss at "
            f"its largest trained budget Dmax = {human_count(largest)} ({at_largest:.4f}), so train the "
            f"{REFERENCE_RECIPE} recipe at budgets above it: {larger} (2x, 4x, 8x Dmax)"
        )
    else:
        parts.append(f"train the {REFERENCE_RECIPE} recipe at more budgets, e.g. {larger} (2x, 4x, 8x Dmax)")
    if len(budgets) < USABLE_DATA_BUDGETS:
        parts.append(
            f"at least {USABLE_DATA_BUDGETS} budgets in all for a 3-parameter law (found {len(budgets)}: 3 points "
            "fit it exactly and leave no noise estimate)"
        )
    return "; ".join(parts)
