"""Make a causal LM compute its training loss without all its logits: a forward with the loss inside, per instance.

The loss has to be computed inside the model's own call, so that DDP, FSDP2 and DeepSpeed (whose hooks wrap
`module.__call__`) see every use of the parameters; a trainer reading `model.lm_head.weight` itself would read a
sharded weight under FSDP2. Liger patches the forward of the architectures it knows; `install_loss_forward` does the
same for any `*ForCausalLM` whose forward is a decoder followed by a linear head, Llama-style presets and checkpoints
alike, also under a peft (LoRA) wrapper, whose forward calls the base model's.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from types import MethodType
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from hf_infcompute.errors import InputError
from hf_infcompute.planning.memory import resolve_loss_implementation
from hf_infcompute.training.losses import chunked_causal_lm_loss, shifted_targets

# Config fields of architectures whose forward does more to the logits than the linear head (Gemma's soft-capping,
# Cohere's and Granite's scaling): a loss on the bare head would differ from theirs.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")

# A loss on the decoder's last hidden states ([batch, seq, hidden]), given the head's weight and bias.
HeadLoss = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def unwrap_adapters(model: nn.Module) -> nn.Module:
    """The causal LM inside a peft wrapper (the model itself when it has none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_and_head(model: nn.Module) -> tuple[nn.Module, nn.Linear]:
    """The decoder (last hidden states) and the linear LM head of a causal LM; `InputError` if it has no such split."""
    model = unwrap_adapters(model)
    name = type(model).__name__
    get_decoder = getattr(model, "get_decoder", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    # Regional compilation (accelerate's `compile_regions`, the Trainer's `torch_compile`) wraps the head in an
    # `OptimizedModule`; the chunked loss reads only its weight and bias, the same parameters.
    head = getattr(head, "_orig_mod", head)
    if get_decoder is None or not isinstance(head, nn.Linear):
        raise InputError(
            f"{name} has no decoder and linear LM head (`get_decoder()`, `get_output_embeddings()`) to compute the "
            "loss chunk by chunk on; set loss_implementation=full"
        )
    config = getattr(model, "config", None)
    transforms = [key for key in LOGIT_TRANSFORMS if getattr(config, key, None) not in (None, 1, 1.0)]
    if transforms:
        raise InputError(
            f"{name} transforms its logits beyond the linear head ({', '.join(transforms)}), which the chunked loss "
            "does not reproduce; set loss_implementation=full"
        )
    decoder = get_decoder()
    if decoder is model:
        raise InputError(f"{name} has no separate decoder module to run before its head; set loss_implementation=full")
    return decoder, head


def liger_head_loss(
    labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None, shift_labels: torch.Tensor | None = None
) -> HeadLoss:
    """The causal-LM cross-entropy by Liger's fused linear cross-entropy (Triton, GPU only)."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    def loss(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        targets = shifted_targets(labels, shift_labels).to(hidden.device)
        reduction = "mean" if num_items_in_batch is None else "sum"
        total = LigerFusedLinearCrossEntropyLoss(reduction=reduction)(
            weight, hidden.reshape(-1, hidden.shape[-1]), targets, bias
        )
        if num_items_in_batch is None:
            return total
        count = num_items_in_batch
        return total / (count.to(total.device) if torch.is_tensor(count) else count)

    return loss


def _forward_with_loss(
    self: PreTrainedModel,
    input_ids: torch.LongTensor | None = None,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.LongTensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    labels: torch.LongTensor | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
    logits_to_keep: int | torch.Tensor = 0,
    head_loss: HeadLoss | None = None,
    **kwargs: Any,
) -> CausalLMOutputWithPast | tuple:
    """The model's forward, except that with `labels` (or a `head_loss`) the loss is computed from the decoder's hidden
    states by `self.loss_implementation` and no logits are returned. `head_loss(hidden, weight, bias)` replaces the
    cross-entropy (distillation passes its loss so). Without either it is the model's own forward."""
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "inputs_embeds": inputs_embeds,
    }
    if (labels is None and head_loss is None) or not (isinstance(logits_to_keep, int) and logits_to_keep == 0):
        if num_items_in_batch is not None:
            kwargs["num_items_in_batch"] = num_items_in_batch
        return type(self).forward(self, **inputs, labels=labels, logits_to_keep=logits_to_keep, **kwargs)
    return_dict = kwargs.pop("return_dict", None)
    shift_labels = kwargs.pop("shift_labels", None)
    kwargs.setdefault("use_cache", False)
    decoder, head = decoder_and_head(self)
    outputs = decoder(**inputs, **kwargs)
    hidden = outputs.last_hidden_state
    if head_loss is None:
        if self.loss_implementation == "liger":
            head_loss = liger_head_loss(labels, num_items_in_batch, shift_labels)
        else:

            def head_loss(hidden, weight, bias):
                return chunked_causal_lm_loss(
                    hidden,
                    weight,
                    labels,
                    bias=bias,
                    num_items_in_batch=num_items_in_batch,
                    shift_labels=shift_labels,
                    chunk_tokens=self.loss_chunk_tokens,
                )

    output = CausalLMOutputWithPast(
        loss=head_loss(hidden, head.weight, head.bias),
        logits=None,
        hidden_states=outputs.hidden_states,
        attentions=outputs.attentions,
    )
    return output.to_tuple() if return_dict is False else output


def install_loss_forward(model: nn.Module, implementation: str, chunk_tokens: int, *, tokens_per_step: int = 0) -> None:
    """Have `model(..., labels=...)` compute its loss by `implementation` ('auto', 'chunked', 'full' or 'liger';
    'auto' decides by the logits of `tokens_per_step` tokens, see `resolve_loss_implementation`).

    `full` leaves the model as it is (logits, then the cross-entropy of transformers). `chunked` and `liger` replace
    the forward of this instance (of the causal LM inside a peft wrapper): with labels it runs the decoder and then
    the head and loss chunk by chunk (`chunked_causal_lm_loss`) or fused (Liger), returning `logits=None`; without
    labels it is the model's own forward, so generation and saving are unchanged.
    """
    vocab_size = getattr(getattr(unwrap_adapters(model), "config", None), "vocab_size", 0) or 0
    implementation = resolve_loss_implementation(implementation, tokens_per_step, vocab_size)
    if chunk_tokens < 1:
        raise InputError(f"`loss_chunk_tokens` must be >= 1, got {chunk_tokens}")
    if implementation == "full":
        return
    if implementation == "liger" and (
        importlib.util.find_spec("liger_kernel") is None or not torch.cuda.is_available()
    ):
        raise InputError(
            "loss_implementation=liger needs liger-kernel (`pip install liger-kernel`) and a CUDA GPU (its kernels are "
            "Triton); install it on a GPU machine or set loss_implementation=chunked, which runs anywhere"
        )
    target = unwrap_adapters(model)
    decoder_and_head(target)
    target.loss_implementation, target.loss_chunk_tokens = implementation, chunk_tokens
    # Bound to the instance, so that a deep copy of the model runs its own decoder and head.
    target.forward = MethodType(_forward_with_loss, target)


def computes_loss_in_chunks(model: nn.Module) -> bool:
    """Whether `install_loss_forward` gave `model` (or the causal LM inside its peft wrapper) a chunked loss."""
    return getattr(unwrap_adapters(model), "loss_implementation", "full") != "full"
