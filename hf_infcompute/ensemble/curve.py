"""The K-curve: validation loss of the ensemble of the first k members, for every k <= K, in one pass."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import PreTrainedModel

from hf_infcompute.data import PackedCollator

COMBINE_MODES = ("logits", "probs")


@dataclass(frozen=True)
class EnsembleCurve:
    """Per-token validation NLL: `ensemble[k-1]` of the first k members, `members[i]` of member i alone."""

    ensemble: list[float]
    members: list[float]


def combined_log_probs(running_sum: torch.Tensor, k: int, combine: str) -> torch.Tensor:
    """Log-probabilities of the ensemble of k members from the running sum of their logits or probabilities."""
    if combine == "logits":
        return F.log_softmax(running_sum / k, dim=-1)
    return torch.log(running_sum / k)


@torch.no_grad()
def ensemble_curve(
    members: Sequence[PreTrainedModel],
    validation: datasets.Dataset,
    pad_token_id: int,
    *,
    combine: str = "logits",
    batch_size: int = 16,
) -> EnsembleCurve:
    """Evaluate every prefix ensemble (k = 1..K) of `members` on `validation` (packed rows) in one pass.

    Each member runs once per batch; the prefix ensembles come from a running sum of member logits (or
    probabilities), so the whole curve costs K forward passes, not K(K+1)/2. Written by hand because no library
    evaluates nested ensembles; the full-K point equals `LogitEnsembleForCausalLM`'s loss.
    """
    if combine not in COMBINE_MODES:
        raise ValueError(f"combine must be one of {COMBINE_MODES}, got {combine!r}")
    k_total = len(members)
    ensemble_nll = torch.zeros(k_total, dtype=torch.float64)
    member_nll = torch.zeros(k_total, dtype=torch.float64)
    tokens = 0
    loader = DataLoader(validation, batch_size=batch_size, collate_fn=PackedCollator(pad_token_id))
    for batch in loader:
        targets = batch["labels"][:, 1:]
        mask = targets != -100
        running = None
        for i, member in enumerate(members):
            device = member.device
            inputs = {key: value.to(device) for key, value in batch.items() if key != "labels"}
            logits = member(**inputs).logits[:, :-1].float().cpu()
            log_probs = F.log_softmax(logits, dim=-1)
            piece = logits if combine == "logits" else log_probs.exp()
            running = piece if running is None else running + piece
            member_nll[i] += _nll(log_probs, targets, mask)
            ensemble_nll[i] += _nll(combined_log_probs(running, i + 1, combine), targets, mask)
        tokens += int(mask.sum())
    return EnsembleCurve(ensemble=(ensemble_nll / tokens).tolist(), members=(member_nll / tokens).tolist())


def _nll(log_probs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> float:
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return float(-(picked * mask).sum())
