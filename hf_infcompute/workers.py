"""Independent workers under a multi-process launcher (`accelerate launch`, `torchrun`).

Sweep points and ensemble members are separate trainings: each process must train alone on its own device, never
inside one data-parallel group with processes that train other models (their gradients would be averaged).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Environment a distributed launch sets; a worker drops it so that its Trainer runs single-process.
LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class WorkerSlot:
    """This process's place in a launch: `rank` of `world_size` independent workers."""

    rank: int
    world_size: int


def detach_from_launcher() -> WorkerSlot | None:
    """Make this process an independent worker on its own GPU; returns its slot, or None outside a launch.

    Call before anything touches CUDA: the process keeps only the GPU of its local rank visible.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    for name in LAUNCHER_VARIABLES:
        os.environ.pop(name, None)
    visible = [device for device in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if device.strip()]
    os.environ["CUDA_VISIBLE_DEVICES"] = visible[local_rank % len(visible)] if visible else str(local_rank)
    return WorkerSlot(rank=rank, world_size=world_size)


def is_lead(slot: WorkerSlot | None = None) -> bool:
    """Whether this process records, reports and distils: worker 0 of a detached launch (its `slot` from
    `detach_from_launcher`), rank 0 of a data-parallel launch (`RANK`), or the only process."""
    return (slot is None or slot.rank == 0) and int(os.environ.get("RANK", "0")) == 0
