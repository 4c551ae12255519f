"""Figures in the style of the paper: losses as points, fitted laws as lines, asymptotes as dashed lines.

Each function takes fits (which carry their points) and a path, writes a PNG and returns the path. A bare
`Figure` renders with the Agg canvas and leaves pyplot's global backend alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from itertools import cycle
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from hf_infcompute.errors import InputError
from hf_infcompute.scaling.joint import JointFit
from hf_infcompute.scaling.power_law import PowerLawFit

_ASYMPTOTE = "asymptote-label"
_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def human_count(value: float) -> str:
    """150000000 -> '150M', 1.4e9 -> '1.4B', 8192 -> '8.19K'."""
    for factor, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= 0.9995 * factor:  # 999999 is '1M', not '1e+03K'
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def plot_loss_vs_params(
    fits: Mapping[str, PowerLawFit], path: str | os.PathLike, *, title: str = "", split: str = "validation"
) -> Path:
    """Loss on `split` against model size N (log axis), one series per label (e.g. recipe), with fitted laws and
    asymptotes."""
    return _plot_series(fits, path, xlabel="parameters N", title=title, split=split)


def plot_loss_vs_members(
    fits: Mapping[float, PowerLawFit], path: str | os.PathLike, *, title: str = "", split: str = "validation"
) -> Path:
    """Ensemble loss on `split` against the number of members K, one series per model size N."""
    by_size = {f"N = {human_count(n)}": fit for n, fit in sorted(fits.items())}
    return _plot_series(by_size, path, xlabel="ensemble members K", title=title, counts=False, split=split)


def plot_joint_fit(joint: JointFit, path: str | os.PathLike, *, title: str = "", split: str = "validation") -> Path:
    """Two panels: the K-laws at each N, and the law in N over their K -> inf asymptotes with its N -> inf limit."""
    fig = Figure(figsize=(11.0, 4.2))
    left, right = fig.subplots(1, 2)
    for color, (n, fit) in zip(cycle(_COLORS), sorted(joint.k_fits.items())):
        _draw_fit(left, fit, f"N = {human_count(n)}", color)
    members = _xs(joint.k_fits.values())
    _finish(left, members, xlabel="ensemble members K", title="K → ∞ at each N", counts=False, split=split)

    n_fit = joint.n_fit
    errors = [fit.E_stderr if math.isfinite(fit.E_stderr) else 0.0 for _, fit in sorted(joint.k_fits.items())]
    label = "K → ∞ asymptotes" if joint.well_conditioned else "K → ∞ asymptotes (ill-conditioned fit)"
    right.errorbar(n_fit.x, n_fit.loss, yerr=errors, fmt="o", color="black", capsize=3, zorder=3, label=label)
    _draw_curve(right, n_fit, "black")
    if joint.well_conditioned:
        _draw_asymptote(right, joint.E, "tab:red", joint.E_stderr, label="N, K → ∞")
    _finish(right, _xs([n_fit]), xlabel="parameters N", title="N → ∞ over the K-asymptotes", split=split)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_data_scaling(
    series: Mapping[str, PowerLawFit | Mapping[float, float]],
    path: str | os.PathLike,
    *,
    title: str = "",
    split: str = "validation",
) -> Path:
    """Loss on `split` against the token budget D, one series per recipe: a fitted data law with its asymptote, or
    bare points {D: loss} (a series with too few budgets for a law), drawn as points joined by a thin line."""
    return _plot_series(series, path, xlabel="tokens D", title=title, split=split)


def plot_data_efficiency(
    efficiency: Mapping[str, Mapping[float, float]],
    path: str | os.PathLike,
    *,
    reference: str = "standard",
    title: str = "",
    intervals: Mapping[str, Mapping[float, tuple[float, float]]] | None = None,
) -> Path:
    """Bars of data efficiency (x-fold over `reference`) per series, grouped by token budget D. An unbounded
    efficiency (a loss the reference never reaches) is a hatched bar labelled 'unbounded'; NaN (none) no bar.
    `intervals[series][D]`: a (low, high) interval drawn as a whisker on that bar; a high end beyond twice the
    largest bar (or unbounded) is cut at the top of the axis and marked with an arrow."""
    efficiency = {label: {d: v for d, v in by_d.items() if not math.isnan(v)} for label, by_d in efficiency.items()}
    efficiency = {label: by_d for label, by_d in efficiency.items() if by_d}
    budgets = sorted({d for by_d in efficiency.values() for d in by_d})
    if not budgets:
        raise InputError("no data efficiencies to plot")
    finite = [v for by_d in efficiency.values() for v in by_d.values() if math.isfinite(v)]
    cap = 2 * max(finite + [1.0])
    highs = [
        min(high, cap)
        for label, by_d in (intervals or {}).items()
        if label in efficiency
        for _, high in by_d.values()
        if not math.isnan(high)
    ]
    ceiling = 1.25 * max(finite + highs + [1.0])
    fig = Figure(figsize=(min(10.0, max(5.5, 1.2 + 0.8 * len(budgets) * len(efficiency))), 4.0))
    ax = fig.subplots()
    width = 0.8 / len(efficiency)
    for i, (color, (label, by_d)) in enumerate(zip(cycle(_COLORS), efficiency.items())):
        legend_label: str | None = label
        for j, d in enumerate(budgets):
            if d not in by_d:
                continue
            value, x = by_d[d], j + (i - (len(efficiency) - 1) / 2) * width
            bounded = math.isfinite(value)
            height = value if bounded else ceiling
            ax.bar(
                x,
                height,
                width,
                color=color,
                hatch=None if bounded else "//",
                alpha=1.0 if bounded else 0.4,
                label=legend_label,
            )
            legend_label = None
            whisker = (intervals or {}).get(label, {}).get(d)
            label_at = height
            if bounded and whisker is not None and math.isfinite(whisker[0]) and not math.isnan(whisker[1]):
                low, high = whisker
                top = min(high, ceiling * 1.1)
                ax.errorbar(x, value, yerr=[[value - low], [top - value]], fmt="none", ecolor="black", capsize=3, lw=1)
                if top < high:
                    ax.plot(x, top, marker="^", color="black", markersize=4)
                label_at = top if top == high else height  # above the whisker, or on the bar where it is cut
            ax.annotate(
                f"{value:.2f}x" if bounded else "unbounded",
                (x, label_at),
                ha="center",
                va="bottom",
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.8},
                fontsize=8,
                textcoords="offset points",
                xytext=(0, 2),
            )
    ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(budgets)), [f"D = {human_count(d)}" for d in budgets])
    ax.set_ylabel(f"data efficiency over {reference} (x)")
    ax.set_ylim(0, ceiling * 1.12)
    ax.set_title(title or f"Data efficiency over the {reference} recipe")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _plot_series(
    series: Mapping[str, PowerLawFit | Mapping[float, float]],
    path: str | os.PathLike,
    *,
    xlabel: str,
    title: str,
    split: str,
    counts: bool = True,
) -> Path:
    if not series:
        raise InputError("no fits to plot")
    fig = Figure(figsize=(6.0, 4.2))
    ax = fig.subplots()
    xs = []
    for color, (label, drawn) in zip(cycle(_COLORS), series.items()):
        if isinstance(drawn, PowerLawFit):
            _draw_fit(ax, drawn, label, color)
            xs += list(drawn.x)
        else:
            points = sorted(drawn.items())
            ax.plot(*zip(*points), "o-", color=color, linewidth=0.8, label=f"{label} (no law: too few points)")
            xs += [x for x, _ in points]
    _finish(ax, xs, xlabel=xlabel, title=title, counts=counts, split=split)
    return _save(fig, path)


def _xs(fits: Iterable[PowerLawFit]) -> list[float]:
    return [x for fit in fits for x in fit.x]


def _draw_fit(ax: Axes, fit: PowerLawFit, label: str, color: str) -> None:
    """Points, the fitted law and its asymptote; an ill-conditioned law is dotted and draws no asymptote, which
    would read as an estimate."""
    label = label if fit.well_conditioned else f"{label} (ill-conditioned fit)"
    ax.plot(fit.x, fit.loss, "o", color=color, label=label, zorder=3)
    _draw_curve(ax, fit, color)
    if fit.well_conditioned:
        _draw_asymptote(ax, fit.E, color, fit.E_stderr)


def _draw_curve(ax: Axes, fit: PowerLawFit, color: str) -> None:
    """The fitted law over the points' range, extended a little towards the limit (on a log scale)."""
    low, high = math.log(min(fit.x)), math.log(max(fit.x))
    xs = np.exp(np.linspace(low, high + 0.2 * (high - low), 200))
    style = "-" if fit.well_conditioned else ":"
    ax.plot(xs, fit.predict(xs), style, color=color, linewidth=1.5)


