"""FLOPs of a Llama-family decoder per token, and the dense matmul peak of known accelerators.

A multiply-add counts as 2 FLOPs. Counted: every matmul of the blocks (attention projections q/k/v/o and the gated
MLP's gate/up/down), the LM head (hidden x vocabulary, tied or not) and attention's two products (QK^T and AV) over a
causal mask. Not counted: the embedding lookup (an indexing, not a matmul), norms, rotary embeddings, the SwiGLU
activation, softmax and the loss, all of which are O(hidden) per token and small beside the matmuls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PretrainedConfig

from hf_infcompute.errors import InputError

TERA = 1e12


@dataclass(frozen=True)
class FlopsPerToken:
    """Forward-pass FLOPs per token of a decoder at one sequence length, by term."""

    non_embedding: float  # 2 x matmul parameters of the blocks (attention projections and MLP)
    lm_head: float  # 2 x hidden x vocabulary
    attention: float  # QK^T and AV with a causal mask: half of the full seq_len x seq_len square

    @property
    def forward(self) -> float:
        """All counted terms of one forward pass."""
        return self.non_embedding + self.lm_head + self.attention

    @property
    def training(self) -> float:
        """Forward plus backward (twice the forward: gradients of activations and of weights)."""
        return 3 * self.forward


def flops_per_token(config: PretrainedConfig, seq_len: int) -> FlopsPerToken:
    """Forward FLOPs per token of a Llama-family `config` (Llama, Mistral, Qwen2: gated MLP, grouped KV heads).

    Attention averages a causal row over the sequence: token t attends to t keys, so the mean is `seq_len / 2` keys
    for each of QK^T and AV, i.e. `2 x 2 x (seq_len / 2) x heads x head_dim` FLOPs per layer.
    """
    if seq_len <= 0:
        raise InputError(f"the sequence length must be positive, got {seq_len}")
    hidden = config.hidden_size
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    attention_projections = hidden * q_dim + 2 * hidden * kv_dim + q_dim * hidden
    mlp = 3 * hidden * config.intermediate_size
    return FlopsPerToken(
        non_embedding=2.0 * layers * (attention_projections + mlp),
        lm_head=2.0 * hidden * config.vocab_size,
        attention=2.0 * 2 * layers * q_dim * seq_len / 2,
    )


# Dense (no sparsity) tensor-core peaks in TFLOP/s from the vendors' data sheets: (16-bit, tf32, plain fp32).
# Matched in order against `torch.cuda.get_device_name`, so the more specific names come first.
_GPU_PEAKS: tuple[tuple[tuple[str, ...], tuple[float, float, float]], ...] = (
    (("GB200",), (2500.0, 1250.0, 80.0)),
    (("B200",), (2250.0, 1100.0, 80.0)),
    (("GH200",), (989.4, 494.7, 66.9)),
    (("H200",), (989.4, 494.7, 66.9)),
    (("H100", "PCIE"), (756.5, 378.0, 51.2)),
    (("H100", "NVL"), (835.5, 417.5, 60.0)),
    (("H100",), (989.4, 494.7, 66.9)),  # SXM (reported as "H100 80GB HBM3")
    (("H800",), (989.4, 494.7, 66.9)),
    (("A100",), (312.0, 156.0, 19.5)),
    (("A800",), (312.0, 156.0, 19.5)),
    (("L40S",), (362.1, 183.0, 91.6)),
    (("L40",), (181.0, 90.5, 90.5)),
    (("L4",), (121.0, 60.0, 30.3)),
    (("A10G",), (70.0, 35.0, 31.2)),
    (("A10",), (125.0, 62.5, 31.2)),
    (("RTX 4090",), (165.2, 82.6, 82.6)),
    (("V100",), (125.0, 15.7, 15.7)),  # fp16 tensor cores; no bf16 or tf32
    (("T4",), (65.0, 8.1, 8.1)),
)


def gpu_peak_flops(device_name: str, dtype: torch.dtype, tf32: bool = True) -> float | None:
    """Dense peak FLOP/s of the GPU called `device_name` for matmuls in `dtype`; None for an unknown GPU or dtype.

    fp32 matmuls run on tensor cores as tf32 when `tf32` (PyTorch's `float32_matmul_precision` below "highest").
    """
    name = device_name.upper()
    for needles, (half, tf32_peak, fp32_peak) in _GPU_PEAKS:
        if all(needle in name for needle in needles):
            if dtype in (torch.bfloat16, torch.float16):
                return half * TERA
            if dtype == torch.float32:
                return (tf32_peak if tf32 else fp32_peak) * TERA
            return None
    return None


def device_peak_flops(device: torch.device | str, dtype: torch.dtype) -> float | None:
    """Dense matmul peak of `device` in `dtype` from the table of known GPUs; None for a CPU or an unknown device."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    tf32 = torch.get_float32_matmul_precision() != "highest"
    return gpu_peak_flops(torch.cuda.get_device_name(device), dtype, tf32=tf32)
