"""Benchmark names: the lm-evaluation-harness tasks we score, shorthands for the paper's sets, headline metrics."""

from __future__ import annotations

from collections.abc import Iterable

from hf_infcompute.errors import InputError

# Harness task (or group) name -> (metric, filter) reported as its score and averaged.
# GSM8K: the harness's "#### N" extraction (strict-match); flexible-extract is kept in the full table.
# MATH: the harness's hendrycks_math group (exact match of the last $...$ span against the last \boxed{} answer,
# no extra dependencies); minerva_math would need `lm-eval[math]` (sympy, math_verify, antlr4).
HEADLINE_METRICS: dict[str, tuple[str, str]] = {
    "piqa": ("acc", "none"),
    "sciq": ("acc", "none"),
    "arc_easy": ("acc", "none"),
    "gsm8k": ("exact_match", "strict-match"),
    "hendrycks_math": ("exact_match", "none"),
    "mathqa": ("acc", "none"),
}

# The paper's benchmark sets: Section 7 (pre-training) and Section 8 (continued pre-training on math).
SHORTHANDS: dict[str, tuple[str, ...]] = {
    "paper": ("piqa", "sciq", "arc_easy"),
    "math": ("gsm8k", "hendrycks_math", "mathqa"),
}


def resolve_tasks(names: str | Iterable[str]) -> list[str]:
    """Harness task names for `names` (a list, or one comma-separated string), shorthands expanded, in order,
    without repeats."""
    if isinstance(names, str):
        names = names.split(",")
    tasks: list[str] = []
    for name in (n.strip() for n in names):
        if not name:
            continue
        expanded = SHORTHANDS.get(name, (name,))
        for task in expanded:
            if task not in HEADLINE_METRICS:
                raise InputError(f"unknown task {name!r}; choose from {valid_names()} (comma-separated)")
            if task not in tasks:
                tasks.append(task)
    if not tasks:
        raise InputError(f"no tasks given; choose from {valid_names()} (comma-separated)")
    return tasks


def valid_names() -> str:
    shorthands = ", ".join(f"{name} ({','.join(tasks)})" for name, tasks in SHORTHANDS.items())
    return f"{', '.join(HEADLINE_METRICS)}, or the shorthands {shorthands}"
