"""A saved `LogitEnsembleForCausalLM` as an out-of-tree vLLM model: the `logit_average` ensemble mode.

vLLM serves one model per engine and has no ensembling of its own, so the ensemble is one vLLM model holding K Llama
members. Each member is built with its own prefix (`members.{i}`), so it owns its attention layers and KV cache;
`forward` runs every member and returns their hidden states side by side, and `compute_logits` combines the members'
logits as the ensemble does (mean of logits, or log of the mean probability). The sampler therefore draws from the
true ensemble distribution, as the transformers backend does.

vLLM binds one KV cache per attention layer by the one integer in the layer's name (`extract_layer_index` in
vllm/model_executor/models/utils.py, called by `bind_kv_cache` in vllm/v1/worker/utils.py and by `LlamaAttention`),
so the members' decoder layers are named `layers.{n}` with one index `n` running over all members' layers
(`ensemble_layer_prefix`), not `members.{i}.model.layers.{j}`; and vLLM lists a class as a model only if it has
`embed_input_ids` (`is_vllm_model` in vllm/model_executor/models/interfaces_base.py).

Registered with vLLM through the `vllm.general_plugins` entry point (`register`, in pyproject.toml), which every vLLM
process loads. vLLM is imported only inside the model class and `register`: this module imports without it, and its
pure pieces (weight routing, logit combination, engine overrides) are tested on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from hf_infcompute.errors import InputError

ARCHITECTURE = "LogitEnsembleForCausalLM"  # the `architectures` entry `save_pretrained` writes for an ensemble
MEMBER_ARCHITECTURE = "LlamaForCausalLM"
MEMBER_PREFIX = "members."
SHAPE_KEYS = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim")


def register() -> None:
    """The `vllm.general_plugins` entry point: make the ensemble's architecture known to vLLM's model registry."""
    from vllm import ModelRegistry

    import hf_infcompute.ensemble  # noqa: F401  (registers the ensemble's config with AutoConfig)

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, f"{__name__}:VLLMLogitEnsemble")


def member_shape(member: dict[str, Any]) -> dict[str, int]:
    """A member's attention shape (KV heads and head size filled in as Llama defaults them)."""
    heads = member["num_attention_heads"]
    return {
        "hidden_size": member["hidden_size"],
        "num_attention_heads": heads,
        "num_key_value_heads": member.get("num_key_value_heads") or heads,
        "head_dim": member.get("head_dim") or member["hidden_size"] // heads,
    }


def check_members(member_configs: list[dict[str, Any]], name: str) -> None:
    """Refuse ensembles vLLM's `logit_average` model cannot hold: members must be Llamas of one attention shape."""
    for index, member in enumerate(member_configs):
        if member.get("model_type") != "llama":
            raise InputError(
                f"{name}: member {index} is a {member.get('model_type')!r} model, but vLLM's logit_average ensemble "
                "builds Llama members only: use `ensemble_mode: pooled` (each member sampled on its own) or "
                "`--backend transformers`"
            )
        if member_shape(member) != member_shape(member_configs[0]):
            raise InputError(
                f"{name}: member {index}'s attention shape {member_shape(member)} differs from member 0's "
                f"{member_shape(member_configs[0])}; vLLM's logit_average ensemble needs one shape: use "
                "`--backend transformers`"
            )


def engine_overrides(config: dict[str, Any]) -> dict[str, Any]:
    """`hf_overrides` for the engine: the shape vLLM reads from the top-level config, which an ensemble lacks.

    The attention shape is the members' (one shape, see `check_members`); the layers are all members' layers (each
    has its own KV cache); the hidden size is the width of what `forward` returns, K members side by side.
    """
    members = config["member_configs"]
    shape = member_shape(members[0])
    return {
        **shape,
        "hidden_size": len(members) * shape["hidden_size"],
        "num_hidden_layers": sum(member["num_hidden_layers"] for member in members),
        "architectures": [ARCHITECTURE],
    }


def ensemble_layer_prefix(layer_prefix: str, first_layer: int, root: str = "") -> str:
    """The name under which a member's decoder layer registers with vLLM: `{root}layers.{first_layer + j}` for the
    `...layers.{j}` prefix vLLM's `LlamaModel` gives layer j of a member whose layers start at `first_layer` in the
    ensemble, so that each attention layer's name holds exactly one integer, unique across the members."""
    return f"{root}layers.{first_layer + int(layer_prefix.rpartition('.')[2])}"


