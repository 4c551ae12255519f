"""Downstream evaluation with lm-evaluation-harness: benchmark scores of models and ensembles, and the plot of
validation loss against average benchmark error."""

from hf_infcompute.evaluation.harness import evaluate_model, read_val_loss
from hf_infcompute.evaluation.local_tasks import render_task_dir
from hf_infcompute.evaluation.plot import plot_loss_vs_error
from hf_infcompute.evaluation.results import EvalResult, TaskScore
from hf_infcompute.evaluation.tasks import HEADLINE_METRICS, SHORTHANDS, resolve_tasks

__all__ = [
    "EvalResult",
    "HEADLINE_METRICS",
    "SHORTHANDS",
    "TaskScore",
    "evaluate_model",
    "plot_loss_vs_error",
    "read_val_loss",
    "render_task_dir",
    "resolve_tasks",
]
