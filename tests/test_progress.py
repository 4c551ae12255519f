"""One line per run inside a study: the Trainer's log dicts are replaced, the study's progress and time left."""

from __future__ import annotations

import pytest

from hf_infcompute.method import RECIPES
from hf_infcompute.records import append_record
from hf_infcompute.search import for_recipe
from hf_infcompute.study import parse_study
from hf_infcompute.study.pipeline import search_grid
from hf_infcompute.study.progress import (
    StudyProgress,
    after_searches_estimate,
    further_start_estimate,
    members_estimate,
    planned_runs,
    search_estimate,
    search_runs_estimate,
)
from hf_infcompute.study.search_plan import NEIGHBOURING_SIZE, STANDARD_START
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


# A quickstart-like study: 4 budgets x 3 presets, a standard grid of 3 x 4 and a regularized one of 3 x 4 x 5.
QUICKSTART_LIKE = {
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


def recipe_grids(spec):
    return {recipe: search_grid(spec, recipe)[0] for recipe in RECIPES}


def test_planned_runs_count_every_search_start_tie_break_and_reused_members(corpus_dir):
    spec = parse_study({**QUICKSTART_LIKE, "run": {"corpus": str(corpus_dir)}})
    grids = recipe_grids(spec)
    # 3 presets x (3 members per rule x 2 rules - the optimum itself - its 2 tie-break seeds, members 1 and 2)
    assert members_estimate(spec) == 9
    # 12 standard searches: 9 runs each from their one start (3 x 4 grid: start, 4 neighbours, a move's 4), 2 seeds x
    # (best, runner-up) = 4 tie-break runs each. 12 regularized searches: 13 runs from the first start, tie-breaks 4,
    # and at D (3 of them) 6 from the second start (the standard optimum at weight decay 0.1, the grid's smallest).
    assert search_estimate(spec, grids) == 12 * (9 + 4) + 12 * (13 + 4) + 3 * 6
    assert planned_runs(spec, grids) == 156 + 222 + 9 + 3  # and 3 students (ensemble, self, token-level)
    # A regularized search's further start other than the standard optimum keeps its neighbour below.
    assert further_start_estimate(grids["regularized"], STANDARD_START) == 6
    assert further_start_estimate(grids["regularized"], NEIGHBOURING_SIZE) == 7
    without = {key: {**QUICKSTART_LIKE[key], "tie_break_seeds": 0} for key in ("standard", "regularized")}
    spec = parse_study({**QUICKSTART_LIKE, **without, "run": {"corpus": str(corpus_dir)}})
    assert members_estimate(spec) == 15  # no tie-break: only member 0 is the search's own run
    assert planned_runs(spec, grids) == 12 * 9 + 12 * 13 + 3 * 6 + 15 + 3


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


def test_once_the_searches_are_over_progress_plans_on_what_ran_and_what_follows(tmp_path, corpus_dir):
    """The searches' count depends on their paths; once they are over the runs recorded and the members and
    students left replace the estimate, so the time left counts the members still to train."""
    for run_id in ("a", "b", "c"):
        append_record(tmp_path, {"run_id": run_id, "kind": "pretrain"})
    progress = StudyProgress(tmp_path, planned=2, study="micro")  # the searches ran past their estimate
    assert progress.line("c", "x", 5.0, 60.0).endswith("3 of ~3 runs (estimated), ~0 s left")
    spec = parse_study({**QUICKSTART_LIKE, "run": {"corpus": str(corpus_dir)}})
    progress.replan(after_searches_estimate(spec))
    assert after_searches_estimate(spec) == members_estimate(spec) + 3  # and 3 students
    left = after_searches_estimate(spec)
    assert progress.line("d", "x", 5.0, 60.0).endswith(f"4 of ~{3 + left} runs (estimated), ~{left - 1:.1f} min left")
