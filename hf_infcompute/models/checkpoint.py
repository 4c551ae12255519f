"""Existing checkpoints for continued pre-training: load a causal LM, optionally wrapped with LoRA (peft)."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from hf_infcompute.errors import InputError
from hf_infcompute.readers import REEXPORT, check_model_folder

BASE_MODEL_FIX = f"{REEXPORT} (`save_pretrained`), or give another `base_model`"


def load_base_config(name_or_path: str) -> PretrainedConfig:
    check_model_folder(name_or_path, fix=BASE_MODEL_FIX)
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot load base model {name_or_path!r}: {error}; give a model folder or hub id") from error


def context_length(config: PretrainedConfig) -> int | None:
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def load_base_model(
    name_or_path: str,
    *,
    lora_r: int = 0,
    lora_alpha: int = 32,
    lora_dropout: float = 0.0,
    attn_implementation: str = "sdpa",
) -> PreTrainedModel:
    """The base causal LM in fp32 (the Trainer adds bf16 autocast), with LoRA adapters on every linear layer if
    `lora_r > 0`."""
    config = load_base_config(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype="float32", attn_implementation=attn_implementation
        )
    except ValueError as error:
        raise InputError(
            f"base model {name_or_path!r} ({config.model_type}) is not a causal language model: {error}"
        ) from error
    if lora_r:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            task_type="CAUSAL_LM",
            r=lora_r,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            target_modules="all-linear",
        )
        model = get_peft_model(model, lora)
    return model


def has_adapters(model: PreTrainedModel) -> bool:
    """True for a peft model (LoRA adapters around a base model)."""
    return hasattr(model, "merge_and_unload")


def merged(model: PreTrainedModel) -> PreTrainedModel:
    """A plain model: LoRA adapters merged into the weights (a model without adapters is returned as is)."""
    return model.merge_and_unload() if has_adapters(model) else model


def merged_from_state_dict(model: PreTrainedModel, state_dict: dict[str, torch.Tensor]) -> PreTrainedModel:
    """A plain model from the full state dict of LoRA `model` (as sharded training gathers it): an unsharded copy of
    `model` is built without memory of its own, takes the state dict's tensors and `model`'s buffers outside the
    state dict (rotary frequencies, never sharded), and has its adapters merged."""
    from peft import get_peft_model

    base_config = model.get_base_model().config
    with torch.device("meta"):
        copy = get_peft_model(AutoModelForCausalLM.from_config(base_config), model.peft_config[model.active_adapter])
    copy.load_state_dict(state_dict, assign=True)
    for name, buffer in list(copy.named_buffers()):
        if buffer.is_meta:
            owner, _, attribute = name.rpartition(".")
            copy.get_submodule(owner).register_buffer(
                attribute, model.get_buffer(name).detach().to("cpu", copy=True), persistent=False
            )
    copy.tie_weights()
    return merged(copy)
