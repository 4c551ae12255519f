"""A run's configuration: one flat mapping (a YAML recipe plus `key=value` overrides) parsed into three dataclasses.

Keys are the fields of `DataArguments`, `ModelArguments` and `RegularizedTrainingArguments`, as in the flat JSON/YAML
files of the transformers examples. Unknown keys are refused by name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from hf_infcompute.data.arguments import DataArguments
from hf_infcompute.errors import InputError
from hf_infcompute.training.arguments import ModelArguments, RegularizedTrainingArguments

ARGUMENT_CLASSES = (DataArguments, ModelArguments, RegularizedTrainingArguments)

# The settings that define a run's result: two configurations equal on these are the same run.
IDENTITY_KEYS = {
    "data": (
        "corpus", "corpus_config", "corpus_split", "corpus_revision", "text_column", "max_corpus_tokens",
        "tokenizer", "vocab_size", "tokenizer_train_chars", "seq_len", "token_budget", "val_sequences",
    ),
    "model": ("preset", "base_model", "lora_r", "lora_alpha", "lora_dropout"),
    "training": (
        "recipe", "learning_rate", "num_train_epochs", "weight_decay", "lr_scheduler_type", "warmup_steps",
        "max_grad_norm", "adam_beta1", "adam_beta2", "adam_epsilon", "seed", "data_seed", "precision",
    ),
}


@dataclass(frozen=True)
class RunConfig:
    """A run's settings; `extras` holds the argument dataclasses of methods built on pre-training (distillation)."""

    data: DataArguments
    model: ModelArguments
    training: RegularizedTrainingArguments
    extras: tuple[Any, ...] = ()

    def identity(self) -> dict[str, Any]:
        """The settings that decide this run's result (see `IDENTITY_KEYS`, plus every extra's fields)."""
        parts = {"data": self.data, "model": self.model, "training": self.training}
        identity = {key: getattr(parts[group], key) for group, keys in IDENTITY_KEYS.items() for key in keys}
        identity["batch_size"] = self.global_batch_size
        for extra in self.extras:
            identity.update(dataclasses.asdict(extra))
        return identity

    def extra(self, cls: type) -> Any:
        """The extra arguments of type `cls`, or None."""
        return next((e for e in self.extras if isinstance(e, cls)), None)

    @property
    def global_batch_size(self) -> int:
        """Sequences per optimizer step, over all processes and accumulation steps."""
        t = self.training
        return t.per_device_train_batch_size * t.world_size * t.gradient_accumulation_steps

    def run_id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()[:10]
        t = self.training
        epochs = f"{t.num_train_epochs:g}"
        return (
            f"{t.recipe}-{Path(self.model.name).name}-D{self.data.token_budget}-lr{t.learning_rate:g}-wd{t.weight_decay:g}"
            f"-ep{epochs}-s{t.seed}-{digest}"
        )


def _field_types(classes: tuple[type, ...]) -> dict[str, Any]:
    types_by_name: dict[str, Any] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            types_by_name.setdefault(f.name, hints.get(f.name, Any))
    return types_by_name


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert YAML/CLI values such as '3e-3' or 1e6 to the field's type; anything else passes through."""
    kinds = _type_args(hint)
    numeric = float in kinds or int in kinds
    if isinstance(value, str):
        if bool in kinds and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not numeric:
            return value
        try:
            number = float(value)
        except ValueError:
            if str in kinds:
                return value
            raise InputError(f"`{key}` expects a number, got {value!r}") from None
        value = number
    if isinstance(value, float) and int in kinds and float not in kinds:
        if not value.is_integer():
            raise InputError(f"`{key}` expects an integer, got {value!r}")
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and float in kinds and int not in kinds:
        return float(value)
    return value


def _type_args(hint: Any) -> tuple:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def parse_run_config(
    config: dict[str, Any], output_dir: str | None = None, extra_classes: tuple[type, ...] = ()
) -> RunConfig:
    """Parse a flat configuration mapping; `output_dir` becomes the Trainer's checkpoint folder.

    `extra_classes` are further argument dataclasses (e.g. `DistillationArguments`) whose fields the mapping may set.
    """
    if "output_dir" in config:
        raise InputError("give `output_dir` on the command line (--output), not in the recipe")
    classes = ARGUMENT_CLASSES + tuple(extra_classes)
    field_types = _field_types(classes)
    unknown = sorted(set(config) - set(field_types))
    if unknown:
        raise InputError(
            f"unknown recipe key(s) {unknown}; valid keys are the fields of "
            f"{', '.join(c.__name__ for c in classes)} (`--help-keys` lists them)"
        )
    values = {key: _coerce(key, value, field_types[key]) for key, value in config.items()}
    values["output_dir"] = output_dir
    data, model, training, *extras = HfArgumentParser(classes).parse_dict(values)
    if model.base_model:
        if "tokenizer" in config and config["tokenizer"] != model.base_model:
            raise InputError(
                f"continued pre-training keeps the base model's tokenizer; drop `tokenizer` ({config['tokenizer']!r}) "
                "or set it to the base model"
            )
        data.tokenizer = model.base_model
    return RunConfig(data=data, model=model, training=training, extras=tuple(extras))


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["key=value", ...]` to a mapping; values are read as YAML scalars ('3e-3', '16', 'true')."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"override {pair!r} is not of the form key=value")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a YAML recipe (a flat mapping of run settings) and apply `key=value` overrides."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"recipe file {path} not found")
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict):
        raise InputError(f"recipe {path} must be a mapping of setting: value")
    config.update(parse_overrides(overrides or []))
    return config
