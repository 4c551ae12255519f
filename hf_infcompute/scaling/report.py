"""The scaling report of a results store: best losses, the laws they follow, their asymptotes, data efficiency.

`build_report(runs)` computes everything from the store's table (`load_runs`) and writes nothing;
`write_report(report, folder)` writes `fits.json`, the figures and `report.md`. An analysis that lacks points
is skipped with the reason, never filled in.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from hf_infcompute.errors import InputError
from hf_infcompute.records import write_json_atomic, write_text_atomic
from hf_infcompute.scaling.joint import JointFit, joint_asymptote
from hf_infcompute.scaling.plots import (
    human_count,
    plot_data_efficiency,
    plot_data_scaling,
    plot_joint_fit,
    plot_loss_vs_members,
    plot_loss_vs_params,
)
from hf_infcompute.scaling.power_law import PowerLawFit, data_efficiency, fit_power_law

REFERENCE_RECIPE = "standard"
BILLION = 1e9  # N and D enter the laws in billions, as in the paper
MIN_POINTS = 3
REQUIRED_COLUMNS = ("kind", "status", "recipe", "token_budget", "n_params_total", "val_loss")
Skipped = list[tuple[str, str]]  # (analysis, reason it was skipped)
SIZE_COLUMNS = ("preset", "n_params_total", "val_loss", "learning_rate", "weight_decay", "epochs", "run_id", "runs")


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
        raise InputError(f"no finished runs with a finite val_loss in {source}; train models into it first "
                         "(e.g. `hf-infcompute pretrain ... --output DIR`)")
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
    return _best(single, ["corpus", "recipe", "token_budget", "n_params_total"])


def best_per_members(runs: pd.DataFrame) -> pd.DataFrame:
    """Ensemble records: the best loss per (corpus, recipe, token_budget, N, K)."""
    ensembles = runs[runs["kind"] == "ensemble"]
    if ensembles.empty or "k" not in ensembles:
        return ensembles.iloc[0:0]
    return _best(ensembles, ["corpus", "recipe", "token_budget", "n_params_total", "k"])


def best_per_budget(runs: pd.DataFrame) -> pd.DataFrame:
    """Pre-training runs: the best loss per (corpus, recipe, token_budget), over model sizes and hyperparameters."""
    return _best(runs[runs["kind"] == "pretrain"], ["corpus", "recipe", "token_budget"])


def build_report(
    runs: pd.DataFrame,
    *,
    source: str = "the store",
    huber: float | None = None,
    n_bootstrap: int = 500,
    seed: int = 0,
) -> ScalingReport:
    """Every analysis the finished runs support (see the module docstring); `source` names the store in messages."""
    runs = finished_runs(runs, source)
    skipped: Skipped = []
    fit_options = {"huber": huber, "n_bootstrap": n_bootstrap, "seed": seed}
    sizes = _size_scaling(best_per_size(runs), skipped, fit_options)
    ensembles = _ensemble_scaling(best_per_members(runs), skipped, fit_options)
    data = _data_scaling(best_per_budget(runs), sizes, ensembles, skipped, fit_options)
    efficiency = _efficiency(data, skipped)
    return ScalingReport(source=source, n_runs=len(runs), n_bootstrap=n_bootstrap, sizes=sizes,
                         ensembles=ensembles, data=data, efficiency=efficiency, skipped=skipped)


def _best(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
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
            skipped.append((f"loss vs N, {recipe}, D = {human_count(budget)}",
                            f"needs >= {MIN_POINTS} model sizes, found {len(table)}"))
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
                skipped.append((f"loss vs K, {where}, N = {human_count(n)}",
                                f"needs >= {MIN_POINTS} ensemble sizes, found {len(curve)}"))
        joint = None
        if len(curves) >= MIN_POINTS:
            points = table[table["n_params_total"].isin(curves)][["n_params_total", "k", "val_loss"]]
            joint = joint_asymptote(points, n_scale=BILLION, **options)
            k_fits = joint.k_fits
        else:
            skipped.append((f"joint N, K limit, {where}",
                            f"needs K-curves at >= {MIN_POINTS} model sizes, found {len(curves)}"))
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
            skipped.append(("data efficiency", f"needs a data-scaling fit of the {REFERENCE_RECIPE!r} recipe "
                                               f"(>= {MIN_POINTS} token budgets)"))
            continue
        if not reference.well_conditioned:
            skipped.append(("data efficiency", f"the {REFERENCE_RECIPE!r} data law is ill-conditioned: "
                                               f"{'; '.join(reference.issues)}"))
            continue
        for d in data:
            if d.corpus == corpus and d.series != REFERENCE_RECIPE:
                for budget, loss in d.losses.items():
                    rows.append({"corpus": corpus, "series": d.series, "token_budget": budget, "loss": loss,
                                 "efficiency": data_efficiency(loss, budget, reference)})
    return pd.DataFrame(rows, columns=["corpus", "series", "token_budget", "loss", "efficiency"])


# ---- writing ---------------------------------------------------------------------------------------------------


def write_report(report: ScalingReport, folder: str | os.PathLike) -> Path:
    """Write `fits.json`, the figures (PNG) and `report.md` into `folder`; return the path of `report.md`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "fits.json", report_json(report))
    lines = [
        "# Scaling report",
        "",
        f"{report.n_runs} finished runs from `{report.source}`. Laws: `L(x) = A / x^alpha + E` with N and D in "
        "billions and K in members; E is the asymptote. Uncertainty: parametric bootstrap "
        f"({report.n_bootstrap} replicates; ± one standard error, 95% intervals).",
        "",
        "## Asymptotes",
        "",
    ]
    asymptotes = report.key_asymptotes()
    if asymptotes:
        lines += markdown_table(
            ["analysis", "asymptote E", "± stderr", "well conditioned"],
            [[a.analysis, f"{a.E:.4f}", _stderr(a.stderr, short=True), _conditioned(a.issues)] for a in asymptotes],
        )
    else:
        lines.append("No analysis had enough points for a fit (see Skipped).")
    lines += _size_section(report, folder)
    lines += _ensemble_section(report, folder)
    lines += _data_section(report, folder)
    if report.skipped:
        lines += ["", "## Skipped", ""] + [f"- {analysis}: {reason}" for analysis, reason in report.skipped]
    path = folder / "report.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def report_json(report: ScalingReport) -> dict[str, Any]:
    """Every fit of the report, JSON-ready (an unbounded data efficiency is the string 'unbounded')."""
    return {
        "source": report.source,
        "n_runs": report.n_runs,
        "law": "L(x) = A / (x / x_scale)^alpha + E",
        "params": [{"corpus": s.corpus, "recipe": s.recipe, "token_budget": s.token_budget,
                    "best_runs": s.table["run_id"].tolist(), "fit": s.fit.to_dict() if s.fit else None}
                   for s in report.sizes],
        "members": [{"corpus": e.corpus, "recipe": e.recipe, "token_budget": e.token_budget, "n_params_total": n,
                     "fit": fit.to_dict()} for e in report.ensembles for n, fit in e.k_fits.items()],
        "joint": [{"corpus": e.corpus, "recipe": e.recipe, "token_budget": e.token_budget, "fit": e.joint.to_dict()}
                  for e in report.ensembles if e.joint],
        "data": [{"corpus": d.corpus, "series": d.series, "losses": {str(k): v for k, v in d.losses.items()},
                  "fit": d.fit.to_dict() if d.fit else None} for d in report.data],
        "data_efficiency": [{**row, "token_budget": int(row["token_budget"]),
                             "efficiency": row["efficiency"] if math.isfinite(row["efficiency"]) else "unbounded"}
                            for row in report.efficiency.to_dict("records")],
        "reference_recipe": REFERENCE_RECIPE,
        "skipped": [{"analysis": analysis, "reason": reason} for analysis, reason in report.skipped],
    }


