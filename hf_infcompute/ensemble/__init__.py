"""Ensembles of independently trained members: mean logits (`LogitEnsembleForCausalLM`) or mean weights (a soup).

Importing this package registers the ensemble with `AutoConfig` and `AutoModelForCausalLM`, and marks it for
`register_for_auto_class`, so a saved ensemble also loads elsewhere with `trust_remote_code=True`.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from hf_infcompute.ensemble.build import build_ensemble
from hf_infcompute.ensemble.configuration_logit_ensemble import EnsembleMemberError, LogitEnsembleConfig
from hf_infcompute.ensemble.modeling_logit_ensemble import EnsembleCache, LogitEnsembleForCausalLM
from hf_infcompute.ensemble.soup import average_weights

LogitEnsemble = LogitEnsembleForCausalLM  # short name

AutoConfig.register(LogitEnsembleConfig.model_type, LogitEnsembleConfig, exist_ok=True)
AutoModelForCausalLM.register(LogitEnsembleConfig, LogitEnsembleForCausalLM, exist_ok=True)
# Saving then copies the two self-contained module files and writes `auto_map` into config.json.
LogitEnsembleConfig.register_for_auto_class()
LogitEnsembleForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "EnsembleCache",
    "EnsembleMemberError",
    "LogitEnsemble",
    "LogitEnsembleConfig",
    "LogitEnsembleForCausalLM",
    "average_weights",
    "build_ensemble",
]
