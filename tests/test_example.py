"""The worked example runs end to end: a tiny study through the Python API."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tiny_study.py"


@pytest.mark.slow
def test_the_tiny_study_example_runs_and_resumes_without_training(corpus_dir, cache_dir, tmp_path, trained_runs):
    spec = importlib.util.spec_from_file_location("tiny_study", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main(str(corpus_dir), tmp_path, cache_dir=str(cache_dir))
    curve = result["curve"]
    assert [r["k"] for r in curve] == [1, 2, 3]
    assert curve[-1]["val_loss"] < curve[0]["val_loss"]  # three members beat one
    assert curve[0]["val_loss"] == pytest.approx(result["search"].best_loss)  # member 0 is the search's optimum
    assert result["report"].is_file() and "Scaling report" in result["report"].read_text()
    trained = len(trained_runs)
    example.main(str(corpus_dir), tmp_path, cache_dir=str(cache_dir))
    assert len(trained_runs) == trained  # every run was recorded: the second pass trains nothing
