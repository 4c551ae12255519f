"""`DistillationTrainer`: the `RegularizedTrainer` over a real + synthetic mix, or against a teacher's distributions."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from hf_infcompute.distillation.arguments import DistillationTrainingArguments
from hf_infcompute.distillation.losses import chunked_distillation_loss, token_kd_loss
from hf_infcompute.distillation.mixing import MixedEpochSampler
from hf_infcompute.distillation.teacher_logits import TeacherChunkLogits
from hf_infcompute.training.loss_forward import computes_loss_in_chunks
from hf_infcompute.training.trainer import RegularizedTrainer


class DistillationTrainer(RegularizedTrainer):
    """Trains a student on `train_dataset = concatenate(real, synthetic)` with `num_real` real rows first.

    Its settings come from `args` (`DistillationTrainingArguments`): each batch holds `args.synthetic_fraction`
    synthetic rows (`MixedEpochSampler`; real rows only when the dataset has none). With a `teacher`, the loss is
    `(1 - kd_alpha) * cross-entropy + kd_alpha * KL(teacher || student)` at `kd_temperature` (token-level mode).
    """

    args: DistillationTrainingArguments

    def __init__(self, *args: Any, num_real: int, teacher: PreTrainedModel | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, DistillationTrainingArguments):
            raise TypeError(f"DistillationTrainer needs DistillationTrainingArguments, got {type(self.args).__name__}")
        self.num_real, self.teacher = num_real, teacher
        if teacher is not None:
            self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
            # The token-level loss is a per-batch mean, so the Trainer must scale it for gradient accumulation.
            self.model_accepts_loss_kwargs = False

    def _get_train_sampler(self, train_dataset: Any = None) -> MixedEpochSampler:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        num_synthetic = len(dataset) - self.num_real
        return MixedEpochSampler(
            num_real=self.num_real,
            num_synthetic=num_synthetic,
            batch_size=self.args.per_device_train_batch_size,
            synthetic_fraction=self.args.synthetic_fraction if num_synthetic else 0.0,
            seed=self.args.data_seed,
        )

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        if self.teacher is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if computes_loss_in_chunks(self.model):
            teacher_logits = TeacherChunkLogits(self.teacher, inputs["input_ids"], inputs.get("attention_mask"))
            head_loss = partial(
                chunked_distillation_loss,
                teacher_logits=teacher_logits,
                labels=inputs["labels"],
                alpha=self.args.kd_alpha,
                temperature=self.args.kd_temperature,
                chunk_tokens=self.args.loss_chunk_tokens,
            )
            outputs = model(**inputs, head_loss=head_loss)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        outputs = model(**inputs)
        with torch.no_grad():
            teacher_logits = self.teacher(
                input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")
            ).logits
        kd = token_kd_loss(
            outputs.logits[:, :-1],
            teacher_logits[:, :-1],
            inputs["labels"][:, 1:],
            temperature=self.args.kd_temperature,
        )
        loss = (1 - self.args.kd_alpha) * outputs.loss + self.args.kd_alpha * kd
        return (loss, outputs) if return_outputs else loss
