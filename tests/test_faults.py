"""Faults during training: half-written checkpoints, non-finite steps, two trainers on one run, lost model folders."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_infcompute.data import prepare_data
from hf_infcompute.errors import NonFiniteLossError
from hf_infcompute.training import parse_run_config, pretrain
from hf_infcompute.training.checkpoints import checkpoints_newest_first
from hf_infcompute.training.claim import RunClaim
from hf_infcompute.training.pretraining import build_trainer, run_dir


class StopAtStep(TrainerCallback):
    """Simulates a killed run: raises once `step` optimizer steps are done."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


class ListCheckpointsAtStart(TrainerCallback):
    """Notes the checkpoint folders present when training (or resuming) starts."""

    names: list[str] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.names = [path.name for path in checkpoints_newest_first(args.output_dir)]


def test_half_written_checkpoint_is_skipped_and_resume_equals_uninterrupted(tiny_run, tmp_path):
    settings = {**tiny_run, "token_budget": 4096, "num_train_epochs": 1, "save_steps": 1, "save_total_limit": 2}
    uninterrupted = pretrain(settings, tmp_path / "a")  # 8 steps
    with pytest.raises(KeyboardInterrupt):
        pretrain(settings, tmp_path / "b", callbacks=[StopAtStep(6)])  # after checkpoint-5 is saved
    folder = run_dir(tmp_path / "b", uninterrupted["run_id"])
    assert [path.name for path in checkpoints_newest_first(folder)] == ["checkpoint-5", "checkpoint-4"]
    (folder / "checkpoint-5" / "trainer_state.json").unlink()  # a kill between the weights and the state
    seen = ListCheckpointsAtStart()
    resumed = pretrain(settings, tmp_path / "b", callbacks=[seen])
    assert resumed["resumed_from"] == "checkpoint-4"
    assert seen.names == ["checkpoint-4"]  # the half-written one was deleted
    assert resumed["val_loss"] == pytest.approx(uninterrupted["val_loss"], abs=1e-6)
    assert resumed["train_loss"] == pytest.approx(uninterrupted["train_loss"], abs=1e-6)


def test_non_finite_step_is_never_applied_and_named_checkpoint_is_finite(tiny_run, tmp_path):
    # lr=1e6: step 3's loss is finite but its gradient norm is NaN; applied, it made the weights NaN.
    settings = {**tiny_run, "learning_rate": 1e6, "save_steps": 1, "save_total_limit": 1}
    record = pretrain(settings, tmp_path)
    assert record["status"] == "failed"
    folder = run_dir(tmp_path, record["run_id"])
    checkpoints = checkpoints_newest_first(folder)
    assert checkpoints, "no checkpoint kept"
    named = checkpoints[0]
    assert "gradient norm" in record["error"] and f"last good checkpoint is {named}" in record["error"]
    assert all(torch.isfinite(tensor).all() for tensor in load_file(named / "model.safetensors").values())
    optimizer_state = torch.load(named / "optimizer.pt", weights_only=True)["state"]
    assert all(torch.isfinite(t).all() for moments in optimizer_state.values() for t in moments.values())
    run = parse_run_config(settings)
    run.training.output_dir = str(folder)
    trainer = build_trainer(run, prepare_data(run.data))
    with pytest.raises(NonFiniteLossError, match=f"at step {record['failed_step']}"):
        trainer.train(resume_from_checkpoint=str(named))  # loads, then meets the same step again
    assert trainer.state.global_step == record["failed_step"] - 1


def train_counting(settings: dict, output_dir: str, log: str, result: str) -> None:
    """A process that pretrains the run, appending a line to `log` each time `Trainer.train` starts."""
    from transformers import Trainer

    original = Trainer.train

    def counted(self, *args, **kwargs):
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return original(self, *args, **kwargs)

    Trainer.train = counted
    Path(result).write_text(json.dumps(pretrain(settings, output_dir)))


def test_two_processes_on_one_run_train_it_once(tiny_run, tmp_path):
    settings = {**tiny_run, "token_budget": 4096, "num_train_epochs": 1}
    prepare_data(parse_run_config(settings).data)  # tokenizer and packing cached before the race
    context = multiprocessing.get_context("spawn")
    log, results = tmp_path / "train.log", [tmp_path / f"record-{i}.json" for i in range(2)]
    workers = [
        context.Process(target=train_counting, args=(settings, str(tmp_path / "out"), str(log), str(result)))
        for result in results
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
        assert worker.exitcode == 0
    assert len(log.read_text().split()) == 1
    first, second = (json.loads(result.read_text()) for result in results)
    assert first == second and first["status"] == "finished"


def hold_claim(folder: str, held: multiprocessing.synchronize.Event) -> None:
    claim = RunClaim(folder)
    claim.acquire()
    held.set()
    threading.Event().wait(600)
    claim.release()


def test_claim_of_a_killed_holder_is_taken_over(tmp_path):
    context = multiprocessing.get_context("spawn")
    held = context.Event()
    holder = context.Process(target=hold_claim, args=(str(tmp_path), held))
    holder.start()
    assert held.wait(120)
    claim = RunClaim(tmp_path, poll_s=0.2)
    assert str(holder.pid) in claim.holder()
    waiter = threading.Thread(target=claim.acquire, daemon=True)
    waiter.start()
    waiter.join(1.0)
    assert waiter.is_alive(), "the claim was taken while its holder lives"
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    waiter.join(30)
    assert not waiter.is_alive() and str(os.getpid()) in claim.holder()
    claim.release()


def test_finished_record_without_model_weights_is_retrained(tiny_run, tmp_path, trained_runs):
    settings = {**tiny_run, "token_budget": 4096, "num_train_epochs": 1}
    first = pretrain(settings, tmp_path)
    shutil.rmtree(run_dir(tmp_path, first["run_id"]) / "model")
    again = pretrain(settings, tmp_path)
    assert trained_runs == [first["run_id"]] * 2
    assert again["status"] == "finished" and (Path(again["model_dir"]) / "model.safetensors").is_file()
    assert pretrain(settings, tmp_path) == again and len(trained_runs) == 2