def _size_section(report: ScalingReport, folder: Path) -> list[str]:
    if not report.sizes:
        return []
    lines = ["", "## Loss vs model size N"]
    groups: dict[tuple[str, int], list[SizeScaling]] = {}
    for size in report.sizes:
        groups.setdefault((size.corpus, size.token_budget), []).append(size)
    for (corpus, budget), sizes in groups.items():
        lines += ["", f"### D = {human_count(budget)} tokens{report.corpus_note(corpus)}"]
        for size in sizes:
            lines += ["", f"**{size.recipe}**: best run per N", ""]
            lines += markdown_table(
                ["preset", "N", "val loss", "LR", "WD", "epochs", "runs"],
                [[_cell(row.preset), human_count(row.n_params_total), f"{row.val_loss:.4f}",
                  _cell(row.learning_rate), _cell(row.weight_decay), _cell(row.epochs), _cell(row.runs)]
                 for row in size.table.itertuples()],
            )
            if size.fit:
                lines += ["", _fit_line(size.fit, "N")]
        fits = {s.recipe: s.fit for s in sizes if s.fit}
        if fits:
            name = f"params_D{budget}{_corpus_slug(report, corpus)}.png"
            plot_loss_vs_params(fits, folder / name, title=f"D = {human_count(budget)} tokens")
            lines += ["", f"![loss vs N at D = {human_count(budget)}]({name})"]
    return lines


