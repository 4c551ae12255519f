"""Configuration of a logit ensemble: K causal language models that share a vocabulary.

This file is self-contained (transformers only), so that a saved ensemble loads with `trust_remote_code=True`
where the package that wrote it is not installed. No `from __future__ import annotations` here: `@strict` validates
the fields against their annotations, which must stay real types rather than strings.
"""

from typing import Any, Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig


class EnsembleMemberError(ValueError):
    """Members that cannot form one ensemble; the message names the member and what differs."""


def member_config_dict(config: PreTrainedConfig | dict[str, Any], index: int) -> dict[str, Any]:
    """A member's configuration as a plain dict that names its `model_type`."""
    if isinstance(config, PreTrainedConfig):
        config = config.to_dict()
    if not isinstance(config, dict):
        raise EnsembleMemberError(f"member {index}: expected a config or a dict, got {type(config).__name__}")
    config = {key: value for key, value in config.items() if key != "transformers_version"}
    if not config.get("model_type"):
        raise EnsembleMemberError(f"member {index}: its config has no `model_type`; save it with `save_pretrained`")
    return config


def build_member_config(config: dict[str, Any]) -> PreTrainedConfig:
    settings = dict(config)
    return AutoConfig.for_model(settings.pop("model_type"), **settings)


def check_members_agree(configs: list[PreTrainedConfig], names: list[str]) -> None:
    """Refuse members whose vocabulary size or context length differs from the first member's."""
    text_configs = [config.get_text_config(decoder=True) for config in configs]
    first = text_configs[0]
    for attribute, what in (("vocab_size", "vocabulary size"), ("max_position_embeddings", "context length")):
        expected = getattr(first, attribute, None)
        for config, name in zip(text_configs[1:], names[1:]):
            value = getattr(config, attribute, None)
            if value != expected:
                raise EnsembleMemberError(
                    f"member {name} has {what} ({attribute}) {value}, but member {names[0]} has {expected}: "
                    "ensemble members must share one tokenizer and one context length"
                )


@strict
class LogitEnsembleConfig(PreTrainedConfig):
    r"""
    member_configs (`list[dict]`):
        One configuration per member (each with its own `model_type`); members may be any causal LM architecture
        but must share a vocabulary and a context length.
    combine (`str`, *optional*, defaults to `"logits"`):
        `"logits"`: the ensemble's logits are the mean of the members' pre-softmax logits. `"probs"`: the ensemble
        predicts the mean of the members' probabilities, and its `logits` are the log of that mean (so softmax and
        cross-entropy downstream still apply).

    `vocab_size`, `max_position_embeddings` and the special token ids are taken from the members, so tools that read
    them from the config (generation, lm-evaluation-harness) work unchanged.
    """

    model_type = "logit_ensemble"
    keys_to_ignore_at_inference = ["cache", "past_key_values"]

    member_configs: list[dict | PreTrainedConfig] | None = None
    combine: Literal["logits", "probs"] = "logits"
    vocab_size: int | None = None
    max_position_embeddings: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False  # the ensemble owns no embeddings; members tie their own
    use_cache: bool = True

    def __post_init__(self, **kwargs):
        self.member_configs = [member_config_dict(config, i) for i, config in enumerate(self.member_configs or [])]
        if self.member_configs:
            members = self.build_member_configs()
            check_members_agree(members, [str(i) for i in range(len(members))])
            first = members[0].get_text_config(decoder=True)
            for attribute in ("vocab_size", "max_position_embeddings"):
                value = getattr(first, attribute, None)
                if getattr(self, attribute) not in (None, value):
                    raise EnsembleMemberError(
                        f"{attribute}={getattr(self, attribute)} contradicts the members' {attribute} {value}; "
                        "leave it unset (it is read from the members)"
                    )
                setattr(self, attribute, value)
            for attribute in ("bos_token_id", "eos_token_id", "pad_token_id"):
                if getattr(self, attribute) is None:
                    setattr(self, attribute, getattr(first, attribute, None))
        super().__post_init__(**kwargs)

    @property
    def num_members(self) -> int:
        return len(self.member_configs)

    def build_member_configs(self) -> list[PreTrainedConfig]:
        """The members' configurations as `PreTrainedConfig` objects of their own architectures."""
        return [build_member_config(config) for config in self.member_configs]


__all__ = ["EnsembleMemberError", "LogitEnsembleConfig"]
