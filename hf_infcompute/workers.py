"""Independent workers under a multi-process launcher (`accelerate launch`, `torchrun`).

Sweep points and ensemble members are separate trainings: each process must train alone on its own device, never
inside one data-parallel group with processes that train other models (their gradients would be averaged).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch

from hf_infcompute.errors import InputError

logger = logging.getLogger(__name__)

# Environment a distributed launch sets; a worker drops it so that its Trainer runs single-process.
LAUNCHER_VARIABLES = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
)
# Settings `accelerate launch` exports for the job as a whole (precision, sharding, DeepSpeed); a lone worker must not
# inherit them: `ACCELERATE_MIXED_PRECISION` overrides a run's `precision: fp32`, the others wrap it in FSDP/DeepSpeed.
LAUNCHER_SETTINGS = (
    "ACCELERATE_MIXED_PRECISION",
    "ACCELERATE_USE_FSDP",
    "ACCELERATE_USE_DEEPSPEED",
    "ACCELERATE_USE_MEGATRON_LM",
    "ACCELERATE_USE_PARALLELISM_CONFIG",
    "ACCELERATE_CONFIG_DS_FIELDS",
    "ACCELERATE_GRADIENT_ACCUMULATION_STEPS",
    "ACCELERATE_GRADIENT_CLIPPING",
)
LAUNCHER_SETTING_PREFIXES = ("FSDP_", "ACCELERATE_DEEPSPEED_", "MEGATRON_LM_", "PARALLELISM_CONFIG_")


@dataclass(frozen=True)
class WorkerSlot:
    """This process's place in a launch: `rank` of `world_size` independent workers; `shares_cores` when it was
    narrowed to its share of the CPU cores (`take_every_core` gives them back)."""

    rank: int
    world_size: int
    shares_cores: bool = field(default=False, compare=False)


def detach_from_launcher() -> WorkerSlot | None:
    """Make this process an independent worker on its own GPU; returns its slot, or None outside a launch.

    Call before anything touches CUDA: the process keeps only the GPU of its local rank visible, drops the launch's
    distributed variables and job-wide settings (`clear_launcher_environment`), and gets its share of the CPU cores
    back where the launcher left it one thread. Outside a launch on a machine with several GPUs, it says how to use
    them all (`accelerate launch --num_processes N`): a process trains on one GPU only.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        gpus = torch.cuda.device_count()
        if gpus > 1:
            logger.warning(
                "%d GPUs are visible and this process trains on one; run one worker per GPU with "
                "`accelerate launch --num_processes %d -m hf_infcompute ...`",
                gpus,
                gpus,
            )
        return None
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    _keep_own_gpu(rank, local_rank)
    shares_cores = _take_cpu_share(local_world_size)
    clear_launcher_environment()
    return WorkerSlot(rank=rank, world_size=world_size, shares_cores=shares_cores)


def is_lead(slot: WorkerSlot | None = None) -> bool:
    """Whether this process records, reports and distils: worker 0 of a detached launch (its `slot` from
    `detach_from_launcher`), rank 0 of a data-parallel launch (`RANK`), or the only process."""
    return (slot is None or slot.rank == 0) and int(os.environ.get("RANK", "0")) == 0


def cpu_share(processes: int) -> int:
    """This process's share of the CPU cores it may run on, with `processes` processes on the machine (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, processes))


def take_every_core(slot: WorkerSlot | None) -> None:
    """Run on every core again once the other workers are done: the lead's last phases (sampling, students) run alone.

    Only where `detach_from_launcher` set the share (an explicit thread count is kept)."""
    if slot is not None and slot.shares_cores:
        _set_threads(cpu_share(1))


def _take_cpu_share(processes: int) -> bool:
    """Run on this process's share of the cores where the launcher left it its default of one thread; whether it did."""
    if os.environ.get("OMP_NUM_THREADS") != "1":
        return False
    _set_threads(cpu_share(processes))
    return True


def _set_threads(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _keep_own_gpu(rank: int, local_rank: int) -> None:
    """Leave only the GPU of `local_rank` visible; refuse a rank without one rather than train on the CPU."""
    if os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true"):
        return  # launched with --cpu: CPU workers by request
    visible = [device for device in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if device.strip()]
    if visible:  # an explicit list: workers take its GPUs in turn (several per GPU when there are more workers)
        os.environ["CUDA_VISIBLE_DEVICES"] = visible[local_rank % len(visible)]
        return
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return  # set empty: no GPU on purpose
    gpus = torch.cuda.device_count()  # counted through NVML: CUDA is not initialised, so the narrowing below holds
    if gpus == 0:
        return  # a machine without GPUs
    if local_rank >= gpus:
        raise InputError(
            f"worker {rank} has local rank {local_rank} but this machine has {gpus} GPU(s), so it would train on the "
            f"CPU. Launch at most {gpus} processes per machine (`accelerate launch --num_processes {gpus} ...`), "
            "list the GPUs to share in CUDA_VISIBLE_DEVICES (workers then take them in turn), or launch with --cpu "
            "for CPU workers."
        )
    os.environ["CUDA_VISIBLE_DEVICES"] = str(local_rank)


def clear_launcher_environment() -> None:
    """Drop the launch's distributed variables and job-wide settings from this process's environment."""
    for name in list(os.environ):
        if name in LAUNCHER_VARIABLES or name in LAUNCHER_SETTINGS or name.startswith(LAUNCHER_SETTING_PREFIXES):
            del os.environ[name]


def end_launch() -> bool:
    """End this process's part in a multi-process launch; True on the process that carries on alone.

    Every rank waits for the others, destroys the process group, drops the launch's environment and accelerate's
    shared state (and transformers' DeepSpeed config) and takes back the cores the launch's one thread left idle, so
    that what follows runs as one plain process: lm-eval and `from_pretrained` see no launch and wait on no one.
    Rank 0, or the only process outside a launch, carries on; the others should return. Call on every rank, after
    the data-parallel work.
    """
    from accelerate.state import AcceleratorState, GradientState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not distributed and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return True  # no launch to end
    rank = torch.distributed.get_rank() if distributed else int(os.environ.get("RANK", "0"))
    if distributed:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    clear_launcher_environment()
    _take_cpu_share(1)  # the process that carries on runs alone
    # accelerate keeps its state in process-wide singletons and has no public reset; TrainingArguments resets it so too.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    unset_hf_deepspeed_config()
    return rank == 0
