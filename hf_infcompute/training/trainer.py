"""`RegularizedTrainer`: the `Trainer` with the paper's weight-decay grouping, per-epoch shuffles and a NaN guard."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from hf_infcompute.errors import InputError, NonFiniteLossError
from hf_infcompute.training.arguments import WEIGHT_DECAY_MASKS
from hf_infcompute.training.checkpoints import last_good_checkpoint
from hf_infcompute.training.sampler import EpochShuffleSampler

# Module class names whose parameters are never decayed under the "levanter" rule: Levanter's default mask
# (`OptimizerConfig.build_weight_decay_mask`, `reasonable_default`) exempts paths naming these, and biases.
EXEMPT_MODULES = ("Embedding", "LayerNorm", "RMSNorm", "RmsNorm")


def decay_parameter_names(model: nn.Module, mask: str = "levanter") -> list[str]:
    """Parameters that weight decay applies to, by the rule `mask`.

    "levanter" (the default, as the paper's runs): every parameter except those of embedding and normalization
    modules and biases, so the input token embedding is not decayed and the untied output head (a `Linear`) is;
    this is Levanter's default mask, which the authors' `experiments/data_efficiency/train.py` keeps (it sets no
    `weight_decay_modules`). A tied input embedding is also the output head and is decayed (the paper's models are
    untied; Levanter would exempt a tied one by its module's name). "matrices": every matrix (ndim >= 2), input
    embedding and output head included, norm gains and biases exempt (nanoGPT's rule). Under DeepSpeed ZeRO-3 a
    partitioned parameter's local tensor is empty and `ds_shape` holds its shape, which "matrices" reads.
    """
    if mask not in WEIGHT_DECAY_MASKS:
        raise InputError(f"`weight_decay_mask` must be one of {list(WEIGHT_DECAY_MASKS)}, got {mask!r}")
    if mask == "matrices":
        return [name for name, param in model.named_parameters() if len(getattr(param, "ds_shape", param.shape)) >= 2]
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_weight = getattr(head, "weight", None)
    exempt = set()
    for prefix, module in model.named_modules():
        if any(word in type(module).__name__ for word in EXEMPT_MODULES):
            exempt |= {
                f"{prefix}.{name}" if prefix else name
                for name, param in module.named_parameters()
                if param is not head_weight  # a tied embedding is also the output head, which is decayed
            }
    return [
        name
        for name, _ in model.named_parameters()
        if name not in exempt and not name.endswith("bias") and not any(word in name for word in EXEMPT_MODULES[1:])
    ]


class RegularizedTrainer(Trainer):
    """Trains on packed sequences for E epochs with a fresh seeded shuffle per epoch.

    Differences from `Trainer`: weight decay by `args.weight_decay_mask` (`decay_parameter_names`), the epoch
    sampler of `EpochShuffleSampler` seeded by `args.data_seed` (a fresh order each epoch, or one order for all by
    `args.data_order`), and training stops with `NonFiniteLossError` at the first NaN/inf loss or gradient norm,
    before the optimizer applies that step, so weights, optimizer state and checkpoints stay finite; the error names
    the newest whole checkpoint with finite weights.
    """

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        return decay_parameter_names(model, self.args.weight_decay_mask)

    def _build_accelerator_args(self, **kwargs: Any) -> dict[str, Any]:
        # `torch_compile` compiles by regions (the repeated decoder blocks, then each other leaf module; accelerate's
        # regional compilation), not the whole model: accelerate wraps every run's forward in a new autocast wrapper
        # whose identity dynamo guards, so a whole-model compile traces again in every run of a study's process
        # (3-8 s on 2 CPU cores, more than a short run gains), while the regions' compiled code serves the next run.
        args = super()._build_accelerator_args(**kwargs)
        if self.args.torch_compile and "dynamo_plugin" in args:
            args["dynamo_plugin"].use_regional_compilation = True
        return args

    def _get_train_sampler(self, train_dataset: Any = None) -> EpochShuffleSampler:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        reshuffle = self.args.data_order == "reshuffle"
        return EpochShuffleSampler(len(dataset), seed=self.args.data_seed, reshuffle=reshuffle)

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss):
            self._stop_non_finite(f"non-finite training loss ({loss.item()})")
        return loss

    def _get_grad_norm(self, model: nn.Module, grad_norm: torch.Tensor | float | None = None) -> Any:
        # transformers 5.24 calls this after clipping and gradient accumulation and right before
        # `optimizer.step()` (no callback sees the norm there): a non-finite norm, which a finite loss can have,
        # would turn the weights and Adam moments into NaN. Reading it costs one device sync per optimizer step.
        # With fp16 loss scaling an inf norm is routine: the scaler skips that step itself.
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if grad_norm is not None and self.accelerator.scaler is None and not math.isfinite(float(grad_norm)):
            self._stop_non_finite(f"non-finite gradient norm ({float(grad_norm)}); the step was not applied")
        return grad_norm

    def _stop_non_finite(self, what: str) -> None:
        step = self.state.global_step + 1
        checkpoint = last_good_checkpoint(self.args.output_dir) if self.args.output_dir else None
        raise NonFiniteLossError(
            f"{what} at step {step}; the last good checkpoint is "
            f"{checkpoint or 'none (no checkpoint was saved yet)'}. Lower the learning rate or check the data."
        )