def member_layer_type(layer_class: Any, first_layer: int, root: str = "") -> Any:
    """The `layer_type` to give vLLM's `LlamaForCausalLM` for one member: its decoder layers built under
    `ensemble_layer_prefix` names."""

    def build(*, vllm_config: Any, prefix: str, **kwargs: Any) -> nn.Module:
        return layer_class(vllm_config=vllm_config, prefix=ensemble_layer_prefix(prefix, first_layer, root), **kwargs)

    return build


def route_weights(
    weights: Iterable[tuple[str, torch.Tensor]], num_members: int
) -> list[list[tuple[str, torch.Tensor]]]:
    """Checkpoint weights split per member, `members.{i}.` stripped; any other name is an error."""
    routed: list[list[tuple[str, torch.Tensor]]] = [[] for _ in range(num_members)]
    for name, tensor in weights:
        index, _, rest = name.removeprefix(MEMBER_PREFIX).partition(".")
        if not name.startswith(MEMBER_PREFIX) or not index.isdigit() or int(index) >= num_members or not rest:
            raise ValueError(f"weight {name!r} belongs to no member of this {num_members}-member ensemble")
        routed[int(index)].append((rest, tensor))
    return routed


def combine_logits(member_logits: list[torch.Tensor], combine: str) -> torch.Tensor:
    """The ensemble's logits from its members': their mean (`logits`), or the log of their mean probability."""
    stacked = torch.stack([logits.float() for logits in member_logits])
    if combine == "logits":
        return stacked.mean(0)
    return torch.logsumexp(torch.log_softmax(stacked, dim=-1), dim=0) - math.log(len(member_logits))


class VLLMLogitEnsemble(nn.Module):
    """vLLM model of a saved logit ensemble: K Llama members with their own KV caches, logits combined."""

    def __init__(self, *, vllm_config: Any, prefix: str = "") -> None:
        super().__init__()
        from transformers import LlamaConfig
        from vllm.model_executor.models.llama import LlamaDecoderLayer, LlamaForCausalLM

        config = vllm_config.model_config.hf_config
        self.combine = config.combine
        member_configs = [dict(member) for member in config.member_configs]
        check_members(member_configs, "the ensemble")
        self.hidden_size = member_shape(member_configs[0])["hidden_size"]
        members, first_layer, root = [], 0, f"{prefix}." if prefix else ""
        for index, member in enumerate(member_configs):
            settings = {key: value for key, value in member.items() if key != "model_type"}
            member_vllm_config = vllm_config.with_hf_config(
                LlamaConfig(**settings), architectures=[MEMBER_ARCHITECTURE]
            )
            layer_type = member_layer_type(LlamaDecoderLayer, first_layer, root)
            members.append(
                LlamaForCausalLM(vllm_config=member_vllm_config, prefix=f"{root}members.{index}", layer_type=layer_type)
            )
            first_layer += member["num_hidden_layers"]
        self.members = nn.ModuleList(members)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Each member's token embeddings side by side: (tokens, K x hidden), split again by `forward`."""
        return torch.cat([member.embed_input_ids(input_ids) for member in self.members], dim=-1)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        intermediate_tensors: Any = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The members' final hidden states side by side: (tokens, K x hidden), from token ids or from the
        embeddings `embed_input_ids` returns."""
        if intermediate_tensors is not None:
            raise ValueError("the vLLM logit ensemble runs without pipeline parallelism")
        if inputs_embeds is None:
            return torch.cat([member(input_ids, positions) for member in self.members], dim=-1)
        parts = inputs_embeds.split(self.hidden_size, dim=-1)
        return torch.cat(
            [member(None, positions, inputs_embeds=part) for member, part in zip(self.members, parts)], dim=-1
        )

    def compute_logits(self, hidden_states: torch.Tensor, *args: Any) -> torch.Tensor:
        """Each member's logits from its slice of `hidden_states`, combined as the ensemble's config says."""
        parts = hidden_states.split(self.hidden_size, dim=-1)
        member_logits = [member.compute_logits(part, *args) for member, part in zip(self.members, parts)]
        return combine_logits(member_logits, self.combine)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Route `members.{i}.` weights to member i; returns the loaded names in this model's namespace."""
        loaded = set()
        for index, member_weights in enumerate(route_weights(weights, len(self.members))):
            loaded |= {f"{MEMBER_PREFIX}{index}.{name}" for name in self.members[index].load_weights(member_weights)}
        return loaded
