"""Training: arguments, the `RegularizedTrainer`, and `pretrain`, which takes a run from settings to record."""

from hf_infcompute.training.arguments import ModelArguments, RegularizedTrainingArguments
from hf_infcompute.training.config import RunConfig, load_recipe, parse_run_config
from hf_infcompute.training.pretraining import pretrain
from hf_infcompute.training.sampler import EpochShuffleSampler
from hf_infcompute.training.trainer import RegularizedTrainer, decay_parameter_names

__all__ = [
    "EpochShuffleSampler",
    "ModelArguments",
    "RegularizedTrainer",
    "RegularizedTrainingArguments",
    "RunConfig",
    "decay_parameter_names",
    "load_recipe",
    "parse_run_config",
    "pretrain",
]
