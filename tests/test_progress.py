"""One line per run inside a study: the Trainer's log dicts are replaced, the study's progress and time left."""

from __future__ import annotations

import pytest

from hf_infcompute.records import append_record
from hf_infcompute.search import for_recipe
from hf_infcompute.study.progress import StudyProgress, search_runs_estimate
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
