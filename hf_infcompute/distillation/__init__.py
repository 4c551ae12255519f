"""Distillation: train a student on a teacher's samples mixed with real data, or on its per-token distributions."""

from hf_infcompute.distillation.arguments import DistillationTrainingArguments
from hf_infcompute.distillation.losses import mixed_batch_counts, token_kd_loss
from hf_infcompute.distillation.mixing import MixedEpochSampler
from hf_infcompute.distillation.student import distill
from hf_infcompute.distillation.trainer import DistillationTrainer

__all__ = [
    "DistillationTrainer",
    "DistillationTrainingArguments",
    "MixedEpochSampler",
    "distill",
    "mixed_batch_counts",
    "token_kd_loss",
]
