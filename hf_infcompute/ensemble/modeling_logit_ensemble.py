"""A logit ensemble as a Hugging Face causal LM: K members whose predictions are averaged at every position.

`combine="logits"` averages the members' pre-softmax logits (the ensemble of "Pre-training under infinite compute");
`combine="probs"` averages their probabilities. Either way the output is an ordinary `CausalLMOutputWithPast`, so
`generate`, lm-evaluation-harness and a Trainer use the ensemble like any single model.

This file is self-contained (torch and transformers only), so that a saved ensemble loads with
`trust_remote_code=True` where the package that wrote it is not installed.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from .configuration_logit_ensemble import EnsembleMemberError, LogitEnsembleConfig, check_members_agree

WEIGHTS_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# A trained model's folder holds this marker while it is still being written.
INCOMPLETE_MARKER = "training_incomplete"
HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
# transformers 5.24 renamed the cache argument and output field `past_key_values` to `cache`.
OUTPUT_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class EnsembleCache(Cache):
    """One KV cache per member, carried by `generate` between steps as a single cache.

    Each member fills its own cache (created by the member on its first cached call); this holder only routes them and
    answers the questions `generate` asks of a cache.
    """

    is_compileable = False

    def __init__(self, num_members: int):
        # No `Cache.__init__`: this holder has no layers of its own, only the members' caches.
        self.caches: list[Cache | None] = [None] * num_members

    def __repr__(self) -> str:
        return f"{type(self).__name__}(caches={self.caches})"

    def __len__(self) -> int:
        return len(self.caches)

    def _filled(self) -> list[Cache]:
        return [cache for cache in self.caches if cache is not None]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        filled = self._filled()
        return filled[0].get_seq_length(layer_idx) if filled else 0

    @property
    def is_croppable(self) -> bool:
        return all(cache.is_croppable for cache in self._filled())

    def reset(self) -> None:
        for cache in self._filled():
            cache.reset()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        for cache in self._filled():
            cache.reorder_cache(beam_idx)

    def crop(self, tokens_to_remove: int) -> None:
        for cache in self._filled():
            cache.crop(tokens_to_remove)

    def batch_repeat_interleave(self, repeats: int) -> None:
        for cache in self._filled():
            cache.batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        for cache in self._filled():
            cache.batch_select_indices(indices)

    def activate_past_recording(self) -> None:
        for cache in self._filled():
            cache.activate_past_recording()


class LogitCombiner:
    """Running combination of member logits on their device, so that memory stays that of one member's logits
    whatever K is; `result()` is the ensemble of the members added so far."""

    def __init__(self, combine: str):
        self.combine = combine
        self.count = 0
        self.total: torch.Tensor | None = None  # float32 sum of logits, or log of the sum of probabilities

    def add(self, logits: torch.Tensor) -> None:
        """Add one member's logits."""
        logits = logits.float()
        if self.combine == "logits":
            self.total = logits if self.total is None else self.total + logits
        else:
            log_probs = torch.log_softmax(logits, dim=-1)
            self.total = log_probs if self.total is None else torch.logaddexp(self.total, log_probs)
        self.count += 1

    def result(self) -> torch.Tensor:
        if self.combine == "logits":
            return self.total / self.count
        return self.total - math.log(self.count)


