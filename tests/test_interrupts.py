"""Ctrl-C and SIGTERM stop `hf-infcompute pretrain` with one line (what was saved, the command that resumes) and no
traceback; SIGTERM saves a checkpoint first; the rerun resumes to the loss of an uninterrupted run. Each command runs
in a child process whose signals have their default disposition."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hf_infcompute import interrupts
from hf_infcompute.records import iter_records
from hf_infcompute.training import pretrain
from hf_infcompute.training.checkpoints import checkpoints_newest_first

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """16 steps of a tiny model on a small corpus, logged every step; checkpoints every 2 steps (Ctrl-C keeps the
    last) or none (SIGTERM writes one). One corpus for the module: the interrupted runs are the reference's run."""
    tmp_path = tmp_path_factory.mktemp("interrupts")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "".join(f"Note {i}: the {i % 7} cats met {i % 5} dogs by the river at dawn.\n" for i in range(400))
    )
    return {
        "corpus": str(corpus),
        "cache_dir": str(tmp_path / "cache"),
        "vocab_size": 300,
        "seq_len": 32,
        "val_sequences": 4,
        "token_budget": 2048,
        "preset": "tiny-0.5m",
        "num_train_epochs": 1,
        "learning_rate": 3e-3,
        "per_device_train_batch_size": 4,
        "precision": "fp32",
        "disable_tqdm": True,
        "logging_steps": 1,
        "save_steps": 2,
    }


@pytest.fixture(scope="module")
def uninterrupted(settings: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return pretrain(settings, tmp_path_factory.mktemp("reference"))


def default_signals() -> None:
    """In the child: SIGINT and SIGTERM as a fresh process gets them, whatever the test runner set."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def interrupted(settings: dict, folder: Path, signum: int) -> tuple[int, str, list[str]]:
    """Run `pretrain` in a child, send `signum` once it has logged its third step; (exit code, stderr, argv)."""
    recipe = folder / "run.yaml"
    recipe.write_text(yaml.safe_dump(settings))
    argv = [sys.executable, "-m", "hf_infcompute", "pretrain", str(recipe), "--output", str(folder / "out")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPOSITORY)}
    child = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_signals
    )
    steps = 0
    for line in child.stdout:
        steps += "'loss'" in line
        if steps == 3:
            break
    assert child.poll() is None, "the run ended before it could be interrupted"
    child.send_signal(signum)
    stdout, stderr = child.communicate(timeout=120)
    return child.returncode, stderr, argv


def resumed(argv: list[str], output: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    subprocess.run(argv, check=True, env=env, capture_output=True, timeout=300)
    (record,) = iter_records(output)
    return record


@pytest.mark.parametrize(
    ("signum", "name", "code", "saves"),
    # Ctrl-C keeps the last checkpoint saved; SIGTERM writes one itself (the run saves none of its own).
    [(signal.SIGINT, "Ctrl-C", 130, {}), (signal.SIGTERM, "SIGTERM", 143, {"save_strategy": "no"})],
)
def test_a_stopped_run_says_what_was_saved_and_resumes_to_the_same_loss(
    settings, uninterrupted, tmp_path, signum, name, code, saves
):
    settings = {**settings, **saves}
    code_seen, stderr, argv = interrupted(settings, tmp_path, signum)
    assert code_seen == code, stderr[-3000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    folder = next((tmp_path / "out" / "runs").iterdir())
    (checkpoint, *_) = checkpoints_newest_first(folder)
    assert last.startswith(f"hf-infcompute pretrain: stopped by {name}; saved: checkpoint {checkpoint}")
    assert last.endswith(f"Resume with: hf-infcompute pretrain {argv[4]} --output {tmp_path / 'out'}")
    assert not list((tmp_path / "out").glob("results/*.json"))  # not recorded as finished
    record = resumed(argv, tmp_path / "out")
    assert record["resumed_from"] == checkpoint.name
    assert uninterrupted["run_id"] == folder.name == record["run_id"]
    assert record["val_loss"] == pytest.approx(uninterrupted["val_loss"], abs=1e-6)


def test_sigterm_outside_training_stops_at_once_and_a_step_that_does_not_end_within_the_grace_too(monkeypatch):
    monkeypatch.setattr(interrupts, "SIGTERM_GRACE_S", 0.5)
    with interrupts.handling_sigterm():
        with pytest.raises(interrupts.Interrupted, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        started = time.perf_counter()
        with pytest.raises(interrupts.Interrupted, match="SIGTERM"), interrupts.training():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # a step that outlasts the grace
        assert time.perf_counter() - started < 4
    assert interrupts.PROGRESS.stop_requested is None and interrupts.PROGRESS.training == 0
