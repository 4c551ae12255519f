"""Names and groups for experiment trackers (`report_to`): each run is named by its run id and grouped by its study
and search, in the way each of transformers' integrations takes them (`transformers.integrations.integration_utils`):

- every tracker: `TrainingArguments.run_name`;
- trackio: `TrainingArguments.project` (the study) and the search as `trackio.init`'s `group`. The callback's
  `setup` passes only project, name, space and bucket, and reads no group from the arguments or the environment, so
  the module it calls (`TrackioCallback._trackio`) is wrapped to add the group (`GroupedTrackio`);
- wandb: the `WANDB_RUN_GROUP` environment variable, read by `wandb.init` (the callback passes only a name). The
  callback reuses an open wandb run, so the previous run of this process is finished first;
- tensorboard: the callback's `logging_dir` (transformers 5 has no `TrainingArguments.logging_dir`; its callback
  reads `TENSORBOARD_LOGGING_DIR` once), set to `<output_dir>/tb/<study>/<search>/<run_id>`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.integrations import TensorBoardCallback, TrackioCallback

from hf_infcompute.training.config import RunConfig
from hf_infcompute.training.progress import current_study

TENSORBOARD_DIRNAME = "tb"
DEFAULT_PROJECT = "huggingface"  # TrainingArguments.project's default: replaced by the study's name


class GroupedTrackio:
    """The `trackio` module as `TrackioCallback` calls it, with `group` added to `init`: transformers' callback
    passes none and reads none from anywhere, and wrapping the module it holds is the one place to set it without
    copying its `setup`."""

    def __init__(self, trackio: Any, group: str | None) -> None:
        self.module, self.group = trackio, group

    def init(self, *args: Any, **kwargs: Any) -> Any:
        return self.module.init(*args, **{"group": self.group, **kwargs})

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)


def trackio_project(project: str | None, study: str | None) -> str | None:
    """The trackio project of a run: `project` as the user set it, else (unset or transformers' default) its study's
    name where it runs in a study."""
    return study if study and project in (None, DEFAULT_PROJECT) else project


def finish_open_wandb_run() -> None:
    """Finish the wandb run an earlier training of this process left open (its callback reuses an open run)."""
    wandb = sys.modules.get("wandb")  # imported by an earlier run's callback, if any
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def search_group(kind: str, recipe: str, preset: str, token_budget: int) -> str:
    """The search a run belongs to, named as the study names its sweeps; other kinds of run are prefixed with it."""
    search = f"{recipe}-{preset}-D{token_budget}"
    return search if kind == "pretrain" else f"{kind}-{search}"


def track_run(
    args: TrainingArguments,
    callbacks: Sequence[TrainerCallback],
    run_id: str,
    group: str,
    output_dir: str | Path,
    study: str | None = None,
) -> None:
    """Name the run `run_id` and group it under `study` (if any) and `group` in every tracker of `args.report_to`."""
    args.run_name = run_id
    trackers = set(args.report_to or [])
    path = [part for part in (study, group) if part]
    if "trackio" in trackers:
        args.project = trackio_project(args.project, study)
    if "wandb" in trackers:
        os.environ["WANDB_RUN_GROUP"] = "/".join(path)
        finish_open_wandb_run()
    for callback in callbacks:
        if isinstance(callback, TrackioCallback):
            trackio = callback._trackio  # the module, or its wrapper from an earlier run of this callback
            module = trackio.module if isinstance(trackio, GroupedTrackio) else trackio
            callback._trackio = GroupedTrackio(module, group)
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = str(Path(output_dir, TENSORBOARD_DIRNAME, *path, run_id))


def track(trainer: Trainer, run: RunConfig, kind: str, output_dir: str | Path) -> None:
    """`track_run` for `pretrain`'s trainer: the run's id, its search, and the study it runs in (`follow_runs`)."""
    group = search_group(kind, run.training.recipe, run.model.name, run.data.token_budget)
    track_run(trainer.args, trainer.callback_handler.callbacks, run.run_id(), group, output_dir, current_study())
