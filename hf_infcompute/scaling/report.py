"""The scaling report's files: `write_report(report, folder)` writes `fits.json`, the figures and `report.md` of a
`ScalingReport` (computed by `hf_infcompute.scaling.analysis.build_report`); `report_json` is its JSON form."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hf_infcompute.records import write_json_atomic, write_text_atomic
from hf_infcompute.scaling.analysis import REFERENCE_RECIPE, ScalingReport, SizeScaling, split_name
from hf_infcompute.scaling.plots import (
    human_count,
    plot_data_efficiency,
    plot_data_scaling,
    plot_joint_fit,
    plot_loss_vs_members,
    plot_loss_vs_params,
)
from hf_infcompute.scaling.power_law import PowerLawFit


def write_report(
    report: ScalingReport,
    folder: str | os.PathLike,
    *,
    efficiency_intervals: Mapping[str, Mapping[float, tuple[float, float]]] | None = None,
) -> Path:
    """Write `fits.json`, the figures (PNG) and `report.md` into `folder`; return the path of `report.md`.
    `efficiency_intervals[series][D]`: (low, high) intervals of data-efficiency multipliers, drawn as whiskers on
    their bars (`plot_data_efficiency`; the study's come from its resampled analysis)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "fits.json", report_json(report))
    lines = [
        "# Scaling report",
        "",
        f"{report.n_runs} finished runs from `{report.source}`. Losses are on the {report.split} split; each best "
        f"run was chosen on the {split_name(report.select_on)} split. Laws: `L(x) = A / x^alpha + E` with N and D "
        "in billions and K in members; E is the asymptote. Uncertainty: parametric bootstrap "
        f"({report.n_bootstrap} replicates; ± one standard error, 95% intervals); a law with as many free "
        "parameters as points fits them exactly and has an interval only where the measured noise of its points "
        "was given.",
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
    lines += _data_section(report, folder, efficiency_intervals)
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
        "params": [
            {
                "corpus": s.corpus,
                "recipe": s.recipe,
                "token_budget": s.token_budget,
                "best_runs": s.table["run_id"].tolist(),
                "fit": s.fit.to_dict() if s.fit else None,
            }
            for s in report.sizes
        ],
        "members": [
            {
                "corpus": e.corpus,
                "recipe": e.recipe,
                "token_budget": e.token_budget,
                "n_params_total": n,
                "notes": list(e.notes),
                "fit": fit.to_dict(),
            }
            for e in report.ensembles
            for n, fit in e.k_fits.items()
        ],
        "joint": [
            {"corpus": e.corpus, "recipe": e.recipe, "token_budget": e.token_budget, "fit": e.joint.to_dict()}
            for e in report.ensembles
            if e.joint
        ],
        "data": [
            {
                "corpus": d.corpus,
                "series": d.series,
                "losses": {str(k): v for k, v in d.losses.items()},
                "fit": d.fit.to_dict() if d.fit else None,
            }
            for d in report.data
        ],
        "data_efficiency": [
            {
                **row,
                "token_budget": int(row["token_budget"]),
                "efficiency": _multiplier_json(row["efficiency"]),
                "efficiency_interpolated": _multiplier_json(row["efficiency_interpolated"]),
            }
            for row in report.efficiency.to_dict("records")
        ],
        "reference_recipe": REFERENCE_RECIPE,
        "select_on": report.select_on,
        "report_on": report.report_on,
        "skipped": [{"analysis": analysis, "reason": reason} for analysis, reason in report.skipped],
    }


def _size_section(report: ScalingReport, folder: Path) -> list[str]:
    if not report.sizes:
        return []
    lines = ["", "## Loss vs model size N"]
    reported = f"{report.split} loss"
    selection = [] if report.select_on == report.report_on else [f"{split_name(report.select_on)} loss (selection)"]
    groups: dict[tuple[str, int], list[SizeScaling]] = {}
    for size in report.sizes:
        groups.setdefault((size.corpus, size.token_budget), []).append(size)
    for (corpus, budget), sizes in groups.items():
        lines += ["", f"### D = {human_count(budget)} tokens{report.corpus_note(corpus)}"]
        for size in sizes:
            lines += ["", f"**{size.recipe}**: best run per N", ""]
            lines += markdown_table(
                ["preset", "N", reported, *selection, "LR", "WD", "epochs", "runs"],
                [
                    [
                        _cell(row.preset),
                        human_count(row.n_params_total),
                        f"{row.loss:.4f}",
                        *([f"{getattr(row, report.select_on):.4f}"] if selection else []),
                        _cell(row.learning_rate),
                        _cell(row.weight_decay),
                        _cell(row.num_train_epochs),
                        _cell(row.runs),
                    ]
                    for row in size.table.itertuples()
                ],
            )
            if size.fit:
                lines += ["", _fit_line(size.fit, "N")]
        fits = {s.recipe: s.fit for s in sizes if s.fit}
        if fits:
            name = f"params_D{budget}{_corpus_slug(report, corpus)}.png"
            plot_loss_vs_params(fits, folder / name, title=f"D = {human_count(budget)} tokens", split=report.split)
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
            by_k = dict(zip(curve["k"], curve["loss"]))
            fit = ensemble.k_fits.get(float(n))
            limit = f"{fit.E:.4f} {_stderr(fit.E_stderr, short=True)}" if fit else "—"
            rows.append([human_count(n)] + [f"{by_k[k]:.4f}" if k in by_k else "" for k in ks] + [limit])
        lines += [f"{report.split.capitalize()} loss of the best ensemble per (N, K), and the K -> inf limit.", ""]
        lines += markdown_table(["N"] + [f"K={k:g}" for k in ks] + ["K -> inf"], rows)
        lines += ["", *(f"Note: {note}." for note in ensemble.notes)] if ensemble.notes else []
        slug = f"{_file_safe(ensemble.recipe)}_D{ensemble.token_budget}{_corpus_slug(report, ensemble.corpus)}"
        if ensemble.k_fits:
            name = f"members_{slug}.png"
            plot_loss_vs_members(ensemble.k_fits, folder / name, title=f"Ensembles: {where}", split=report.split)
            lines += ["", f"![loss vs K, {where}]({name})"]
        if ensemble.joint:
            joint = ensemble.joint
            interval = (
                f", 95% interval [{joint.E_interval[0]:.4f}, {joint.E_interval[1]:.4f}]" if joint.E_interval else ""
            )
            lines += [
                "",
                f"Joint limit N, K -> inf: **{joint.E:.4f}** {_stderr(joint.E_stderr)}{interval} "
                f"(law in N over the K-asymptotes: `{joint.n_fit.formula('N')}`).",
            ]
            lines += _conditioning(joint.issues)
            name = f"joint_{slug}.png"
            plot_joint_fit(joint, folder / name, title=f"Joint scaling: {where}", split=report.split)
            lines += ["", f"![joint limit, {where}]({name})"]
    return lines


def _data_section(
    report: ScalingReport, folder: Path, intervals: Mapping[str, Mapping[float, tuple[float, float]]] | None
) -> list[str]:
    if not report.data:
        return []
    lines = [
        "",
        "## Data scaling: loss vs token budget D",
        "",
        f"{report.split.capitalize()} losses. Series: each recipe's best run at each D (every recipe with "
        "enough budgets gets its own law); `(N -> inf)`: its asymptote in N at that D; `ensembles (N, K -> inf)`: "
        "its joint limit at that D (asymptotes only where their fit is well conditioned).",
        "",
    ]
    for corpus in sorted({d.corpus for d in report.data}):
        data = [d for d in report.data if d.corpus == corpus]
        budgets = sorted({b for d in data for b in d.losses})
        if report.multiple_corpora:
            lines += ["", f"### {corpus}", ""]
        lines += markdown_table(
            ["series"] + [f"D = {human_count(b)}" for b in budgets] + ["D -> inf"],
            [
                [d.series]
                + [f"{d.losses[b]:.4f}" if b in d.losses else "" for b in budgets]
                + [f"{d.fit.E:.4f} {_stderr(d.fit.E_stderr, short=True)}" if d.fit else "—"]
                for d in data
            ],
        )
        for d in data:
            if d.fit:
                lines += ["", f"{d.series}: " + _fit_line(d.fit, "D")]
        name = f"data{_corpus_slug(report, corpus)}.png"
        plot_data_scaling(
            {d.series: d.fit or d.losses for d in data}, folder / name, title="Data scaling", split=report.split
        )
        lines += ["", f"![data scaling]({name})"]
        efficiency = report.efficiency[report.efficiency["corpus"] == corpus]
        if not efficiency.empty:
            lines += [
                "",
                f"### Data efficiency over {REFERENCE_RECIPE}",
                "",
                f"How many times more data the {REFERENCE_RECIPE} recipe needs to reach each loss than to reach its "
                "own best loss at the same D, as the authors compute it (marin's `data_efficiency_from_loss`): *by the "
                f"law*, both read off the inverted {REFERENCE_RECIPE} data law, so the law's residual at D cancels "
                "(close to, but not the same as, dividing by D); *interpolated*, both read off a monotone (PCHIP) "
                f"interpolation of log D against the {REFERENCE_RECIPE} recipe's best losses, only where the loss "
                "lies inside their range. n/a: not available (see the method and Skipped).",
                "",
            ]
            lines += markdown_table(
                ["series", "D", f"{report.split} loss", f"{REFERENCE_RECIPE} at D", "by the law", "interpolated"],
                [
                    [
                        row.series,
                        human_count(row.token_budget),
                        f"{row.loss:.4f}",
                        f"{row.reference_loss:.4f}",
                        efficiency_text(row.efficiency),
                        efficiency_text(row.efficiency_interpolated),
                    ]
                    for row in efficiency.itertuples()
                ],
            )
            bars = {
                series: dict(zip(rows["token_budget"], rows["efficiency"]))
                for series, rows in efficiency.groupby("series", sort=False)
            }
            if any(not math.isnan(v) for by_d in bars.values() for v in by_d.values()):
                name = f"efficiency{_corpus_slug(report, corpus)}.png"
                plot_data_efficiency(bars, folder / name, reference=REFERENCE_RECIPE, intervals=intervals)
                lines += ["", f"![data efficiency by the law]({name})"]
                if intervals:
                    lines += ["", "Whiskers: each multiplier's 95% interval, where one was computed."]
    return lines


def _fit_line(fit: PowerLawFit, variable: str) -> str:
    interval = f", 95% interval [{fit.E_interval[0]:.4f}, {fit.E_interval[1]:.4f}]" if fit.E_interval else ""
    line = (
        f"Fit `L({variable}) = {fit.formula(variable)}`: asymptote **{fit.E:.4f}** {_stderr(fit.E_stderr)}{interval}."
    )
    notes = [f"Note: {note}." for note in fit.notes]
    return "\n\n".join([line, *notes, *_conditioning(fit.issues)])


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
    if short:
        return "n/a"
    return "(no uncertainty estimate: as many points as free parameters and no measured noise, or no bootstrap)"


def efficiency_text(value: float) -> str:
    """'2.29x'; 'unbounded' for a loss the reference never reaches (inf); 'n/a' for none (NaN)."""
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f}x" if math.isfinite(value) else "unbounded"


def _multiplier_json(value: float) -> float | str | None:
    if math.isnan(value):
        return None
    return value if math.isfinite(value) else "unbounded"


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
