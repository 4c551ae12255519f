"""Losses on an LM head that never hold all [tokens x vocabulary] logits: head and loss run chunk by chunk.

`chunked_head_terms` is the engine: it applies the head (`hidden @ weight.T + bias`) to `chunk_tokens` rows at a time,
adds up loss terms computed from each chunk's fp32 logits, keeps only its inputs for the backward pass, and recomputes
each chunk's logits there. Peak memory is one chunk's logits and gradients instead of the whole batch's (at 16 x 4,096
tokens and a 128,256-token vocabulary: 33.6 GB of fp32 logits, against 0.5 GB per 1,024-token chunk).
`chunked_causal_lm_loss` is the causal-LM cross-entropy on it, with transformers' `ForCausalLMLoss` semantics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from hf_infcompute.planning.memory import DEFAULT_LOSS_CHUNK_TOKENS

IGNORE_INDEX = -100

# (fp32 logits of chunk rows [start, end), start, end) -> that chunk's loss terms, summed over its rows: shape [k].
ChunkTerms = Callable[[torch.Tensor, int, int], torch.Tensor]


def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype the head's matmul runs in: autocast's where autocast is on (as `nn.Linear` would), else the input's."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return hidden.dtype


def _chunk_logits(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, start: int, end: int
) -> torch.Tensor:
    logits = hidden[start:end] @ weight.T
    if bias is not None:
        logits = logits + bias
    return logits.float()


class _ChunkedHeadTerms(torch.autograd.Function):
    """Sum over chunks of `terms(head(hidden[chunk]))`; the backward pass recomputes each chunk's logits."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, terms, chunk_tokens, compute_dtype):  # type: ignore[override]
        ctx.terms, ctx.chunk_tokens, ctx.compute_dtype = terms, chunk_tokens, compute_dtype
        ctx.save_for_backward(hidden, weight, bias)
        h, w = hidden.to(compute_dtype), weight.to(compute_dtype)
        b = None if bias is None else bias.to(compute_dtype)
        total = None
        with torch.autocast(hidden.device.type, enabled=False):
            # One pass even with no rows, so that the terms keep their shape (all zero).
            for start in range(0, max(len(h), 1), chunk_tokens):
                end = min(start + chunk_tokens, len(h))
                part = terms(_chunk_logits(h, w, b, start, end), start, end)
                total = part if total is None else total + part
        return total

    @staticmethod
    def backward(ctx, grad_total):  # type: ignore[override]
        hidden, weight, bias = ctx.saved_tensors
        compute_dtype = ctx.compute_dtype
        h, w = hidden.to(compute_dtype), weight.to(compute_dtype)
        b = None if bias is None else bias.to(compute_dtype)
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None  # every row is written
        # Accumulated over chunks in fp32 whatever the compute dtype, then returned in the weight's dtype.
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        grad_bias = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_bias else None
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, len(h), ctx.chunk_tokens):
                end = min(start + ctx.chunk_tokens, len(h))
                with torch.enable_grad():
                    logits = _chunk_logits(h, w, b, start, end).detach().requires_grad_()
                    (grad_logits,) = torch.autograd.grad(ctx.terms(logits, start, end), logits, grad_total)
                if grad_bias is not None:
                    grad_bias += grad_logits.sum(0)
                grad_logits = grad_logits.to(compute_dtype)
                if grad_hidden is not None:
                    grad_hidden[start:end] = grad_logits @ w
                if grad_weight is not None:
                    grad_weight += grad_logits.T @ h[start:end]
        grad_weight = None if grad_weight is None else grad_weight.to(weight.dtype)
        grad_bias = None if grad_bias is None else grad_bias.to(bias.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None


def chunked_head_terms(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    terms: ChunkTerms,
    *,
    bias: torch.Tensor | None = None,
    chunk_tokens: int = DEFAULT_LOSS_CHUNK_TOKENS,
) -> torch.Tensor:
    """Loss terms of the head `hidden @ weight.T + bias` on rows `hidden` ([n, hidden]), `chunk_tokens` rows at a time.

    `terms(logits, start, end)` gets the fp32 logits of rows `start:end` and returns their loss terms summed over
    those rows (a vector of fixed length); the result is the sum over all chunks. It must be a differentiable function
    of the logits alone (anything else it reads, such as targets or a teacher, is constant), since the backward pass
    calls it again on recomputed logits. The matmul runs in autocast's dtype where autocast is on.
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    return _ChunkedHeadTerms.apply(hidden, weight, bias, terms, chunk_tokens, _compute_dtype(hidden))


def shifted_targets(
    labels: torch.Tensor, shift_labels: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Flat next-token targets: position t predicts `labels[..., t + 1]`, the last position of each row nothing."""
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    return shift_labels.reshape(-1)


def chunked_causal_lm_loss(
    hidden_states: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
    shift_labels: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
    chunk_tokens: int = DEFAULT_LOSS_CHUNK_TOKENS,
) -> torch.Tensor:
    """The causal-LM cross-entropy of `hidden_states` ([..., seq, hidden]) under the head (`weight`, `bias`), chunked.

    Equals `ForCausalLMLoss(lm_head(hidden_states), labels)` of transformers: labels shifted by one inside (or given
    as `shift_labels`), `ignore_index` positions left out, the sum divided by `num_items_in_batch` when given (gradient
    accumulation) and else the mean over counted positions.
    """
    targets = shifted_targets(labels, shift_labels, ignore_index).to(hidden_states.device)
    # Every position goes through the head, ignored ones too: selecting the counted rows would cost a gather and, in
    # the backward pass, a scatter that on a CPU takes longer than the head's matmuls on the few rows it saves.
    rows = hidden_states.reshape(-1, hidden_states.shape[-1])

    def cross_entropy(logits: torch.Tensor, start: int, end: int) -> torch.Tensor:
        return F.cross_entropy(logits, targets[start:end], ignore_index=ignore_index, reduction="sum").unsqueeze(0)

    total = chunked_head_terms(rows, weight, cross_entropy, bias=bias, chunk_tokens=chunk_tokens)[0]
    if num_items_in_batch is None:
        # No counted position: 0 / 0, NaN, as the mean cross-entropy of transformers.
        return total / (targets != ignore_index).sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch
