"""Model soup: the uniform average of K members' weights, the paper's alternative to averaging their logits."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence

import torch
from transformers import PreTrainedModel

from hf_infcompute.ensemble.build import members_as_input
from hf_infcompute.ensemble.modeling_logit_ensemble import LogitEnsembleForCausalLM
from hf_infcompute.errors import InputError

# Settings that may differ between members without changing what the averaged weights mean.
IGNORED_CONFIG_KEYS = {"_name_or_path", "transformers_version", "dtype", "architectures"}


def check_same_architecture(models: Sequence[PreTrainedModel]) -> None:
    """Refuse members whose class, settings or parameter shapes differ from the first member's."""
    first = models[0]
    first_settings = {k: v for k, v in first.config.to_dict().items() if k not in IGNORED_CONFIG_KEYS}
    first_shapes = {name: tensor.shape for name, tensor in first.state_dict().items()}
    for index, model in enumerate(models[1:], start=1):
        if type(model) is not type(first):
            raise InputError(
                f"member {index} is a {type(model).__name__} but member 0 a {type(first).__name__}: "
                "weights can only be averaged across one architecture (a logit ensemble can mix architectures)"
            )
        settings = {k: v for k, v in model.config.to_dict().items() if k not in IGNORED_CONFIG_KEYS}
        keys = first_settings.keys() | settings.keys()
        differing = sorted(key for key in keys if first_settings.get(key) != settings.get(key))
        if differing:
            raise InputError(
                f"member {index}'s config differs from member 0's in {differing}: "
                "weights can only be averaged across members of one architecture and configuration"
            )
        shapes = {name: tensor.shape for name, tensor in model.state_dict().items()}
        if shapes != first_shapes:
            raise InputError(f"member {index}'s parameter shapes differ from member 0's: weights cannot be averaged")


def averaged_state_dict(models: Sequence[PreTrainedModel]) -> dict[str, torch.Tensor]:
    """The mean of the members' floating-point tensors (in float32, cast back); other tensors from member 0."""
    states = [model.state_dict() for model in models]
    averaged = {}
    for name, reference in states[0].items():
        if reference.is_floating_point():
            total = torch.zeros_like(reference, dtype=torch.float32)
            for state in states:
                total += state[name].float()
            averaged[name] = (total / len(states)).to(reference.dtype)
        else:
            averaged[name] = reference.clone()
    return averaged


@torch.no_grad()
def average_weights(
    members: Iterable[str | os.PathLike | PreTrainedModel], output_dir: str | os.PathLike | None = None
) -> PreTrainedModel:
    """A model whose weights are the uniform average of the members' ("model soup").

    members: model folders, hub ids or models in memory, all of one architecture and configuration.
    output_dir: if given, the soup is saved there as an ordinary checkpoint, with the members' tokenizer if they
        have one.
    """
    with members_as_input():
        loaded = LogitEnsembleForCausalLM.from_members(members)  # loads and checks vocab, tokenizer, context
    models = list(loaded.members)
    check_same_architecture(models)
    soup = copy.deepcopy(models[0])
    soup.load_state_dict(averaged_state_dict(models))
    if output_dir is not None:
        soup.save_pretrained(output_dir)
        if loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(output_dir)
    return soup
