"""The results store: atomic records, many writers at once, read back as a DataFrame."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pandas as pd

from hf_infcompute import load_runs
from hf_infcompute.records import append_record, read_record


def write_many(folder: str, worker: int, count: int) -> None:
    for i in range(count):
        append_record(
            folder,
            {
                "run_id": f"w{worker}-r{i}",
                "worker": worker,
                "val_loss": 3.0 + i / 100,
                "config": {"lr": 1e-3 * (i + 1)},
            },
        )


def test_concurrent_writers_lose_nothing(tmp_path):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=write_many, args=(str(tmp_path), w, 40)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join()
        assert process.exitcode == 0
    runs = load_runs(tmp_path)
    assert len(runs) == 160
    assert runs.groupby("worker").size().tolist() == [40, 40, 40, 40]
    assert "config.lr" in runs.columns  # nested settings are flattened
    assert not list(Path(tmp_path, "results").glob(".*"))  # no temporary files left behind


def test_record_round_trip_and_empty_store(tmp_path):
    assert load_runs(tmp_path).empty
    assert read_record(tmp_path, "missing") is None
    append_record(tmp_path, {"run_id": "a", "val_loss": 3.5})
    assert read_record(tmp_path, "a") == {"run_id": "a", "val_loss": 3.5}


def test_a_truncated_record_is_named_and_skipped_by_readers(tmp_path, caplog):
    append_record(tmp_path, {"run_id": "good", "val_loss": 3.5})
    append_record(tmp_path, {"run_id": "cut", "val_loss": 3.6})
    cut = Path(tmp_path, "results", "cut.json")
    cut.write_text(cut.read_text()[:10])
    with caplog.at_level("WARNING"):
        runs = load_runs(tmp_path)
    assert runs["run_id"].tolist() == ["good"]
    assert str(cut) in caplog.text and "corrupt" in caplog.text
    assert read_record(tmp_path, "cut") is None  # its writer trains the run again


def test_records_from_before_the_test_split_load_beside_new_ones(tmp_path):
    """A record written before runs had a test split (no test fields, no row documents) reads back beside one that has
    them; its missing fields read as missing."""
    append_record(tmp_path, {"run_id": "old", "val_loss": 3.5, "val_sequence_losses": [3.4, 3.6]})
    new = {
        "run_id": "new",
        "val_loss": 3.4,
        "val_sequence_losses": [3.3, 3.5],
        "val_sequence_documents": [4, 9],
        "test_sequences": 2,
        "test_fingerprint": "abc",
        "test_loss": 3.45,
        "test_sequence_losses": [3.4, 3.5],
        "test_sequence_documents": [2, 7],
    }
    append_record(tmp_path, new)
    runs = load_runs(tmp_path).set_index("run_id")
    assert runs.loc["new", "test_sequence_documents"] == [2, 7] and runs.loc["new", "test_loss"] == 3.45
    assert runs.loc["old", "val_sequence_losses"] == [3.4, 3.6]
    assert pd.isna(runs.loc["old", "test_loss"]) and pd.isna(runs.loc["old", "test_sequence_documents"])
    assert read_record(tmp_path, "old") == {"run_id": "old", "val_loss": 3.5, "val_sequence_losses": [3.4, 3.6]}
