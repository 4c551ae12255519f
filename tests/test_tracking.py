"""With `report_to`, each run is named by its run id and grouped by study and search in each tracker's own way."""

from __future__ import annotations

import os
import sys
import types

from transformers.integrations import TensorBoardCallback

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
