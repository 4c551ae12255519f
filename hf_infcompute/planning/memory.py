"""Memory of one training step per device, and the micro-batch and gradient accumulation that keep a global batch.

Pure arithmetic on a Llama-family config: nothing is allocated. The model assumes the Trainer's layout: fp32
parameters (bf16 runs are autocast), fp32 gradients and AdamW moments, one process per device (no sharding).
Activations are the tensors autograd saves in a forward pass of a decoder layer under sdpa attention (no
seq_len x seq_len scores are stored); `tests/test_plan.py` measures a forward and backward on the CPU against it.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig

from hf_infcompute.errors import InputError

GIB = 1024**3
FP32 = 4
LOSS_IMPLEMENTATIONS = ("auto", "chunked", "full", "liger")
# Tokens per chunk of the chunked loss when a run does not say (the run key `loss_chunk_tokens`): at 8 x 1,024 tokens
# and vocabulary 32,768 a step's peak was 0.95 GiB with 1,024-token chunks, 1.6 GiB with 2,048 and 2.9 GiB with 4,096
# (3.4 GiB full), at about the same step time (benchmarks/loss_memory.py).
DEFAULT_LOSS_CHUNK_TOKENS = 1024
# `auto` computes the loss in chunks when a micro-batch's fp32 logits would take more than this. Below it the logits
# are small beside the model, and the full loss measured faster: at the quickstart's shape (16 x 128 tokens,
# vocabulary 4,096: 32 MiB of logits) 0.31 s against 0.46 s a step in bf16 on 2 CPU cores.
AUTO_CHUNKED_LOGITS_BYTES = 1 * GIB
# Share of the device's memory a step may plan to use: the rest is the allocator's fragmentation and workspaces.
DEFAULT_MEMORY_MARGIN = 0.9


@dataclass(frozen=True)
class StepMemory:
    """Bytes per device of one training step of a micro-batch.

    `weights`: fp32 parameters, plus under bf16 autocast the bf16 copies of the matmul weights kept for backward.
    `gradients`: fp32. `optimizer`: AdamW's two fp32 moments. `activations` / `activations_checkpointed`: what
    the decoder layers keep for backward without and with gradient checkpointing (then each layer keeps its input
    and one layer at a time is recomputed). `loss`: the LM head's logits, their fp32 upcast and gradient (the whole
    micro-batch for `full`, one chunk for `chunked`).
    """

    weights: int
    gradients: int
    optimizer: int
    activations: int
    activations_checkpointed: int
    loss: int
    gradient_checkpointing: bool

    @property
    def total(self) -> int:
        active = self.activations_checkpointed if self.gradient_checkpointing else self.activations
        return self.weights + self.gradients + self.optimizer + active + self.loss

    def to_gib(self) -> dict[str, float]:
        """The terms and the total in GiB (2 decimals), for printing."""
        terms = {
            "weights": self.weights,
            "gradients": self.gradients,
            "optimizer": self.optimizer,
            "activations": self.activations,
            "activations_checkpointed": self.activations_checkpointed,
            "loss": self.loss,
            "total": self.total,
        }
        return {name: round(value / GIB, 2) for name, value in terms.items()}


@dataclass(frozen=True)
class _Shape:
    hidden: int
    intermediate: int
    layers: int
    q_dim: int
    kv_dim: int
    vocab: int

    @classmethod
    def of(cls, config: PretrainedConfig) -> _Shape:
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(
            config.hidden_size,
            config.intermediate_size,
            config.num_hidden_layers,
            heads * head_dim,
            kv_heads * head_dim,
            config.vocab_size,
        )

    @property
    def matmul_parameters(self) -> int:
        """Weights of every matmul: attention projections, MLP, LM head."""
        attention = 2 * self.hidden * self.q_dim + 2 * self.hidden * self.kv_dim
        return self.layers * (attention + 3 * self.hidden * self.intermediate) + self.hidden * self.vocab


def layer_activation_bytes(config: PretrainedConfig, tokens: int, compute_bytes: int) -> int:
    """Bytes one Llama decoder layer saves for backward over `tokens` tokens.

    Per token: both RMSNorms keep their fp32 input and normalised value (4 x hidden fp32; the residual stream is fp32);
    the projections keep their input (under autocast each of q/k/v and gate/up casts its own bf16 copy: 5 x hidden,
    else 2); rotary embedding keeps q and k and their rotated halves; sdpa keeps q, k, v (expanded to the query
    heads when grouped) and its output; o_proj keeps its contiguous input; the MLP keeps gate, silu(gate), up and
    their product (4 x intermediate).
    """
    s = _Shape.of(config)
    autocast = compute_bytes < FP32
    kv_expanded = s.q_dim
    per_token = (
        4 * FP32 * s.hidden
        + compute_bytes * (5 if autocast else 2) * s.hidden
        + compute_bytes * 2 * (s.q_dim + s.kv_dim)
        + compute_bytes * (2 * s.q_dim + 2 * kv_expanded)
        + compute_bytes * s.q_dim
        + compute_bytes * 4 * s.intermediate
    )
    return tokens * per_token


def resolve_loss_implementation(implementation: str, tokens: int, vocab_size: int) -> str:
    """The loss implementation a run uses: `auto` is `chunked` when `tokens` x `vocab_size` fp32 logits exceed
    `AUTO_CHUNKED_LOGITS_BYTES`, else `full`; the others as given."""
    if implementation not in LOSS_IMPLEMENTATIONS:
        raise InputError(
            f"unknown loss_implementation {implementation!r}; choose one of {', '.join(LOSS_IMPLEMENTATIONS)}"
        )
    if implementation != "auto":
        return implementation
    return "chunked" if tokens * vocab_size * FP32 > AUTO_CHUNKED_LOGITS_BYTES else "full"


def loss_bytes(
    config: PretrainedConfig, tokens: int, compute_bytes: int, implementation: str, chunk_tokens: int
) -> int:
    """Bytes of the LM head and loss beyond the decoder: the final norm and the logits.

    `full`: every token's logits in the compute dtype, their fp32 upcast (the log-softmax) and fp32 gradient.
    `chunked` (and Liger's fused loss, counted alike): `chunk_tokens` tokens' fp32 logits and gradient at a time.
    """
    s = _Shape.of(config)
    implementation = resolve_loss_implementation(implementation, tokens, s.vocab)
    final_norm = tokens * (2 * FP32 + compute_bytes) * s.hidden
    if implementation == "full":
        return final_norm + tokens * s.vocab * (compute_bytes + 2 * FP32)
    return final_norm + min(tokens, chunk_tokens) * s.vocab * 2 * FP32


def step_memory(
    config: PretrainedConfig,
    parameters: int,
    micro_batch: int,
    seq_len: int,
    *,
    bf16: bool = True,
    gradient_checkpointing: bool = False,
    loss_implementation: str = "chunked",
    loss_chunk_tokens: int = DEFAULT_LOSS_CHUNK_TOKENS,
) -> StepMemory:
    """Memory per device of a training step of `micro_batch` sequences of `seq_len` tokens (`parameters`: all)."""
    tokens = micro_batch * seq_len
    compute_bytes = 2 if bf16 else FP32
    shape = _Shape.of(config)
    layer = layer_activation_bytes(config, tokens, compute_bytes)
    return StepMemory(
        weights=FP32 * parameters + (2 * shape.matmul_parameters if bf16 else 0),
        gradients=FP32 * parameters,
        optimizer=2 * FP32 * parameters,
        activations=shape.layers * layer,
        activations_checkpointed=shape.layers * tokens * FP32 * shape.hidden + layer,
        loss=loss_bytes(config, tokens, compute_bytes, loss_implementation, loss_chunk_tokens),
        gradient_checkpointing=gradient_checkpointing,
    )


def gradient_accumulation(global_batch: int, micro_batch: int, world_size: int) -> int:
    """Accumulation steps so that micro-batch x steps x world size = `global_batch` sequences."""
    if min(global_batch, micro_batch, world_size) < 1:
        raise InputError(
            f"global batch {global_batch}, micro-batch {micro_batch} and world size {world_size} must all be >= 1"
        )
    per_step = micro_batch * world_size
    if global_batch % per_step:
        raise InputError(
            f"`global_batch_size` {global_batch} is not a multiple of per_device_train_batch_size x world size "
            f"({micro_batch} x {world_size} = {per_step}); choose a per_device_train_batch_size that divides "
            f"{global_batch // world_size if global_batch % world_size == 0 else global_batch} (or change "
            "global_batch_size or the number of processes)"
        )
    return global_batch // per_step


def largest_micro_batch(
    config: PretrainedConfig,
    parameters: int,
    seq_len: int,
    global_batch: int,
    world_size: int,
    device_bytes: float,
    *,
    margin: float = DEFAULT_MEMORY_MARGIN,
    **memory_options: object,
) -> int:
    """The largest micro-batch dividing the per-device share of `global_batch` whose step fits `margin` x
    `device_bytes`; 0 when not even one sequence fits. `memory_options` go to `step_memory`."""
    if global_batch % world_size:
        raise InputError(f"`global_batch_size` {global_batch} is not a multiple of the world size {world_size}")
    share = global_batch // world_size
    for micro_batch in sorted((d for d in range(1, share + 1) if share % d == 0), reverse=True):
        memory = step_memory(config, parameters, micro_batch, seq_len, **memory_options)  # type: ignore[arg-type]
        if memory.total <= margin * device_bytes:
            return micro_batch
    return 0
