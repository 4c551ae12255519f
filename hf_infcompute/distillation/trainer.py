"""`DistillationTrainer`: the `RegularizedTrainer` over a real + synthetic mix, or against a teacher's distributions."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from hf_infcompute.distillation.losses import chunked_distillation_loss, token_kd_loss
from hf_infcompute.distillation.mixing import MixedEpochSampler
from hf_infcompute.distillation.teacher_logits import TeacherChunkLogits
from hf_infcompute.training.trainer import RegularizedTrainer


class DistillationTrainer(RegularizedTrainer):
    """Trains a student on `train_dataset = concatenate(real, synthetic)` with `num_real` real rows first.

    Each batch holds `synthetic_fraction` synthetic rows (`MixedEpochSampler`). With a `teacher`, the loss is
    `(1 - kd_alpha) * cross-entropy + kd_alpha * KL(teacher || student)` at `kd_temperature` (token-level mode).
    """

    def __init__(
        self,
        *args: Any,
        num_real: int,
        synthetic_fraction: float,
        teacher: PreTrainedModel | None = None,
        kd_temperature: float = 1.0,
        kd_alpha: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.num_real, self.synthetic_fraction = num_real, synthetic_fraction
        self.teacher, self.kd_temperature, self.kd_alpha = teacher, kd_temperature, kd_alpha
        if teacher is not None:
            self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
            # The token-level loss is a per-batch mean, so the Trainer must scale it for gradient accumulation.
            self.model_accepts_loss_kwargs = False

    def _get_train_sampler(self, train_dataset: Any = None) -> MixedEpochSampler:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return MixedEpochSampler(
            num_real=self.num_real,
            num_synthetic=len(dataset) - self.num_real,
            batch_size=self.args.per_device_train_batch_size,
            synthetic_fraction=self.synthetic_fraction,
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
        if self.args.loss_implementation != "full":
            teacher_logits = TeacherChunkLogits(self.teacher, inputs["input_ids"], inputs.get("attention_mask"))
            head_loss = partial(
                chunked_distillation_loss, teacher_logits=teacher_logits, labels=inputs["labels"], alpha=self.kd_alpha,
                temperature=self.kd_temperature, chunk_tokens=self.args.loss_chunk_tokens,
            )
            outputs = model(**inputs, head_loss=head_loss)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        outputs = model(**inputs)
        with torch.no_grad():
            teacher_logits = self.teacher(
                input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")
            ).logits
        kd = token_kd_loss(
            outputs.logits[:, :-1], teacher_logits[:, :-1], inputs["labels"][:, 1:], temperature=self.kd_temperature
        )
        loss = (1 - self.kd_alpha) * outputs.loss + self.kd_alpha * kd
        return (loss, outputs) if return_outputs else loss
