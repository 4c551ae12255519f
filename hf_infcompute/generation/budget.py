"""Teacher precision, the sampling batch that fits the KV cache in device memory, and decode throughput.

A KV cache holds, per token, a key and a value vector per layer and KV head: 2 x layers x kv_heads x head_dim x the
dtype's size bytes, once per member for a logit ensemble. The batch is the KV budget over (bytes per token x row
length): an 8 x 300M teacher (12 layers, 12 KV heads of 64) at 4,096 tokens needs 155 GB of cache at batch 64 in
float32, and 77 GB in bfloat16.

Decode throughput (`decode_throughput`) is a roofline: one decode step makes one token for each of the B rows in
flight, reading every weight once and each row's KV cache (seq_len / 2 tokens on average), and doing B forward passes
of one token; it takes the longer of (bytes / HBM bandwidth) and (FLOPs / peak), divided by the share of that bound
the backend reaches (`DECODE_EFFICIENCY`). B differs by backend: transformers' `generate` keeps full-length rows in
`KV_MEMORY_FRACTION` of the memory left after the weights (`device_batch_size`); vLLM's paged cache holds rows at
their current length in `VLLM_MEMORY_UTILIZATION` of the memory less the weights, so about twice as many.
At the paper's 8 x 300M teacher (vocabulary 128,256, 4,096 tokens) on an 80 GiB H100 in bfloat16 this gives about
1,100 tokens/s for transformers (33 rows in flight) and 2,600 for vLLM (120 rows): both bound by reading the KV cache
(12 full KV heads per layer and member), far below what the teacher's FLOPs at the device's peak would suggest.
Measure the device's own figure with `hf-infcompute generate` (it prints tokens/s) and give it to
`plan --decode-tokens-per-second`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
# Share of the device's total memory a vLLM engine reserves for weights and KV cache (vLLM's default).
VLLM_MEMORY_UTILIZATION = 0.9
# Share of the roofline each backend reaches when decoding, an assumption: vLLM's continuous batching with paged
# attention and CUDA graphs; transformers' `generate`, one Python step per token with a kernel launch per layer and
# member, and the whole batch padded to full length.
DECODE_EFFICIENCY = {"vllm": 0.5, "transformers": 0.25}
# HBM bandwidth in TB/s from the vendors' data sheets, matched in order against the device name like
# `hf_infcompute.models.flops` matches its peaks.
_GPU_BANDWIDTH: tuple[tuple[tuple[str, ...], float], ...] = (
    (("GB200",), 8.0),
    (("B200",), 8.0),
    (("GH200",), 4.9),
    (("H200",), 4.8),
    (("H100", "PCIE"), 2.0),
    (("H100", "NVL"), 3.9),
    (("H100",), 3.35),
    (("H800",), 3.35),
    (("A100", "40GB"), 1.555),
    (("A100",), 2.039),
    (("A800",), 2.039),
    (("L40",), 0.864),
    (("L4",), 0.3),
    (("A10",), 0.6),
    (("RTX 4090",), 1.008),
    (("V100",), 0.9),
    (("T4",), 0.32),
)


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


def gpu_bandwidth(device_name: str) -> float | None:
    """HBM bandwidth in bytes/s of the GPU called `device_name`; None for an unknown GPU."""
    name = device_name.upper()
    for needles, terabytes in _GPU_BANDWIDTH:
        if all(needle in name for needle in needles):
            return terabytes * 1e12
    return None


@dataclass(frozen=True)
class DecodeEstimate:
    """Decode throughput of one teacher on one device: rows in flight, the bound that limits a step, tokens/s."""

    backend: str
    rows_in_flight: int
    bound: str  # "memory" or "compute"
    tokens_per_second: float

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "backend": self.backend,
            "rows_in_flight": self.rows_in_flight,
            "bound": self.bound,
            "tokens_per_second": self.tokens_per_second,
        }


def decode_throughput(
    *,
    backend: str,
    weight_bytes: float,
    kv_bytes_per_token: int,
    forward_flops_per_token: float,
    seq_len: int,
    memory_bytes: float,
    bandwidth: float,
    peak_flops: float,
) -> DecodeEstimate:
    """Tokens/s one device decodes for a teacher (all its members) with `backend` (see the module doc)."""
    if backend not in DECODE_EFFICIENCY:
        raise InputError(f"backend={backend!r} is not one of {', '.join(DECODE_EFFICIENCY)}")
    if weight_bytes >= memory_bytes:
        raise InputError(
            f"the teacher's weights ({weight_bytes / 2**30:.1f} GiB) do not fit the device's "
            f"{memory_bytes / 2**30:.1f} GiB: give a larger device (--gpu-memory)"
        )
    if backend == "vllm":
        pool = VLLM_MEMORY_UTILIZATION * memory_bytes - weight_bytes
        rows = kv_batch_size(int(pool), kv_bytes_per_token, max(1, seq_len // 2))
    else:
        rows = kv_batch_size(int(KV_MEMORY_FRACTION * (memory_bytes - weight_bytes)), kv_bytes_per_token, seq_len)
    memory_s = (weight_bytes + rows * seq_len / 2 * kv_bytes_per_token) / bandwidth
    compute_s = rows * forward_flops_per_token / peak_flops
    step_s = max(memory_s, compute_s) / DECODE_EFFICIENCY[backend]
    return DecodeEstimate(backend, rows, "memory" if memory_s >= compute_s else "compute", rows / step_s)