def _ensemble_section(report: ScalingReport, folder: Path) -> list[str]:
    if not report.ensembles:
        return []
    lines = ["", "## Ensembles: loss vs members K, and the joint limit N, K -> inf"]
    for ensemble in report.ensembles:
        where = f"{ensemble.recipe}, D = {human_count(ensemble.token_budget)}{report.corpus_note(ensemble.corpus)}"
        lines += ["", f"### {where}", ""]
        table = ensemble.table
        ks = sorted(table["k"].unique())
        rows = []
        for n, curve in table.groupby("n_params_total", sort=True):
            by_k = dict(zip(curve["k"], curve["val_loss"]))
            fit = ensemble.k_fits.get(float(n))
            limit = f"{fit.E:.4f} {_stderr(fit.E_stderr, short=True)}" if fit else "—"
            rows.append([human_count(n)] + [f"{by_k[k]:.4f}" if k in by_k else "" for k in ks] + [limit])
        lines += markdown_table(["N"] + [f"K={k:g}" for k in ks] + ["K -> inf"], rows)
        slug = f"{_file_safe(ensemble.recipe)}_D{ensemble.token_budget}{_corpus_slug(report, ensemble.corpus)}"
        if ensemble.k_fits:
            name = f"members_{slug}.png"
            plot_loss_vs_members(ensemble.k_fits, folder / name, title=f"Ensembles: {where}")
            lines += ["", f"![loss vs K, {where}]({name})"]
        if ensemble.joint:
            joint = ensemble.joint
            interval = f", 95% interval [{joint.E_interval[0]:.4f}, {joint.E_interval[1]:.4f}]" if joint.E_interval \
                else ""
            lines += ["", f"Joint limit N, K -> inf: **{joint.E:.4f}** {_stderr(joint.E_stderr)}{interval} "
                          f"(law in N over the K-asymptotes: `{joint.n_fit.formula('N')}`)."]
            lines += _conditioning(joint.issues)
            name = f"joint_{slug}.png"
            plot_joint_fit(joint, folder / name, title=f"Joint scaling: {where}")
            lines += ["", f"![joint limit, {where}]({name})"]
    return lines


