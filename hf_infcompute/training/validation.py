"""Per-sequence held-out losses: the mean next-token NLL of every validation and test row, for paired comparisons.

A run's `val_loss` is one number; the study's findings compare two models on the same held-out rows, and the
spread of their per-row differences is what makes an interval (`hf_infcompute.study.confidence`). The Trainer's
evaluation loop keeps only the mean loss, so the rows are scored here, chunk by chunk (no [tokens x vocabulary]
logits beyond one chunk) and without a KV cache.
"""

from __future__ import annotations

from typing import Any

import datasets
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedModel

from hf_infcompute.data import PackedCollator, PretrainingData

# Tokens whose logits are reduced at once: 4,096 x the Llama 3 vocabulary is 2.1 GB of float32; an ensemble's
# K-curve holds about five such tensors at a time (a member's logits, the running sums of logits and of
# probabilities, and the log-softmax of each).
CHUNK_TOKENS = 4096
# Decimals kept in records: far below any difference a finding turns on, and a third of a float's JSON length.
STORED_DECIMALS = 6


def row_chunks(rows: int, seq_len: int, chunk_tokens: int = CHUNK_TOKENS) -> list[slice]:
    """Row ranges of a batch holding at most `chunk_tokens` tokens each (at least one row)."""
    step = max(1, chunk_tokens // max(1, seq_len))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def row_nll(log_probs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed NLL of each row's `targets` (-100 ignored) as float64, and each row's number of targets."""
    mask = targets != -100
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(picked * mask).sum(dim=-1, dtype=torch.float64), mask.sum(dim=-1)


@torch.no_grad()
def sequence_losses(
    model: PreTrainedModel,
    validation: datasets.Dataset,
    pad_token_id: int,
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    chunk_tokens: int = CHUNK_TOKENS,
    bf16: bool = False,
) -> list[float]:
    """The mean NLL of each row of `validation` (packed rows) under `model`, in row order: in the model's own dtype,
    or with `bf16` under bfloat16 autocast (the precision a bf16 run trains and evaluates in); the log-softmax and
    the sums are float32."""
    device = torch.device(device) if device is not None else model.device
    home, was_training = model.device, model.training
    model.to(device).eval()
    losses = []
    try:
        for batch in DataLoader(validation, batch_size=batch_size, collate_fn=PackedCollator(pad_token_id)):
            batch = {key: value.to(device) for key, value in batch.items()}
            targets = batch.pop("labels")[:, 1:]
            for rows in row_chunks(targets.shape[0], targets.shape[1], chunk_tokens):
                inputs = {key: value[rows] for key, value in batch.items()}
                with scoring_precision(device, bf16):
                    logits = model(**inputs, use_cache=False).logits[:, :-1]
                nll, count = row_nll(torch.log_softmax(logits.float(), dim=-1), targets[rows])
                losses.extend((nll / count.clamp(min=1)).tolist())
    finally:
        model.to(home).train(was_training)
    return rounded(losses)


def scoring_precision(device: torch.device, bf16: bool) -> torch.autocast:
    """bfloat16 autocast on `device` when `bf16`, else a no-op (the model's own dtype)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def held_out_losses(
    model: PreTrainedModel,
    data: PretrainingData,
    *,
    batch_size: int,
    device: str | torch.device | None,
    bf16: bool,
) -> tuple[list[float], list[float]]:
    """`sequence_losses` of `data`'s validation rows and of its test rows, scored alike."""
    validation, test = (
        sequence_losses(model, rows, data.tokenizer.pad_token_id, batch_size=batch_size, device=device, bf16=bf16)
        for rows in (data.validation, data.test)
    )
    return validation, test


def rounded(losses: list[float]) -> list[float]:
    """Per-row losses as records keep them."""
    return [round(loss, STORED_DECIMALS) for loss in losses]


def mean(losses: list[float]) -> float:
    return sum(losses) / len(losses)


def held_out_fields(data: PretrainingData, validation: list[float], test: list[float]) -> dict[str, Any]:
    """The record fields of a model's per-row `validation` and `test` losses on `data`'s held-out rows: the losses,
    the document of each row (same order) and the test split's mean; the run's `val_loss` is set by its caller.
    Validation is for choices (searches, member rules), test for reporting."""
    return {
        "val_sequence_losses": validation,
        "val_sequence_documents": data.validation_documents.tolist(),
        "test_loss": mean(test),
        "test_sequence_losses": test,
        "test_sequence_documents": data.test_documents.tolist(),
    }
