"""A micro study killed with SIGKILL at random moments and restarted ends as an uninterrupted one.

Run alone with `-k random_kill`. Each study runs in a child process that appends one line per `Trainer.train` call
that returns (the run, and the steps it trained from its resume point) to a log file, so a run trained twice shows.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hf_infcompute.records import iter_records
from hf_infcompute.training.checkpoints import INCOMPLETE_MARKER, checkpoints_newest_first, is_complete_checkpoint

KILLS = 4
SEED = 15
REPOSITORY = Path(__file__).resolve().parents[1]

READY = "ready"


def logged_train(original: Callable, log_file: Path) -> Callable:
    """`Trainer.train` that appends {"run", "steps" trained from its resume point} to `log_file` when it returns."""

    def train(self, *args, **kwargs):
        checkpoint = kwargs.get("resume_from_checkpoint")
        start = int(Path(checkpoint).name.rpartition("-")[2]) if checkpoint else 0
        result = original(self, *args, **kwargs)
        line = json.dumps({"run": Path(self.args.output_dir).name, "steps": self.state.global_step - start})
        with open(log_file, "a") as log:
            log.write(line + "\n")
            log.flush()
            os.fsync(log.fileno())
        return result

    return train


def child(spec_file: str, log_file: str, output: str) -> None:
    """The study of `spec_file` into `output`, its training logged; prints READY once imports are done."""
    from transformers import Trainer

    from hf_infcompute.study import parse_study, run_study

    Trainer.train = logged_train(Trainer.train, Path(log_file))
    spec = parse_study(json.loads(Path(spec_file).read_text()))
    print(READY, flush=True)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nobody reads the pipe from now on
    run_study(spec, output)


def micro_study(corpus_dir: Path, cache_dir: Path) -> dict:
    """One preset, one point per search, a 2-member ensemble and one sequence-level student; a checkpoint per step."""
    return {
        "name": "killed",
        "run": {
            "corpus": str(corpus_dir),
            "cache_dir": str(cache_dir),
            "tokenizer": "bpe",
            "vocab_size": 512,
            "tokenizer_train_chars": 100_000,
            "seq_len": 32,
            "val_sequences": 8,
            "max_corpus_tokens": 40_000,  # long documents: enough of them for both held-out splits
            "per_device_train_batch_size": 16,
            "precision": "fp32",
            "disable_tqdm": True,
            "save_strategy": "steps",
            "save_steps": 1,
        },
        "token_budget": 1024,
        "report_resamples": 200,  # a report long enough that most kills, timed as shares of the whole study, land
        "data_scaling_budgets": [],
        "presets": ["tiny-0.5m"],
        "standard": {
            "learning_rate": [3e-3],
            "num_train_epochs": [1],
            "start": [3e-3, 1],
            "extend_edges": False,
            "tie_break_seeds": 0,
        },
        "regularized": {
            "learning_rate": [3e-3],
            "num_train_epochs": [1],
            "weight_decay": [0.1, 0.8],  # 0.1: the regularized search also starts from the standard optimum
            "start": [3e-3, 1, 0.8],
            "extend_edges": False,
            "tie_break_seeds": 0,
        },
        "ensemble": {"k": 2, "member_candidates": ["optimum"]},
        "distillation": {"self_distillation": False, "synthetic_tokens": 512, "weight_decay": [0.1]},
    }


def start_study(spec: Path, folder: Path) -> subprocess.Popen:
    """This file run as a script on `spec` into `folder`, once its imports are done (one thread: the same sums in
    every process)."""
    paths = [str(REPOSITORY), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, __file__, str(spec), str(folder / "trained.log"), str(folder / "study")]
    folder.mkdir(exist_ok=True)
    with open(folder / "stderr.log", "a") as errors:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors, text=True)
    assert process.stdout.readline().strip() == READY, errors_of(folder)
    return process


def errors_of(folder: Path) -> str:
    return (folder / "stderr.log").read_text()[-4000:]


def finish(process: subprocess.Popen, folder: Path) -> None:
    process.communicate()
    assert process.returncode == 0, errors_of(folder)


def trained(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "trained.log").read_text().splitlines()]


def losses(folder: Path) -> dict[str, float]:
    return {record["run_id"]: record["val_loss"] for record in iter_records(folder / "study")}


@pytest.mark.slow
def test_random_kill_study_ends_as_an_uninterrupted_one(corpus_dir, tmp_path):
    spec = tmp_path / "study.json"
    spec.write_text(json.dumps(micro_study(corpus_dir, tmp_path / "cache")))
    whole, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    process = start_study(spec, whole)
    started = time.perf_counter()
    finish(process, whole)
    duration = time.perf_counter() - started  # after the imports, which the kills below wait out too

    rng = random.Random(SEED)
    kills = 0
    for _ in range(KILLS):
        process = start_study(spec, killed)
        try:
            process.wait(timeout=rng.uniform(0.3, 1.0) * duration)
        except subprocess.TimeoutExpired:
            process.kill()  # SIGKILL
            kills += 1
        process.communicate()  # reaped: a dead holder's pid must not look alive to the claims
    finish(start_study(spec, killed), killed)
    assert kills >= 2, "the study finished before most kills: lengthen it"

    expected, got = losses(whole), losses(killed)
    assert sorted(got) == sorted(expected)
    assert all(math.isclose(got[run], expected[run], rel_tol=0, abs_tol=1e-6) for run in expected)
    assert {entry["run"] for entry in trained(killed)} == {entry["run"] for entry in trained(whole)}
    runs = [entry["run"] for entry in trained(killed) if entry["steps"] > 0]
    assert len(runs) == len(set(runs))  # a resumed run trains its remaining steps once, a finished one never again
    assert not list((killed / "study").rglob(INCOMPLETE_MARKER))
    run_folders = [path for path in (killed / "study" / "runs").iterdir() if path.is_dir()]
    assert all(is_complete_checkpoint(c) for folder in run_folders for c in checkpoints_newest_first(folder))


if __name__ == "__main__":
    child(*sys.argv[1:4])
