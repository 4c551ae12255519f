"""One process, one device: launched processes become independent workers on their own GPU, with none of the launch's
job-wide settings, and a process outside a launch never spreads one model over several GPUs."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from accelerate import Accelerator, PartialState
from conftest import micro_llama_config
from torch import nn
from transformers import LlamaForCausalLM, Trainer, TrainingArguments

from hf_infcompute.errors import InputError
from hf_infcompute.training import RegularizedTrainingArguments
from hf_infcompute.workers import WorkerSlot, detach_from_launcher, end_launch, is_lead, take_every_core

LAUNCH = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "localhost"}
# What `accelerate launch --config_file recipes/accelerate/fsdp2.yaml` (or zero3.yaml) exports to every process.
JOB_SETTINGS = {
    "ACCELERATE_MIXED_PRECISION": "bf16",
    "ACCELERATE_USE_FSDP": "true",
    "FSDP_VERSION": "2",
    "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT",
    "ACCELERATE_USE_DEEPSPEED": "true",
    "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
    "ACCELERATE_DEEPSPEED_ZERO3_INIT": "true",
    "OMP_NUM_THREADS": "1",
}


@pytest.fixture
def launch_env(monkeypatch):
    """A clean environment to put launcher variables in, with torch's thread count restored afterwards."""
    for name in [*LAUNCH, *JOB_SETTINGS, "CUDA_VISIBLE_DEVICES", "ACCELERATE_USE_CPU"]:
        monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(threads)


def set_env(monkeypatch, values: dict[str, str]) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_launcher_processes_become_independent_workers(launch_env):
    assert detach_from_launcher() is None
    set_env(launch_env, LAUNCH)
    launch_env.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert detach_from_launcher() == WorkerSlot(rank=3, world_size=4)
    assert not any(name in os.environ for name in LAUNCH)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"  # its own device


def test_detached_worker_drops_the_launch_settings_and_gets_its_share_of_the_cores(launch_env, tmp_path):
    launch_env.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    leaked = RegularizedTrainingArguments(output_dir=str(tmp_path), precision="fp32")
    assert leaked.mixed_precision == "bf16"  # what a worker that kept the launch's settings would train in
    set_env(launch_env, {**LAUNCH, **JOB_SETTINGS})
    launch_env.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    detach_from_launcher()
    assert not any(name in os.environ for name in JOB_SETTINGS if name != "OMP_NUM_THREADS")
    assert os.environ["OMP_NUM_THREADS"] == "4" and torch.get_num_threads() == 4  # 8 cores, 2 processes per machine
    args = RegularizedTrainingArguments(output_dir=str(tmp_path), precision="fp32")
    assert args.mixed_precision == "no" and not args.bf16


def test_explicit_thread_count_is_kept(launch_env):
    set_env(launch_env, {**LAUNCH, "OMP_NUM_THREADS": "3"})
    slot = detach_from_launcher()
    assert os.environ["OMP_NUM_THREADS"] == "3"
    take_every_core(slot)
    assert os.environ["OMP_NUM_THREADS"] == "3"


def test_the_lead_takes_every_core_back_after_the_shared_phases(launch_env):
    set_env(launch_env, {**LAUNCH, "OMP_NUM_THREADS": "1"})  # torchrun's default for several processes
    launch_env.setattr(os, "sched_getaffinity", lambda pid: set(range(6)))
    slot = detach_from_launcher()
    assert slot.shares_cores and torch.get_num_threads() == 3  # 6 cores, 2 processes on this machine
    take_every_core(slot)
    assert os.environ["OMP_NUM_THREADS"] == "6" and torch.get_num_threads() == 6
    take_every_core(None)  # a lone process: left as it is
    assert torch.get_num_threads() == 6


def test_rank_without_a_gpu_is_an_input_error(launch_env):
    launch_env.setattr(torch.cuda, "device_count", lambda: 2)
    set_env(launch_env, {**LAUNCH, "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "4"})
    with pytest.raises(InputError, match="--num_processes 2"):
        detach_from_launcher()
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    launch_env.setenv("LOCAL_RANK", "1")
    detach_from_launcher()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"


def test_cpu_launch_and_gpu_less_machine_need_no_gpu(launch_env):
    launch_env.setattr(torch.cuda, "device_count", lambda: 2)
    set_env(launch_env, {**LAUNCH, "LOCAL_RANK": "3", "ACCELERATE_USE_CPU": "True"})  # `accelerate launch --cpu`
    assert detach_from_launcher() == WorkerSlot(rank=3, world_size=4)
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    launch_env.setattr(torch.cuda, "device_count", lambda: 0)
    set_env(launch_env, {**LAUNCH, "LOCAL_RANK": "3", "ACCELERATE_USE_CPU": "False"})
    assert detach_from_launcher() == WorkerSlot(rank=3, world_size=4)


def test_without_a_launcher_says_how_to_use_every_gpu(launch_env, caplog):
    launch_env.setattr(torch.cuda, "device_count", lambda: 4)
    with caplog.at_level(logging.WARNING, logger="hf_infcompute.workers"):
        assert detach_from_launcher() is None
    assert "accelerate launch --num_processes 4" in caplog.text


def test_one_process_never_wraps_the_model_in_data_parallel(tmp_path):
    """Without a launcher transformers counts every visible GPU (`_n_gpu`) and wraps the model in `nn.DataParallel`:
    the run's arguments keep it at one device, so the batch is the one the record states."""
    model = LlamaForCausalLM(micro_llama_config())
    for cls, wrapped in ((TrainingArguments, True), (RegularizedTrainingArguments, False)):
        args = cls(output_dir=str(tmp_path), per_device_train_batch_size=8, report_to="none")
        args._n_gpu = 4  # what `_setup_devices` finds on a 4-GPU machine
        trainer = Trainer(model=model, args=args)
        assert isinstance(trainer._wrap_model(model), nn.DataParallel) is wrapped
        assert args.train_batch_size == (32 if wrapped else 8)


def test_end_launch_leaves_one_plain_process(launch_env, tmp_path):
    """After the launch ends, an `Accelerator` (as lm-eval builds one) sees a single process and no job settings."""
    set_env(
        launch_env,
        {
            "WORLD_SIZE": "1",
            "RANK": "0",
            "LOCAL_RANK": "0",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": "29617",
            "ACCELERATE_MIXED_PRECISION": "bf16",
            "ACCELERATE_USE_CPU": "True",
            "OMP_NUM_THREADS": "1",
        },
    )
    launch_env.setattr(os, "sched_getaffinity", lambda pid: set(range(3)))
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    PartialState(cpu=True)
    assert end_launch()
    assert not torch.distributed.is_initialized()
    assert not any(name in os.environ for name in ("WORLD_SIZE", "RANK", "ACCELERATE_MIXED_PRECISION"))
    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == 1 and accelerator.mixed_precision == "no"
    assert torch.get_num_threads() == 3  # alone now: every core
    assert end_launch()  # outside a launch: nothing to end


def test_the_lead_is_worker_zero_or_rank_zero_or_the_only_process(launch_env):
    monkeypatch = launch_env
    monkeypatch.delenv("RANK", raising=False)
    assert is_lead()  # a lone process
    monkeypatch.setenv("RANK", "1")
    assert not is_lead()  # rank 1 of a data-parallel launch
    monkeypatch.setenv("RANK", "0")
    assert is_lead()
    # Detached workers: the launch variables are gone, the slot says who leads.
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    slot = detach_from_launcher()
    assert slot == WorkerSlot(rank=1, world_size=2) and not is_lead(slot) and is_lead()
    assert is_lead(WorkerSlot(rank=0, world_size=2))
