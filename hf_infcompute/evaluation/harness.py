"""Score a saved model, a saved LogitEnsemble or a hub id on downstream benchmarks with lm-evaluation-harness."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lm_eval
import torch
from lm_eval.api.model import LM
from lm_eval.tasks import TaskManager

from hf_infcompute.errors import InputError
from hf_infcompute.evaluation.local_tasks import local_task_manager
from hf_infcompute.evaluation.results import EvalResult, scores_from_harness
from hf_infcompute.evaluation.tasks import resolve_tasks
from hf_infcompute.records import RUN_RECORD_FILE


def evaluate_model(
    model: str | os.PathLike | LM,
    tasks: str | Iterable[str] = "paper",
    *,
    data_dir: str | os.PathLike | None = None,
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    batch_size: int | str = 8,
    device: str | None = None,
    dtype: str | None = None,
    max_gen_toks: int | None = None,
    model_args: Mapping[str, Any] | None = None,
    label: str | None = None,
    output_dir: str | os.PathLike | None = None,
) -> EvalResult:
    """Score `model` on `tasks` with `lm_eval.simple_evaluate` and return the tidy table.

    model: a model folder (a single model or a LogitEnsemble), a hub id, or an `lm_eval` LM object.
    tasks: harness names (piqa, sciq, arc_easy, gsm8k, hendrycks_math, mathqa) or shorthands (paper, math).
    data_dir: read the benchmarks from this folder (layout in eval/README.md) instead of the Hub.
    num_fewshot: None keeps each task's harness default (0, except 5 for gsm8k).
    limit: score only the first `limit` items of each task (a float below 1: that fraction); for quick checks.
    dtype: the dtype the harness loads the weights in; None: bfloat16 on a GPU (a K = 8 ensemble of 3B members is
        51 GB there, 103 GB in fp32), the saved dtype ("auto") elsewhere.
    max_gen_toks: cap on generated tokens for generation tasks (harness default 256).
    model_args: extra arguments for the harness's `HFLM` (e.g. `max_length`, `parallelize`).
    output_dir: also write `<label>.json` and `<label>.md` there.
    """
    task_names = resolve_tasks(tasks)
    if num_fewshot is not None and num_fewshot < 0:
        raise InputError(f"num_fewshot must be 0 or more, got {num_fewshot}")
    if limit is not None and limit <= 0:
        raise InputError(f"limit must be positive (items per task, or a fraction below 1), got {limit}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("bfloat16" if torch.device(device).type == "cuda" else "auto")
    if isinstance(model, LM):
        harness_model: str | LM = model
        harness_args: dict[str, Any] | None = None
        label = label or type(model).__name__
    else:
        model = str(model)
        check_model(model)
        harness_model = "hf"
        harness_args = {"pretrained": model, "dtype": dtype, **(model_args or {})}
        label = label or model_label(model)

    with tempfile.TemporaryDirectory(prefix="hf_infcompute_tasks_") as workdir:
        task_manager = TaskManager() if data_dir is None else local_task_manager(data_dir, task_names, workdir)
        output = lm_eval.simple_evaluate(
            model=harness_model,
            model_args=harness_args,
            tasks=task_names,
            num_fewshot=num_fewshot,
            limit=limit,
            batch_size=batch_size,
            device=device,
            gen_kwargs={"max_gen_toks": max_gen_toks} if max_gen_toks else None,
            task_manager=task_manager,
        )
    result = EvalResult(
        model=label,
        tasks=tuple(task_names),
        scores=scores_from_harness(output, task_names),
        settings={
            "model": model if isinstance(model, str) else label,
            "data_dir": None if data_dir is None else str(Path(data_dir).resolve()),
            "num_fewshot": num_fewshot,
            "limit": limit,
            "batch_size": batch_size,
            "device": device,
            "dtype": dtype,
            "max_gen_toks": max_gen_toks,
            "lm_eval_version": lm_eval.__version__,
        },
        samples=output.get("samples"),
    )
    if output_dir is not None:
        result.write(output_dir)
    return result


def check_model(model: str) -> None:
    """Refuse a missing local folder or one without a config (`import hf_infcompute` registers the ensemble)."""
    path = Path(model).expanduser()
    if not path.exists():
        if model.startswith((".", "/", "~")) or model.count("/") > 1:
            raise InputError(f"no model folder at {model!r}; give a saved model folder or a hub id (owner/name)")
        return  # a hub id
    config_file = path / "config.json"
    if not config_file.is_file():
        raise InputError(f"{model!r} holds no config.json; give a folder written by `save_pretrained`")


def read_run_record(model: str | os.PathLike) -> dict[str, Any] | None:
    """The run record saved beside a trained model, if any."""
    path = Path(model).expanduser() / RUN_RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def read_val_loss(model: str | os.PathLike) -> float | None:
    """Validation loss from the model folder's run record, if it has one."""
    record = read_run_record(model) or {}
    return float(record["val_loss"]) if record.get("val_loss") is not None else None


def model_label(model: str) -> str:
    """A short name: the run id of a trained model, else the folder name, else the hub id."""
    record = read_run_record(model) if Path(model).expanduser().is_dir() else None
    if record and record.get("run_id"):
        return str(record["run_id"])
    path = Path(model).expanduser()
    if path.exists():
        resolved = path.resolve()
        # `runs/<run_id>/model` folders: the parent names the run.
        return resolved.parent.name if resolved.name == "model" else resolved.name
    return model
