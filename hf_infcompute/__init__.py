"""hf-infcompute: data-constrained, compute-rich language-model pre-training on Hugging Face.

The public API is exported lazily (PEP 562, as trl does): `from hf_infcompute import RegularizedTrainer` imports the
training stack on first use only. Importing the package registers `LogitEnsembleForCausalLM` with `AutoConfig` and
`AutoModelForCausalLM`, so `AutoModelForCausalLM.from_pretrained(ensemble_dir)` works after `import hf_infcompute`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it.
_IMPORT_STRUCTURE: dict[str, list[str]] = {
    "hf_infcompute.data": ["DataArguments", "PretrainingData", "prepare_data"],
    "hf_infcompute.training": [
        "ModelArguments",
        "RegularizedTrainer",
        "RegularizedTrainingArguments",
        "RunConfig",
        "load_recipe",
        "parse_run_config",
        "pretrain",
    ],
    "hf_infcompute.distillation": ["DistillationTrainer", "DistillationTrainingArguments", "distill"],
    "hf_infcompute.ensemble": ["LogitEnsembleConfig", "LogitEnsembleForCausalLM", "average_weights", "build_ensemble"],
    "hf_infcompute.ensemble.members": ["train_ensemble"],
    "hf_infcompute.scaling": ["PowerLawFit", "JointFit", "data_efficiency", "fit_power_law", "joint_asymptote"],
    "hf_infcompute.search": ["SearchGrid", "SearchResult", "SweepStore", "coordinate_descent", "for_recipe"],
    "hf_infcompute.search.pretrain_objective": ["PretrainObjective"],
    "hf_infcompute.study": ["StudySpec", "load_study", "run_study"],
    "hf_infcompute.records": ["load_runs"],
    "hf_infcompute.models": ["PRESETS", "ModelPreset", "get_preset"],
}
_MODULE_OF = {name: module for module, names in _IMPORT_STRUCTURE.items() for name in names}

__all__ = ["__version__", *sorted(_MODULE_OF)]

if TYPE_CHECKING:
    from hf_infcompute.data import DataArguments, PretrainingData, prepare_data
    from hf_infcompute.distillation import DistillationTrainer, DistillationTrainingArguments, distill
    from hf_infcompute.ensemble import LogitEnsembleConfig, LogitEnsembleForCausalLM, average_weights, build_ensemble
    from hf_infcompute.ensemble.members import train_ensemble
    from hf_infcompute.models import PRESETS, ModelPreset, get_preset
    from hf_infcompute.records import load_runs
    from hf_infcompute.scaling import JointFit, PowerLawFit, data_efficiency, fit_power_law, joint_asymptote
    from hf_infcompute.search import SearchGrid, SearchResult, SweepStore, coordinate_descent, for_recipe
    from hf_infcompute.search.pretrain_objective import PretrainObjective
    from hf_infcompute.study import StudySpec, load_study, run_study
    from hf_infcompute.training import (
        ModelArguments,
        RegularizedTrainer,
        RegularizedTrainingArguments,
        RunConfig,
        load_recipe,
        parse_run_config,
        pretrain,
    )


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'hf_infcompute' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))


# The Auto-class registration of the ensemble (see hf_infcompute/ensemble/__init__.py) runs on package import.
importlib.import_module("hf_infcompute.ensemble")
