"""The training curves of each search's optimum: loss and learning rate per logging step, from the run records."""

from __future__ import annotations

import os
from collections.abc import Mapping
from itertools import cycle
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from hf_infcompute.records import read_record
from hf_infcompute.study.state import StudyState

CURVES_FIGURE = "training_curves.png"
_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def optimum_curves(state: StudyState, output_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Search key -> the `train_log` of its optimum's run; searches without a run or a logged record are left out."""
    curves = {}
    for key, search in state.searches.items():
        record = read_record(output_dir, search.run_id) if search.run_id else None
        if record and record.get("train_log"):
            curves[key] = record["train_log"]
    return curves


def plot_training_curves(curves: Mapping[str, list[Mapping[str, Any]]], path: str | os.PathLike) -> Path | None:
    """Training loss (left) and learning rate (right) against the optimizer step, one line per curve; writes a PNG
    and returns its path, or None when there is no curve to draw."""
    if not curves:
        return None
    fig = Figure(figsize=(11.0, 4.2))
    loss_ax, lr_ax = fig.subplots(1, 2)
    for color, (label, log) in zip(cycle(_COLORS), curves.items()):
        steps = [entry["step"] for entry in log]
        loss_ax.plot(steps, [entry["loss"] for entry in log], color=color, marker=".", label=label)
        if all("learning_rate" in entry for entry in log):
            lr_ax.plot(steps, [entry["learning_rate"] for entry in log], color=color, label=label)
    loss_ax.set(xlabel="optimizer step", ylabel="training loss", title="training loss of each search's optimum")
    lr_ax.set(xlabel="optimizer step", ylabel="learning rate", title="learning-rate schedule")
    for ax in (loss_ax, lr_ax):
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path


def write_training_curves(state: StudyState, output_dir: str | Path, folder: str | Path) -> Path | None:
    """Plot the curves of each search's optimum into `folder/training_curves.png` (nothing without curves)."""
    return plot_training_curves(optimum_curves(state, output_dir), Path(folder) / CURVES_FIGURE)
