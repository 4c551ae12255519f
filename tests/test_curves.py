"""The training-curves figure of a study: each search's optimum's `train_log`, read from its record."""

from __future__ import annotations

from hf_infcompute.records import append_record
from hf_infcompute.study.curves import CURVES_FIGURE, optimum_curves, write_training_curves
from hf_infcompute.study.state import SearchState, StudyState


def _search(run_id: str | None) -> SearchState:
    return SearchState(
        "regularized", "tiny-1m", 4096, None, 3.0, True, run_id, None, 1, 0, [], "study's start", {}, "search", {}, []
    )


def _state(searches: dict[str, SearchState]) -> StudyState:
    return StudyState(
        name="s",
        corpus="corpus",
        corpus_config=None,
        searches=searches,
        ensembles={},
        distillation={},
        benchmarks={},
        failures=[],
        sessions=1,
        wall_time_s=0.0,
    )


def test_curves_of_each_optimum_are_read_from_the_records_and_plotted(tmp_path):
    log = [{"step": s, "epoch": s / 8, "loss": 6.0 - s / 4, "learning_rate": 1e-3, "grad_norm": 1.0} for s in (4, 8)]
    append_record(tmp_path, {"run_id": "with-log", "train_log": log})
    append_record(tmp_path, {"run_id": "old-record"})  # written before records kept their log
    state = _state({"a": _search("with-log"), "b": _search("old-record"), "c": _search(None)})
    assert optimum_curves(state, tmp_path) == {"a": log}
    path = write_training_curves(state, tmp_path, tmp_path / "figures")
    assert path == tmp_path / "figures" / CURVES_FIGURE
    assert path.read_bytes().startswith(b"\x89PNG")
    assert write_training_curves(_state({"c": _search(None)}), tmp_path, tmp_path / "none") is None
    assert not (tmp_path / "none").exists()