def accepts_logits_to_keep(model: nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def cache_argument(model: nn.Module) -> str:
    """The name under which `model.forward` takes its KV cache (`cache`, or `past_key_values` before 5.24)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def keep_last_logits(logits: torch.Tensor, logits_to_keep: int | torch.Tensor) -> torch.Tensor:
    """The positions `logits_to_keep` selects (as transformers' causal LMs do), for members that cannot select them."""
    if isinstance(logits_to_keep, int):
        return logits if logits_to_keep == 0 else logits[:, -logits_to_keep:]
    return logits[:, logits_to_keep]


def check_member_folder(source: str, name: str) -> None:
    """Refuse a member folder that is missing or still being written (hub ids pass through)."""
    path = Path(source).expanduser()
    if not path.exists():
        if HUB_ID.match(source):
            return
        raise EnsembleMemberError(f"member {name}: no model folder at {source}; it must be trained (and saved) first")
    if (path / INCOMPLETE_MARKER).exists():
        raise EnsembleMemberError(
            f"member {name}: {path} is half-written (it holds a `{INCOMPLETE_MARKER}` marker); "
            "it must be (re)trained until its model is saved"
        )
    if not (path / "config.json").is_file():
        raise EnsembleMemberError(f"member {name}: {path} holds no config.json; it must be (re)trained and saved")
    if not any((path / file).is_file() for file in WEIGHTS_FILES):
        raise EnsembleMemberError(
            f"member {name}: {path} holds no weights ({', '.join(WEIGHTS_FILES)}); it must be (re)trained and saved"
        )


def load_member_tokenizer(source: str) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved with a member, or None when it has none."""
    path = Path(source).expanduser()
    if path.is_dir() and not any((path / file).is_file() for file in TOKENIZER_FILES):
        return None
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError):
        return None


def describe_vocab_difference(vocab: dict[str, int], reference: dict[str, int]) -> str:
    if len(vocab) != len(reference):
        return f"{len(vocab)} tokens against {len(reference)}"
    token = next(token for token in sorted(reference) if vocab.get(token) != reference[token])
    return f"token {token!r} has id {vocab.get(token)} against {reference[token]}"


def shared_tokenizer(
    tokenizers: Sequence[PreTrainedTokenizerBase | None], labels: Sequence[str]
) -> PreTrainedTokenizerBase | None:
    """The common tokenizer of those given (None if none is); refuses tokenizers whose vocabularies differ."""
    present = [(tokenizer, label) for tokenizer, label in zip(tokenizers, labels) if tokenizer is not None]
    if not present:
        return None
    reference, reference_label = present[0]
    reference_vocab = reference.get_vocab()
    for tokenizer, label in present[1:]:
        vocab = tokenizer.get_vocab()
        if vocab != reference_vocab:
            raise EnsembleMemberError(
                f"{label}'s tokenizer differs from {reference_label}'s "
                f"({describe_vocab_difference(vocab, reference_vocab)}): ensemble members must share one tokenizer"
            )
    return reference


class LogitEnsembleForCausalLM(PreTrainedModel, GenerationMixin):
    """K causal LMs (`self.members`) that predict the mean of their logits (or probabilities) at every position."""

    config_class = LogitEnsembleConfig
    main_input_name = "input_ids"
    # Attention runs inside the members; the ensemble passes a requested implementation on to them.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: LogitEnsembleConfig, members: Sequence[PreTrainedModel] | None = None):
        requested_attention = config._attn_implementation
        super().__init__(config)
        if config.num_members < 1:
            raise EnsembleMemberError("a logit ensemble needs at least one member (K >= 1); none were given")
        if members is None:
            member_configs = config.build_member_configs()
            if requested_attention is not None:
                for member_config in member_configs:
                    member_config._attn_implementation = requested_attention
            # The dtype in force (the one `from_pretrained` sets) rather than the dtype saved in each member's config.
            dtype = torch.get_default_dtype()
            members = [AutoModelForCausalLM.from_config(c, dtype=dtype) for c in member_configs]
        elif len(members) != config.num_members:
            raise EnsembleMemberError(f"the config describes {config.num_members} members, {len(members)} were given")
        else:
            # Trained members arrive initialised: keep `post_init` from initialising them again.
            for module in (module for member in members for module in member.modules()):
                module._is_hf_initialized = True
        self.members = nn.ModuleList(members)
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.post_init()

    def post_init(self) -> None:
        """Collect the members' tied weights and placement hints under their `members.{i}.` prefix.

        `PreTrainedModel.post_init` only looks at direct children, and `members` is a `ModuleList`: without this,
        `save_pretrained` would drop (and `from_pretrained` would not re-tie) members' tied `lm_head` weights.
        """
        super().post_init()
        for index, member in enumerate(self.members):
            prefix = f"members.{index}."
            tied = getattr(member, "all_tied_weights_keys", None) or {}
            self.all_tied_weights_keys.update({prefix + target: prefix + source for target, source in tied.items()})
            self._no_split_modules.update(getattr(member, "_no_split_modules", None) or ())
            self._keep_in_fp32_modules.update(getattr(member, "_keep_in_fp32_modules", None) or ())
            self._skip_keys_device_placement.update(getattr(member, "_skip_keys_device_placement", None) or ())
            ignored_on_save = getattr(member, "_keys_to_ignore_on_save", None) or ()
            self._keys_to_ignore_on_save.update(prefix + key for key in ignored_on_save)

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # `generate` must not hand the ensemble one DynamicCache built from its config: the ensemble returns an
        # `EnsembleCache` holding one cache per member, and `generate` carries that between steps.
        return False

    @property
    def num_members(self) -> int:
        return len(self.members)

    @classmethod
    def from_members(
        cls,
        members: Iterable[str | os.PathLike | PreTrainedModel],
        *,
        combine: str = "logits",
        tokenizer: PreTrainedTokenizerBase | None = None,
        **load_kwargs: Any,
    ) -> LogitEnsembleForCausalLM:
        """An ensemble of `members`: saved model folders, hub ids or models in memory.

        Members must share their vocabulary (and tokenizer, when their folders hold one) and their context length.
        The members' tokenizer (or `tokenizer`) is kept and saved with the ensemble. `load_kwargs` go to each
        member's `AutoModelForCausalLM.from_pretrained` (e.g. `dtype`).
        """
        members = list(members)
        if not members:
            raise EnsembleMemberError("an ensemble needs at least one member (K >= 1); give model folders or models")
        models, tokenizers, names = [], [], []
        for index, member in enumerate(members):
            if isinstance(member, PreTrainedModel):
                names.append(f"{index} ({member.name_or_path or type(member).__name__})")
                models.append(member)
                tokenizers.append(None)
                continue
            source = os.fspath(member)
            name = f"{index} ({source})"
            check_member_folder(source, name)
            try:
                models.append(AutoModelForCausalLM.from_pretrained(source, **load_kwargs))
            except (OSError, ValueError) as error:
                raise EnsembleMemberError(f"member {name} cannot be loaded as a causal LM: {error}") from error
            tokenizers.append(load_member_tokenizer(source))
            names.append(name)
        check_members_agree([model.config for model in models], names)
        labels = ["the `tokenizer` argument", *(f"member {name}" for name in names)]
        member_tokenizer = shared_tokenizer([tokenizer, *tokenizers], labels)
        config = LogitEnsembleConfig(
            member_configs=[model.config for model in models],
            combine=combine,
            dtype=models[0].dtype,
        )
        ensemble = cls(config, members=models)
        ensemble.tokenizer = member_tokenizer
        return ensemble

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """Save the ensemble, and the members' tokenizer beside it (so `AutoTokenizer` loads from the same folder)."""
        if self.tokenizer is not None and kwargs.get("is_main_process", True):
            # Before the model: `push_to_hub=True` uploads the folder at the end of `save_pretrained`.
            os.makedirs(save_directory, exist_ok=True)
            self.tokenizer.save_pretrained(save_directory)
        super().save_pretrained(save_directory, *args, **kwargs)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: EnsembleCache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        cache: EnsembleCache | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Members' logits combined per `config.combine`; `loss` is the cross-entropy of the combined prediction
        (labels shifted inside, -100 ignored). Only with `use_cache=True` (as `generate` passes it) or a cache
        carried in does `cache` (`past_key_values` before transformers 5.24) hold one cache per member; otherwise
        no member builds one. The running combination is float32, on the members' device."""
        if input_ids is None:
            raise ValueError("a logit ensemble takes `input_ids` (its members embed tokens each in their own way)")
        past_key_values = cache if cache is not None else past_key_values
        # Caches only where asked for (`generate` always says) or carried in: scorers such as lm-eval and a KD
        # teacher call without `use_cache`, and must not build K members' KV caches they never read.
        use_cache = bool(use_cache) or past_key_values is not None
        if use_cache and past_key_values is None:
            past_key_values = EnsembleCache(self.num_members)
        if past_key_values is not None and not isinstance(past_key_values, EnsembleCache):
            raise ValueError(
                f"past_key_values must be the EnsembleCache this model returned, got {type(past_key_values).__name__}"
            )
        member_inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        combiner = LogitCombiner(self.config.combine)
        for index, member in enumerate(self.members):
            cache = None if past_key_values is None else past_key_values.caches[index]
            supports_keep = accepts_logits_to_keep(member)
            output = member(
                **member_inputs,
                **{cache_argument(member): cache},
                use_cache=use_cache,
                **({"logits_to_keep": logits_to_keep} if supports_keep else {}),
            )
            if past_key_values is not None:
                past_key_values.caches[index] = getattr(output, OUTPUT_CACHE_FIELD)
            combiner.add(output.logits if supports_keep else keep_last_logits(output.logits, logits_to_keep))
        logits = combiner.result()
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{OUTPUT_CACHE_FIELD: past_key_values})


__all__ = ["EnsembleCache", "LogitEnsembleForCausalLM"]
