"""One line per run inside a study: the Trainer's log dicts are replaced, the study's progress and time left."""

from __future__ import annotations

import pytest

from hf_infcompute.records import append_record
from hf_infcompute.search import for_recipe
from hf_infcompute.study import parse_study
from hf_infcompute.study.pipeline import Study, search_grid
from hf_infcompute.study.progress import StudyProgress, members_estimate, planned_runs, search_runs_estimate
from hf_infcompute.training import pretrain
from hf_infcompute.training.progress import follow_runs


class Recorder:
    study = "micro"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def run_ended(self, run_id: str, description: str, val_loss: float, wall_time_s: float) -> None:
        self.calls.append((run_id, description, val_loss, wall_time_s))


def test_runs_inside_follow_runs_report_one_line_instead_of_log_dicts(tiny_run, tmp_path, capsys):
    settings = {**tiny_run, "num_train_epochs": 1}
    pretrain(settings, tmp_path / "plain")
    assert "'loss':" in capsys.readouterr().out  # the Trainer's PrinterCallback, outside a study
    listener = Recorder()
    with follow_runs(listener):
        record = pretrain(settings, tmp_path / "followed")
    assert "'loss':" not in capsys.readouterr().out
    [(run_id, description, val_loss, wall_time_s)] = listener.calls
    assert run_id == record["run_id"] and val_loss == pytest.approx(record["val_loss"])
    assert description == "pretrain regularized tiny-0.5m lr=0.003 epochs=1 wd=0.1"
    assert 0 < wall_time_s <= record["wall_time_s"] + 1


def test_study_progress_counts_the_store_and_estimates_time_left(tmp_path, capsys):
    for run_id, kind in (("a", "pretrain"), ("b", "ensemble_member"), ("e", "ensemble")):
        append_record(tmp_path, {"run_id": run_id, "kind": kind})
    progress = StudyProgress(tmp_path, planned=10, study="micro")
    progress.run_ended("c", "pretrain standard tiny-1m lr=0.003 epochs=1 wd=0.1", 5.25, 30.0)
    line = capsys.readouterr().out.strip()
    # a, b and c (ending now) are runs, the ensemble record is not; 7 left at 30 s each
    assert line == (
        "pretrain standard tiny-1m lr=0.003 epochs=1 wd=0.1: val loss 5.2500 in 30 s | "
        "study: 3 of ~10 runs (estimated), ~3.5 min left"
    )
    append_record(tmp_path, {"run_id": "c", "kind": "pretrain"})
    assert progress.line("d", "x", 5.0, 90.0).endswith("4 of ~10 runs (estimated), ~6.0 min left")
    shared = StudyProgress(tmp_path, planned=10, study="micro", workers=2)  # two workers train the runs left
    assert shared.line("d", "x", 5.0, 60.0).endswith("4 of ~10 runs (estimated), ~3.0 min left")


def test_progress_reads_each_record_once(tmp_path, monkeypatch):
    import hf_infcompute.study.progress as progress_module

    for run_id, kind in (("a", "pretrain"), ("e", "ensemble")):
        append_record(tmp_path, {"run_id": run_id, "kind": kind})
    read: list[str] = []
    read_record = progress_module.read_record

    def counted(output_dir, run_id):
        read.append(run_id)
        return read_record(output_dir, run_id)

    monkeypatch.setattr(progress_module, "read_record", counted)
    progress = StudyProgress(tmp_path, planned=10, study="micro")
    assert progress.finished("b") == 2
    append_record(tmp_path, {"run_id": "b", "kind": "ensemble_member"})
    assert progress.finished("c") == 3
    assert sorted(read) == ["a", "b", "e"]


# The quickstart study as it was run into a results store of 185 runs: 116 standard and 54 regularized search points
# (both starts), 12 ensemble members (4 per preset: the 'optimum' candidate's first member is the search's optimum)
# and 3 students.
RECORDED_STUDY = {
    "name": "quickstart",
    "token_budget": 65536,
    "data_scaling_budgets": [8192, 16384, 32768],
    "presets": ["cpu-50k", "cpu-150k", "cpu-450k"],
    "standard": {"learning_rate": [3.0e-3, 1.0e-2, 3.0e-2], "num_train_epochs": [2, 4, 8, 16], "start": [1.0e-2, 4]},
    "regularized": {
        "learning_rate": [3.0e-3, 1.0e-2, 3.0e-2],
        "num_train_epochs": [2, 4, 8, 16],
        "weight_decay": [0.1, 0.4, 0.8, 1.6, 3.2],
        "start": [1.0e-2, 8, 0.8],
    },
    "ensemble": {"k": 3, "member_candidates": ["optimum", "paper"]},
    "distillation": {"preset": "cpu-150k", "weight_decay": ["optimum"], "token_level": True},
}


def test_planned_runs_count_both_regularized_starts_and_reused_members(corpus_dir, tmp_path):
    spec = parse_study({**RECORDED_STUDY, "run": {"corpus": str(corpus_dir)}})
    plan = [
        (recipe, search_grid(spec, recipe)[0])
        for recipe, _ in Study(spec, tmp_path).search_plan()
        for _ in spec.presets
    ]
    assert members_estimate(spec) == 15  # 3 presets x (3 members per rule x 2 rules - the optimum itself)
    planned = planned_runs(spec, plan)
    assert 188 * 0.95 <= planned <= 188  # an estimate: 12 x 9 standard, 3 x (13 + 6) regularized, 15, 3


def test_search_estimate_is_capped_by_the_grid():
    assert (
        search_runs_estimate(
            for_recipe("regularized", learning_rates=[1e-3, 3e-3], epochs=[1, 2], weight_decays=[0.1, 0.8])
        )
        == 8
    )
    grid = for_recipe("standard", learning_rates=[1e-3, 3e-3, 1e-2, 3e-2], epochs=[1, 2, 4, 8])
    assert search_runs_estimate(grid) == 9


def test_inside_follow_runs_each_transformers_warning_shows_once_and_no_progress_bar():
    import logging

    from transformers.utils import logging as transformers_logging

    shown: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            shown.append(record.getMessage())

    root, collect = transformers_logging.get_logger(), Collect()
    root.addHandler(collect)  # beside the library's own stderr handler, filtered alike
    logger = transformers_logging.get_logger("transformers.training_args")
    try:
        assert transformers_logging.is_progress_bar_enabled()
        with follow_runs(Recorder()):
            assert not transformers_logging.is_progress_bar_enabled()
            for _ in range(3):
                logger.warning("speedups need a GPU")
            logger.warning("another warning")
        assert transformers_logging.is_progress_bar_enabled()
        logger.warning("speedups need a GPU")  # outside: shown again
    finally:
        root.removeHandler(collect)
    assert shown == ["speedups need a GPU", "another warning", "speedups need a GPU"]