def _data_section(report: ScalingReport, folder: Path) -> list[str]:
    if not report.data:
        return []
    lines = [
        "",
        "## Data scaling: loss vs token budget D",
        "",
        "Series: each recipe's best run at each D; `(N -> inf)`: its asymptote in N at that D; "
        "`ensembles (N, K -> inf)`: its joint limit at that D (asymptotes only where their fit is well conditioned).",
        "",
    ]
    for corpus in sorted({d.corpus for d in report.data}):
        data = [d for d in report.data if d.corpus == corpus]
        budgets = sorted({b for d in data for b in d.losses})
        if report.multiple_corpora:
            lines += ["", f"### {corpus}", ""]
        lines += markdown_table(["series"] + [f"D = {human_count(b)}" for b in budgets] + ["D -> inf"],
                        [[d.series] + [f"{d.losses[b]:.4f}" if b in d.losses else "" for b in budgets]
                         + [f"{d.fit.E:.4f} {_stderr(d.fit.E_stderr, short=True)}" if d.fit else "—"]
                         for d in data])
        for d in data:
            if d.fit:
                lines += ["", f"{d.series}: " + _fit_line(d.fit, "D")]
        fits = {d.series: d.fit for d in data if d.fit}
        if fits:
            name = f"data{_corpus_slug(report, corpus)}.png"
            plot_data_scaling(fits, folder / name, title="Data scaling")
            lines += ["", f"![data scaling]({name})"]
        efficiency = report.efficiency[report.efficiency["corpus"] == corpus]
        if not efficiency.empty:
            lines += ["", f"### Data efficiency over {REFERENCE_RECIPE}", "",
                      f"Tokens the {REFERENCE_RECIPE} recipe's data law needs to reach each loss, over D.", ""]
            lines += markdown_table(
                ["series", "D", "loss", "data efficiency"],
                [[row.series, human_count(row.token_budget), f"{row.loss:.4f}", efficiency_text(row.efficiency)]
                 for row in efficiency.itertuples()],
            )
            bars = {series: dict(zip(rows["token_budget"], rows["efficiency"]))
                    for series, rows in efficiency.groupby("series", sort=False)}
            name = f"efficiency{_corpus_slug(report, corpus)}.png"
            plot_data_efficiency(bars, folder / name, reference=REFERENCE_RECIPE)
            lines += ["", f"![data efficiency]({name})"]
    return lines


def _fit_line(fit: PowerLawFit, variable: str) -> str:
    interval = f", 95% interval [{fit.E_interval[0]:.4f}, {fit.E_interval[1]:.4f}]" if fit.E_interval else ""
    line = f"Fit `L({variable}) = {fit.formula(variable)}`: asymptote **{fit.E:.4f}** {_stderr(fit.E_stderr)}" \
        f"{interval}."
    return "\n\n".join([line, *_conditioning(fit.issues)])


def _conditioned(issues: tuple[str, ...]) -> str:
    return f"**no**: {'; '.join(issues)}" if issues else "yes"


def _conditioning(issues: Iterable[str]) -> list[str]:
    issues = list(issues)
    return [f"**Ill-conditioned, read with care**: {'; '.join(issues)}."] if issues else []


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    # Written by hand: pandas' to_markdown needs tabulate, which is not a dependency.
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _stderr(value: float, *, short: bool = False) -> str:
    if math.isfinite(value):
        return f"± {value:.4f}"
    return "n/a" if short else "(no uncertainty estimate: 3 points leave no noise estimate, or no bootstrap)"


def efficiency_text(value: float) -> str:
    return f"{value:.2f}x" if math.isfinite(value) else "unbounded"


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:g}" if isinstance(value, (int, float, np.number)) else str(value)


def _file_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


def _corpus_slug(report: ScalingReport, corpus: str) -> str:
    if not report.multiple_corpora:
        return ""
    corpora = sorted({s.corpus for s in report.sizes} | {e.corpus for e in report.ensembles})
    return f"_corpus{corpora.index(corpus)}"
