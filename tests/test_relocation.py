"""A study folder is relocatable: records keep paths relative to it, and run ids do not depend on where it lies."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import MICRO_STUDY_RUN

from hf_infcompute import load_runs
from hf_infcompute.records import append_record, iter_records, read_record, results_dir
from hf_infcompute.study import parse_study, run_study
from hf_infcompute.study.state import STATE_FILE, load_report_state

TINY_STUDY = {
    "name": "moved",
    "run": MICRO_STUDY_RUN,
    "token_budget": 2048,
    "report_resamples": 40,  # the report's intervals are not what this test checks
    "data_scaling_budgets": [],
    "presets": ["tiny-0.5m"],
    "standard": {"learning_rate": [3e-3], "num_train_epochs": [1], "start": [3e-3, 1], "extend_edges": False},
    "regularized": {
        "learning_rate": [3e-3],
        "num_train_epochs": [1],
        "weight_decay": [0.1, 0.8],
        "start": [3e-3, 1, 0.1],
        "extend_edges": False,
    },
    "ensemble": {"k": 2, "member_candidates": ["optimum"]},
    "distillation": {"self_distillation": False, "synthetic_tokens": 1024, "token_level": True},
}


def test_records_store_folders_relative_to_the_output_folder_and_old_absolute_ones_still_read(tmp_path):
    output = tmp_path / "out"
    model = output / "runs" / "a" / "model"
    model.mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    append_record(
        output, {"run_id": "a", "model_dir": str(model), "teacher": str(outside), "nested": [{"teacher": "gpt2"}]}
    )
    stored = json.loads((results_dir(output) / "a.json").read_text())
    assert stored["model_dir"] == "./runs/a/model" and stored["teacher"] == str(outside)
    assert stored["nested"] == [{"teacher": "gpt2"}]  # a hub id is no folder
    moved = tmp_path / "moved"
    shutil.move(output, moved)
    assert read_record(moved, "a")["model_dir"] == str(moved / "runs" / "a" / "model")
    (results_dir(moved) / "old.json").write_text(json.dumps({"run_id": "old", "model_dir": "/somewhere/model"}))
    assert {r["run_id"]: r["model_dir"] for r in iter_records(moved)}["old"] == "/somewhere/model"


@pytest.mark.slow
def test_a_moved_study_resumes_without_training_again(corpus_dir, cache_dir, tmp_path, trained_runs):
    spec = parse_study(
        {**TINY_STUDY, "run": {**TINY_STUDY["run"], "corpus": str(corpus_dir), "cache_dir": str(cache_dir)}}
    )
    first = run_study(spec, tmp_path / "original")
    assert trained_runs and set(first.distillation) == {"ensemble", "token"}
    runs = load_runs(tmp_path / "original").set_index("run_id")
    shutil.copytree(tmp_path / "original", tmp_path / "copy")
    shutil.rmtree(tmp_path / "original")
    trained_runs.clear()
    again = run_study(spec, tmp_path / "copy")
    assert trained_runs == []
    moved = load_runs(tmp_path / "copy").set_index("run_id")
    assert sorted(moved.index) == sorted(runs.index)  # same run ids: students included
    assert (moved.val_loss == runs.loc[moved.index].val_loss).all()
    folders = moved.model_dir.dropna()
    assert len(folders) and all(path.startswith(str(tmp_path / "copy")) for path in folders)
    assert again.ensembles["tiny-0.5m"].model_dir.startswith(str(tmp_path / "copy"))
    assert str(tmp_path / "original") not in (tmp_path / "copy" / STATE_FILE).read_text()
    state = load_report_state(tmp_path / "copy")
    assert state.distillation["token"].teacher == again.ensembles["tiny-0.5m"].model_dir
