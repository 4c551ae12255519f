"""The micro-batch that fits the GPU a run is on: the memory model (`hf_infcompute.planning.memory`) against the
device's free memory."""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING

import torch
from transformers import PretrainedConfig

from hf_infcompute.errors import InputError
from hf_infcompute.models.presets import count_parameters
from hf_infcompute.planning.memory import DEFAULT_LOSS_CHUNK_TOKENS, GIB, largest_micro_batch

if TYPE_CHECKING:  # the training package imports this module (`pretrain` sizes its micro-batch here)
    from hf_infcompute.training.arguments import RegularizedTrainingArguments

logger = logging.getLogger(__name__)


def free_memory(device: torch.device) -> int:
    """Bytes a new run can use on a CUDA device: what the driver reports free after the previous run's objects are
    collected and PyTorch's cache is returned, plus whatever the cache still holds unallocated.

    `torch.cuda.mem_get_info` counts PyTorch's cached blocks as used, so in a process that has trained before (a
    search runs its points in-process) it alone reads the previous run's cache as taken.
    """
    gc.collect()
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def fit_micro_batch(args: RegularizedTrainingArguments, config: PretrainedConfig, seq_len: int) -> int:
    """Set `args`' micro-batch to the largest that fits the free memory of its GPU and return it; off a GPU the
    given one is kept. The global batch is kept by the accumulation."""
    device = args.device
    if device.type != "cuda":
        return args.per_device_train_batch_size
    free = free_memory(device)
    micro_batch = largest_micro_batch(
        config,
        count_parameters(config).total,
        seq_len,
        args.global_batch_size,
        args.world_size,
        free,
        bf16=args.bf16,
        gradient_checkpointing=args.gradient_checkpointing,
        loss_implementation=getattr(args, "loss_implementation", "chunked"),
        loss_chunk_tokens=getattr(args, "loss_chunk_tokens", DEFAULT_LOSS_CHUNK_TOKENS),
    )
    if micro_batch == 0:
        raise InputError(
            f"not one sequence of {seq_len} tokens fits the {free / GIB:.1f} GiB free on {device}: turn on "
            "`gradient_checkpointing`, set `loss_implementation=chunked`, lower `seq_len`, or shard the model"
        )
    args.set_micro_batch(micro_batch)
    logger.info(
        "micro-batch %d x %d accumulation steps fits %.1f GiB free on %s",
        micro_batch,
        args.gradient_accumulation_steps,
        free / GIB,
        device,
    )
    return micro_batch