def _draw_asymptote(ax: Axes, value: float, color: str, stderr: float, *, label: str | None = None) -> None:
    ax.axhline(value, color=color, linestyle="--", linewidth=1, alpha=0.8, label=label)
    text = f"{value:.3f}" + (f" ± {stderr:.3f}" if math.isfinite(stderr) else "")
    # At the right edge, in the margin past the points that `_finish` leaves free for these labels.
    ax.annotate(
        text,
        xy=(1.0, value),
        xycoords=("axes fraction", "data"),
        xytext=(-3, 2),
        textcoords="offset points",
        ha="right",
        va="bottom",
        fontsize=8,
        color=color,
        gid=_ASYMPTOTE,
        bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
    )


def _finish(ax: Axes, xs: Iterable[float], *, xlabel: str, title: str, split: str, counts: bool = True) -> None:
    """Log x axis with ticks at the points' x `xs` (as 150M / 1.4B with `counts`, else as plain numbers); the y
    axis names the `split` the losses were measured on."""
    ax.set_xscale("log")
    ticks = sorted(set(xs))
    span = math.log(ticks[-1] / ticks[0]) or 1.0
    ax.set_xlim(ticks[0] * math.exp(-0.05 * span), ticks[-1] * math.exp(0.5 * span))
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: human_count(value) if counts else f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{split} loss (nats per token)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    low, high = ax.get_ylim()
    ax.set_ylim(low - 0.05 * (high - low), high)  # room below the lowest asymptote line for its label
    _spread_asymptote_labels(ax)


def _spread_asymptote_labels(ax: Axes, gap: float = 10.0) -> None:
    """Move asymptote labels up so that labels of nearby asymptotes are at least `gap` points apart."""
    labels = sorted((t for t in ax.texts if t.get_gid() == _ASYMPTOTE), key=lambda t: t.xy[1])
    low, high = ax.get_ylim()
    height = ax.figure.get_figheight() * 72 * ax.get_position().height  # axes height in points
    previous = -math.inf
    for label in labels:
        y = (label.xy[1] - low) / (high - low) * height + 2
        y = max(y, previous + gap)
        label.xyann = (label.xyann[0], y - (label.xy[1] - low) / (high - low) * height)
        previous = y


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path
