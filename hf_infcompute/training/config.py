"""A run's configuration: one flat mapping (a YAML recipe plus `key=value` overrides) parsed into three dataclasses.

Keys are the fields of `DataArguments`, `ModelArguments` and the run method's training arguments
(`RegularizedTrainingArguments`, or a subclass such as `DistillationTrainingArguments`), as in the flat JSON/YAML files
of the transformers examples. Unknown keys are refused by name. The parsed `RunConfig` is what stages pass on; a
variant of a run (a search point, an ensemble member, a student) is `run.replace(key=value, ...)`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from transformers import HfArgumentParser

from hf_infcompute.data.arguments import DataArguments
from hf_infcompute.errors import InputError
from hf_infcompute.recipe_files import read_yaml
from hf_infcompute.run_ids import folder_identity, training_run_id
from hf_infcompute.training.arguments import ModelArguments, RegularizedTrainingArguments

# The settings that define a run's result: two configurations equal on these are the same run.
IDENTITY_KEYS = {
    "data": (
        "corpus",
        "corpus_config",
        "corpus_split",
        "corpus_revision",
        "text_column",
        "max_corpus_tokens",
        "tokenizer",
        "vocab_size",
        "tokenizer_train_chars",
        "seq_len",
        "token_budget",
        "val_sequences",
    ),
    "model": ("preset", "base_model", "lora_r", "lora_alpha", "lora_dropout"),
    "training": (
        "recipe",
        "learning_rate",
        "num_train_epochs",
        "weight_decay",
        "lr_scheduler_type",
        "warmup_steps",
        "max_grad_norm",
        "adam_beta1",
        "adam_beta2",
        "adam_epsilon",
        "seed",
        "data_seed",
        "precision",
    ),
}
# Settings added after runs were recorded: part of the identity only when they differ from these values (those runs
# had), so the ids of runs recorded before them still hold. Those runs had no test split (0 test rows): every run
# with one trained on other documents, so `test_sequences` is always part of a new run's identity.
IDENTITY_IF_CHANGED = {
    "data": {"validation_split": "head", "validation_seed": 0, "test_sequences": 0},
    "training": {"weight_decay_mask": "matrices", "data_order": "reshuffle"},
}

BOOLEAN_WORDS = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}

Training = TypeVar("Training", bound=RegularizedTrainingArguments)


def _init_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


@dataclass(frozen=True)
class RunConfig(Generic[Training]):
    """A run's settings. `training` is the arguments class of the run's method: `RegularizedTrainingArguments` for
    pre-training, a subclass of it for a method built on pre-training (its own fields join the run's identity)."""

    data: DataArguments
    model: ModelArguments
    training: Training

    def identity(self) -> dict[str, Any]:
        """The settings that decide this run's result (see `IDENTITY_KEYS`, plus the method's own fields)."""
        parts = {"data": self.data, "model": self.model, "training": self.training}
        identity = {key: getattr(parts[group], key) for group, keys in IDENTITY_KEYS.items() for key in keys}
        identity.update(
            {
                key: getattr(parts[group], key)
                for group, defaults in IDENTITY_IF_CHANGED.items()
                for key, default in defaults.items()
                if getattr(parts[group], key) != default
            }
        )
        identity["batch_size"] = self.global_batch_size
        own = set(_init_fields(type(self.training))) - set(_init_fields(RegularizedTrainingArguments))
        identity.update({name: getattr(self.training, name) for name in sorted(own)})
        for name in getattr(self.training, "FOLDER_FIELDS", ()):  # a teacher, a synthetic corpus: by what they hold
            if identity.get(name) is not None:
                identity[name] = folder_identity(identity[name])
        return identity

    @property
    def global_batch_size(self) -> int:
        """Sequences per optimizer step, over all processes and accumulation steps."""
        t = self.training
        return t.per_device_train_batch_size * t.world_size * t.gradient_accumulation_steps

    def run_id(self) -> str:
        t = self.training
        return training_run_id(
            self.identity(),
            recipe=t.recipe,
            model=self.model.name,
            token_budget=self.data.token_budget,
            learning_rate=t.learning_rate,
            weight_decay=t.weight_decay,
            num_train_epochs=t.num_train_epochs,
            seed=t.seed,
        )

    def replace(self, training_class: type[RegularizedTrainingArguments] | None = None, **changes: Any) -> RunConfig:
        """A variant of this run with some settings changed, validated again by the argument dataclasses.

        `changes` are run keys (`learning_rate=1e-3`, `seed=1`, `token_budget=4096`), read as a recipe reads them;
        `data_seed` follows a new `seed` unless it was set apart from it. `training_class` switches the run to another
        method's arguments (e.g. `DistillationTrainingArguments`), keeping every shared setting.
        """
        training_class = training_class or type(self.training)
        values = _typed_values(changes, (DataArguments, ModelArguments, training_class))
        t = self.training
        if "seed" in values and "data_seed" not in values and t.data_seed == t.seed:
            values["data_seed"] = values["seed"]

        def rebuilt(obj: Any, cls: type) -> Any:
            names = _init_fields(cls)
            kept = {name: getattr(obj, name) for name in names if hasattr(obj, name)}
            return cls(**{**kept, **{key: value for key, value in values.items() if key in names}})

        return RunConfig(
            data=rebuilt(self.data, DataArguments),
            model=rebuilt(self.model, ModelArguments),
            training=rebuilt(self.training, training_class),
        )


def _field_types(classes: tuple[type, ...]) -> dict[str, Any]:
    types_by_name: dict[str, Any] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            types_by_name.setdefault(f.name, hints.get(f.name, Any))
    return types_by_name


def _typed_values(settings: Mapping[str, Any], classes: tuple[type, ...]) -> dict[str, Any]:
    """`settings` read by the type of the field each names; an unknown key is refused by name."""
    field_types = _field_types(classes)
    unknown = sorted(set(settings) - set(field_types))
    if unknown:
        raise InputError(
            f"unknown recipe key(s) {unknown}; valid keys are the fields of "
            f"{', '.join(c.__name__ for c in classes)} (`hf-infcompute pretrain --help-keys` lists them)"
        )
    return {
        key: _checked(key, _coerce(key, value, field_types[key]), field_types[key]) for key, value in settings.items()
    }


SCALARS = (bool, int, float, str, type(None))


def _checked(key: str, value: Any, hint: Any) -> Any:
    """`value`, refused by name when a field of plain scalar types (numbers, text, yes/no, null) gets another type
    (a list, a mapping, text for a number): the library would fail on it later, without naming the key."""
    kinds = _type_args(hint)
    if not all(kind in SCALARS for kind in kinds):
        return value  # lists, mappings and the library's enums are checked by the library's own parser
    accepted = tuple(kinds) + ((int,) if float in kinds else ())
    if isinstance(value, accepted) and not (isinstance(value, bool) and bool not in kinds):
        return value
    names = " or ".join(_KIND_NAMES[kind] for kind in kinds)
    raise InputError(f"`{key}` expects {names}, got {value!r}")


_KIND_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "text", type(None): "null"}


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Convert YAML/CLI values such as '3e-3' or 1e6 to the field's type; anything else passes through.

    Command-line values arrive as strings and are read by the field's type, as the recipe file's quoted values are:
    `save_strategy=no` stays the string 'no' (YAML would read it as false), `max_corpus_tokens=null` is None.
    """
    kinds = _type_args(hint)
    numeric = float in kinds or int in kinds
    if isinstance(value, str):
        if type(None) in kinds and value.strip().lower() in ("null", "~"):
            return None
        if bool in kinds and value.lower() in BOOLEAN_WORDS:
            return BOOLEAN_WORDS[value.lower()]
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
    config: dict[str, Any],
    output_dir: str | None = None,
    training_class: type[RegularizedTrainingArguments] = RegularizedTrainingArguments,
) -> RunConfig:
    """Parse a flat configuration mapping; `output_dir` becomes the Trainer's checkpoint folder.

    `training_class` is the arguments class of the run's method (e.g. `DistillationTrainingArguments`), whose fields
    the mapping may set.
    """
    if "output_dir" in config:
        raise InputError("give `output_dir` on the command line (--output), not in the recipe")
    classes = (DataArguments, ModelArguments, training_class)
    values = _typed_values(config, classes)
    values["output_dir"] = output_dir
    data, model, training = HfArgumentParser(classes).parse_dict(values)
    if model.base_model:
        if "tokenizer" in config and config["tokenizer"] != model.base_model:
            raise InputError(
                f"continued pre-training keeps the base model's tokenizer; drop `tokenizer` ({config['tokenizer']!r}) "
                "or set it to the base model"
            )
        data.tokenizer = model.base_model
    return RunConfig(data=data, model=model, training=training)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["key=value", ...]` to a mapping of strings, which `parse_run_config` reads by each field's type."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"override {pair!r} is not of the form key=value")
        overrides[key.strip()] = value.strip()
    return overrides


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a YAML recipe (a flat mapping of run settings) and apply `key=value` overrides."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"recipe file {path} not found (relative paths are read from {Path.cwd()}): check the path, or start from "
            "a copy of the example recipe recipes/pretrain-tiny.yaml (`--help-keys` lists every key)"
        )
    config = read_yaml(path, "recipe")
    if not isinstance(config, dict):
        raise InputError(f"recipe {path} must be a mapping of setting: value")
    config.update(parse_overrides(overrides or []))
    return config
