"""Validation loss against average benchmark error across models (the paper's Figure 10)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from hf_infcompute.errors import InputError


def plot_loss_vs_error(
    points: Sequence[tuple[str, float, float]],
    path: str | os.PathLike,
    *,
    title: str = "Validation loss vs. downstream error",
) -> Path:
    """Scatter (name, validation loss, average error as a fraction) points, labelled, with a least-squares line
    when two or more losses differ; save a PNG to `path`."""
    if not points:
        raise InputError("no models to plot; give (name, val_loss, avg_error) for at least one model")
    for name, loss, error in points:
        if not (math.isfinite(loss) and math.isfinite(error) and 0.0 <= error <= 1.0):
            raise InputError(f"{name}: need a finite validation loss and an error in [0, 1], got {loss}, {error}")
    losses = np.array([p[1] for p in points], dtype=float)
    errors = 100 * np.array([p[2] for p in points], dtype=float)

    # A bare Figure renders with the Agg canvas and leaves pyplot's global backend alone.
    fig = Figure(figsize=(5.5, 4.0))
    ax = fig.subplots()
    ax.scatter(losses, errors, zorder=3)
    for (name, _, _), x, y in zip(points, losses, errors):
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if np.ptp(losses) > 0:
        slope, intercept = np.polyfit(losses, errors, 1)
        xs = np.linspace(losses.min(), losses.max(), 2)
        ax.plot(xs, slope * xs + intercept, "--", color="gray", label=f"fit: {slope:.1f} points per nat")
        ax.legend(loc="lower right", fontsize=8)
    ax.margins(x=0.15, y=0.15)  # room for the labels
    ax.set_xlabel("validation loss (nats per token)")
    ax.set_ylabel("average benchmark error (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path
