"""With `report_to`, each run is named by its run id and grouped by study and search in each tracker's own way."""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types

from transformers import TrainerState
from transformers.integrations import TensorBoardCallback, TrackioCallback

from hf_infcompute.training import RegularizedTrainingArguments
from hf_infcompute.training.tracking import search_group, track_run


def _args(tmp_path, report_to):
    return RegularizedTrainingArguments(output_dir=str(tmp_path / "run"), report_to=report_to)


def test_trackers_get_the_run_id_and_the_study_and_search(tmp_path, monkeypatch):
    # tensorboard is not installed here: a callback built without its __init__ (which imports SummaryWriter)
    tensorboard = TensorBoardCallback.__new__(TensorBoardCallback)
    tensorboard.logging_dir = None
    previous = types.SimpleNamespace(finished=0)
    previous.run = object()
    previous.finish = lambda: setattr(previous, "finished", previous.finished + 1)
    monkeypatch.setitem(sys.modules, "wandb", previous)  # an open wandb run of an earlier run in this process
    monkeypatch.setenv("WANDB_RUN_GROUP", "set by the user")  # restored after the test
    args = _args(tmp_path, ["trackio", "wandb", "tensorboard"])
    group = search_group("pretrain", "regularized", "tiny-1m", 4096)
    track_run(args, [tensorboard], "run-abc", group, tmp_path, study="micro")
    assert args.run_name == "run-abc" and args.project == "micro"
    assert group == "regularized-tiny-1m-D4096"  # the study's sweep folder
    assert sys.modules["wandb"].finished == 1
    assert os.environ["WANDB_RUN_GROUP"] == "micro/regularized-tiny-1m-D4096"
    assert tensorboard.logging_dir == str(tmp_path / "tb" / "micro" / "regularized-tiny-1m-D4096" / "run-abc")


def test_outside_a_study_runs_are_named_and_grouped_by_search_only(tmp_path):
    args = _args(tmp_path, ["trackio"])
    group = search_group("student", "regularized", "tiny-1m", 4096)
    assert group == "student-regularized-tiny-1m-D4096"
    track_run(args, [], "run-x", group, tmp_path)
    assert args.run_name == "run-x" and args.project == "huggingface"
    untracked = _args(tmp_path, "none")
    track_run(untracked, [], "run-y", "g", tmp_path, study="micro")
    assert untracked.run_name == "run-y" and untracked.project == "huggingface"


def test_trackio_runs_get_their_search_as_group(tmp_path, monkeypatch):
    # trackio is not installed here: a module with what TrackioCallback.setup calls stands in for it
    calls = []
    trackio = types.ModuleType("trackio")
    trackio.__spec__ = importlib.machinery.ModuleSpec("trackio", None)
    trackio.init = lambda **kwargs: calls.append(kwargs)
    trackio.context_vars = types.SimpleNamespace(current_space_id=types.SimpleNamespace(get=lambda: None))
    trackio.config = types.SimpleNamespace(update=lambda values, allow_val_change: None)
    monkeypatch.setitem(sys.modules, "trackio", trackio)
    callback = TrackioCallback()
    args = _args(tmp_path, ["trackio"])
    for search in ("standard-tiny-1m-D4096", "regularized-tiny-1m-D4096"):  # a reused callback takes the new group
        track_run(args, [callback], "run-abc", search, tmp_path, study="micro")
        callback.setup(args, TrainerState(), model=None)
    assert [(c["project"], c["name"], c["group"]) for c in calls] == [
        ("micro", "run-abc", "standard-tiny-1m-D4096"),
        ("micro", "run-abc", "regularized-tiny-1m-D4096"),
    ]
