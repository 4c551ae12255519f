"""Distillation math as pure functions: the token-level KD loss (whole or chunked) and the real:synthetic batch mix."""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import torch
import torch.nn.functional as F

from hf_infcompute.errors import InputError
from hf_infcompute.planning.memory import DEFAULT_LOSS_CHUNK_TOKENS
from hf_infcompute.training.losses import chunked_head_terms, shifted_targets

IGNORE_INDEX = -100
# Teacher logits ([end - start, vocab]) at flat positions start:end of the batch's [batch x seq] tokens.
TeacherChunkLogits = Callable[[int, int], torch.Tensor]


def token_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """KL(teacher || student) of the next-token distributions at temperature T, times T^2 (Hinton et al.).

    `student_logits` and `teacher_logits` are (..., vocab) and aligned position by position: logits[..., t, :]
    predict the same token in both. `labels` (shape `logits.shape[:-1]`) selects the positions that count: a bool
    mask (True counts) or target ids aligned with the logits (already shifted), where `IGNORE_INDEX` (-100) does not
    count. No gradient reaches the teacher.
    `reduction`: "mean" over counted positions, "sum", or "none" (per position, zero where not counted).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ: "
            "distillation needs the same positions and the same vocabulary"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    # F.kl_div(input, target) computes KL(target || input) elementwise: target * (log target - input).
    per_position = F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="none").sum(-1)
    per_position = per_position * temperature**2
    if labels is not None:
        if labels.shape != per_position.shape:
            raise ValueError(
                f"labels {tuple(labels.shape)} must have the logits' shape without the vocabulary, "
                f"{tuple(per_position.shape)}"
            )
        mask = labels if labels.dtype == torch.bool else labels != IGNORE_INDEX
        per_position = per_position * mask
        count = mask.sum().clamp(min=1)
    else:
        count = max(per_position.numel(), 1)
    if reduction == "none":
        return per_position
    total = per_position.sum()
    if reduction == "sum":
        return total
    # With no counted position the mean is 0 (and still differentiable): a fully masked batch adds nothing.
    return total / count


def _chunked_kd_terms(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    student_bias: torch.Tensor | None,
    teacher_logits: TeacherChunkLogits,
    labels: torch.Tensor,
    *,
    temperature: float,
    with_cross_entropy: bool,
    chunk_tokens: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed (KL, cross-entropy) terms over the counted positions and their number; no cross-entropy term if not
    `with_cross_entropy`."""
    targets = shifted_targets(labels).to(student_hidden.device)
    rows = student_hidden.reshape(-1, student_hidden.shape[-1])

    def terms(logits: torch.Tensor, start: int, end: int) -> torch.Tensor:
        chunk_targets = targets[start:end]
        kd = token_kd_loss(
            logits, teacher_logits(start, end), chunk_targets != IGNORE_INDEX, temperature=temperature, reduction="sum"
        )
        if not with_cross_entropy:
            return kd.unsqueeze(0)
        ce = F.cross_entropy(logits, chunk_targets, ignore_index=IGNORE_INDEX, reduction="sum")
        return torch.stack([kd, ce])

    summed = chunked_head_terms(rows, student_weight, terms, bias=student_bias, chunk_tokens=chunk_tokens)
    return summed, (targets != IGNORE_INDEX).sum()


def chunked_token_kd_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    teacher_logits: TeacherChunkLogits,
    labels: torch.Tensor,
    *,
    temperature: float = 1.0,
    student_bias: torch.Tensor | None = None,
    chunk_tokens: int = DEFAULT_LOSS_CHUNK_TOKENS,
) -> torch.Tensor:
    """`token_kd_loss(student_logits[:, :-1], teacher_logits[:, :-1], labels[:, 1:])` without all logits at once.

    The student's logits are its head (`student_weight`, `student_bias`) on `student_hidden` ([batch, seq, hidden]),
    computed `chunk_tokens` positions at a time and again in the backward pass; `teacher_logits(start, end)` gives the
    teacher's at the same flat positions. `labels` are the model's (unshifted): position t counts if
    `labels[:, t + 1]` is not -100. The mean over counted positions (0 when none count).
    """
    summed, count = _chunked_kd_terms(
        student_hidden,
        student_weight,
        student_bias,
        teacher_logits,
        labels,
        temperature=temperature,
        with_cross_entropy=False,
        chunk_tokens=chunk_tokens,
    )
    return summed[0] / count.clamp(min=1)


def chunked_distillation_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    student_bias: torch.Tensor | None = None,
    *,
    teacher_logits: TeacherChunkLogits,
    labels: torch.Tensor,
    alpha: float,
    temperature: float = 1.0,
    chunk_tokens: int = DEFAULT_LOSS_CHUNK_TOKENS,
) -> torch.Tensor:
    """`(1 - alpha) * cross-entropy + alpha * chunked_token_kd_loss`, both means over the counted positions, in one
    chunked pass over the student's head (its logits are computed once per chunk for both terms).

    The arguments before `*` are those of the model's `head_loss` (see `training.loss_forward`)."""
    summed, count = _chunked_kd_terms(
        student_hidden,
        student_weight,
        student_bias,
        teacher_logits,
        labels,
        temperature=temperature,
        with_cross_entropy=True,
        chunk_tokens=chunk_tokens,
    )
    kd, ce = summed[0] / count.clamp(min=1), summed[1] / count  # CE of no position: NaN, as transformers'
    return (1 - alpha) * ce + alpha * kd


def mixed_batch_counts(batch_size: int, synthetic_fraction: float, step: int = 0) -> tuple[int, int]:
    """(real, synthetic) sequences in the batch of `step` when a fraction of all sequences is synthetic.

    Per-step counts differ by at most one across steps and their running total stays within one sequence of
    `synthetic_fraction` of all sequences: 0.9 of 16 gives 14, 14, 15, 14, 15, ... (72 in every 5 steps) rather
    than rounding to 14 every step (a fraction of 0.875).
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= synthetic_fraction <= 1:
        raise InputError(f"synthetic_fraction must be in [0, 1], got {synthetic_fraction}: 0 is real data only")
    if step < 0:
        raise InputError(f"step must be >= 0, got {step}")
    # Exact rational arithmetic: floats would put 0.9 * 16 * 5 a hair off 72 and shift a sequence between steps.
    fraction = Fraction(synthetic_fraction).limit_denominator(10**6) * batch_size
    synthetic = math.floor(fraction * (step + 1)) - math.floor(fraction * step)
    return batch_size - synthetic, synthetic
