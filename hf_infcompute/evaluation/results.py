"""Evaluation results as a tidy table: one row per (task, metric, filter), with the headline scores averaged."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hf_infcompute.evaluation.tasks import HEADLINE_METRICS
from hf_infcompute.records import write_json_atomic, write_text_atomic


@dataclass(frozen=True)
class TaskScore:
    """One metric of one task: a fraction in [0, 1], its standard error, and the number of items scored."""

    task: str
    metric: str
    filter: str
    value: float
    stderr: float | None
    n: int
    num_fewshot: int | None
    headline: bool


@dataclass(frozen=True)
class EvalResult:
    """Scores of one model. `average` is the mean headline score over `tasks` (the paper's average accuracy when the
    tasks are piqa, sciq, arc_easy)."""

    model: str
    tasks: tuple[str, ...]
    scores: tuple[TaskScore, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    # The harness's per-item log (prompt, responses, filtered responses, metrics) by task; not written to disk.
    samples: dict[str, list[dict]] | None = field(default=None, repr=False, compare=False)

    def headline(self, task: str) -> TaskScore:
        return next(s for s in self.scores if s.task == task and s.headline)

    @property
    def average(self) -> float:
        return sum(self.headline(task).value for task in self.tasks) / len(self.tasks)

    @property
    def average_error(self) -> float:
        return 1.0 - self.average

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "tasks": list(self.tasks),
            "average": self.average,
            "average_error": self.average_error,
            "scores": [asdict(score) for score in self.scores],
            "settings": self.settings,
        }

    def to_markdown(self) -> str:
        lines = [
            f"## {self.model}",
            "",
            "| task | metric | filter | value (%) | stderr (%) | n | shots |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for s in self.scores:
            stderr = "" if s.stderr is None else f"{100 * s.stderr:.2f}"
            metric = f"**{s.metric}**" if s.headline else s.metric
            shots = "" if s.num_fewshot is None else str(s.num_fewshot)
            lines.append(f"| {s.task} | {metric} | {s.filter} | {100 * s.value:.2f} | {stderr} | {s.n} | {shots} |")
        lines += ["", f"Average of the headline (bold) scores over {', '.join(self.tasks)}: {100 * self.average:.2f}"]
        return "\n".join(lines) + "\n"

    def write(self, output_dir: str | os.PathLike, stem: str | None = None) -> tuple[Path, Path]:
        """Write `<stem>.json` and `<stem>.md` into `output_dir` (stem defaults to the model label)."""
        stem = stem or safe_name(self.model)
        json_path, markdown_path = Path(output_dir) / f"{stem}.json", Path(output_dir) / f"{stem}.md"
        write_json_atomic(json_path, self.to_dict())
        write_text_atomic(markdown_path, self.to_markdown())
        return json_path, markdown_path


def comparison_rows(results: Sequence[EvalResult], val_losses: Sequence[float | None]) -> list[dict[str, Any]]:
    """One row per model: validation loss, headline score per task, average and average error (fractions)."""
    return [
        {
            "model": result.model,
            "val_loss": val_loss,
            **{task: result.headline(task).value for task in result.tasks},
            "average": result.average,
            "average_error": result.average_error,
        }
        for result, val_loss in zip(results, val_losses, strict=True)
    ]


def comparison_markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison rows as a markdown table, scores in percent."""
    columns = [key for key in rows[0] if key != "model"]
    lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if value is None:
                cells.append("")
            elif column == "val_loss":
                cells.append(f"{value:.4f}")
            else:
                cells.append(f"{100 * value:.2f}")
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def scores_from_harness(output: dict[str, Any], tasks: list[str]) -> tuple[TaskScore, ...]:
    """The tidy rows of `lm_eval.simple_evaluate`'s output: requested tasks first, each followed by its subtasks."""
    results, n_shot = output["results"], output.get("n-shot", {})
    subtasks = output.get("group_subtasks", {})
    rows: list[TaskScore] = []
    for task in tasks:
        for name in [task, *subtasks.get(task, [])]:
            leaves = subtasks.get(name) or [name]
            n = sum(output["n-samples"][leaf]["effective"] for leaf in leaves)
            for key, value in results[name].items():
                if "," not in key or "_stderr," in key:
                    continue
                metric, filter_name = key.split(",", 1)
                stderr = results[name].get(f"{metric}_stderr,{filter_name}")
                rows.append(
                    TaskScore(
                        task=name,
                        metric=metric,
                        filter=filter_name,
                        value=float(value),
                        stderr=_finite_or_none(stderr),
                        n=n,
                        num_fewshot=n_shot.get(name),
                        headline=name == task and HEADLINE_METRICS[task] == (metric, filter_name),
                    )
                )
    for task in tasks:
        if not any(row.task == task and row.headline for row in rows):
            metric, filter_name = HEADLINE_METRICS[task]
            raise KeyError(f"the harness reported no {metric} ({filter_name}) for {task}: {sorted(results[task])}")
    return tuple(rows)


def _finite_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):  # the harness writes "N/A" where it computed no standard error
        return None
    return number if math.isfinite(number) else None


def safe_name(label: str) -> str:
    """A file-name-safe form of a model label (hub ids keep their owner: `owner__name`)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label.replace("/", "__")).strip(".") or "model"
