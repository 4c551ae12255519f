"""Teacher precision and the sampling batch that fits the KV cache in device memory.

A KV cache holds, per token, a key and a value vector per layer and KV head: 2 x layers x kv_heads x head_dim x the
dtype's size bytes, once per member for a logit ensemble. The batch is the KV budget over (bytes per token x row
length): an 8 x 300M teacher (12 layers, 12 KV heads of 64) at 4,096 tokens needs 155 GB of cache at batch 64 in
float32, and 77 GB in bfloat16.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedConfig, PreTrainedModel

from hf_infcompute.errors import InputError

DTYPES = ("float32", "bfloat16", "float16")
# Share of the device memory left after the teacher's weights that the KV cache may take; the rest holds the
# activations and the step's logits.
KV_MEMORY_FRACTION = 0.5
# Rows per `generate` call at most: beyond this the step time grows linearly and nothing is gained.
MAX_BATCH_SIZE = 1024
CPU_BATCH_SIZE = 64


def resolve_dtype(dtype: str, device: str) -> str:
    """The teacher's dtype: `auto` is bfloat16 on a GPU and float32 elsewhere; an explicit dtype is kept."""
    if dtype == "auto":
        return "bfloat16" if torch.device(device).type == "cuda" else "float32"
    if dtype not in DTYPES:
        raise InputError(f"dtype={dtype!r} is not one of auto, {', '.join(DTYPES)}: give one of them (--dtype)")
    return dtype


def kv_bytes_per_token(configs: Sequence[PreTrainedConfig], dtype_bytes: int) -> int:
    """KV-cache bytes one token takes in models of these configs (one config per ensemble member)."""
    total = 0
    for config in configs:
        text = config.get_text_config(decoder=True)
        heads = text.num_attention_heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        total += 2 * text.num_hidden_layers * kv_heads * head_dim * dtype_bytes
    return total


def kv_batch_size(budget_bytes: int, bytes_per_token: int, seq_len: int, max_batch: int = MAX_BATCH_SIZE) -> int:
    """Rows whose KV cache of `seq_len` tokens fits in `budget_bytes` (at least 1, at most `max_batch`)."""
    return max(1, min(max_batch, budget_bytes // (bytes_per_token * seq_len)))


def teacher_configs(model: PreTrainedModel) -> list[PreTrainedConfig]:
    """The configs whose KV caches a teacher keeps: each member's for a logit ensemble, else the model's own."""
    members = getattr(model, "members", None)
    return [member.config for member in members] if members is not None else [model.config]


def device_batch_size(model: PreTrainedModel, seq_len: int) -> int:
    """The sampling batch for `model` on its device: sized to the KV budget on a GPU, `CPU_BATCH_SIZE` elsewhere.

    The budget is a fixed share of the device's total memory after the weights (not of what happens to be free), so
    the same teacher on the same GPU gets the same batch, and a resumed run samples as an uninterrupted one.
    """
    device = model.device
    if device.type != "cuda":
        return CPU_BATCH_SIZE
    total = torch.cuda.get_device_properties(device).total_memory
    weights = sum(t.numel() * t.element_size() for t in {id(t): t for t in model.parameters()}.values())
    budget = int(KV_MEMORY_FRACTION * (total - weights))
    return kv_batch_size(budget, kv_bytes_per_token(teacher_configs(model), model.dtype.itemsize), seq_len)
