"""Generation: sample a synthetic corpus from a teacher (a model or a logit ensemble) for distillation."""

from hf_infcompute.generation.synthetic import (
    GenerationResult,
    generate_synthetic,
    load_synthetic,
    wait_for_synthetic,
)
from hf_infcompute.generation.teacher import check_same_tokenizer

__all__ = ["GenerationResult", "check_same_tokenizer", "generate_synthetic", "load_synthetic", "wait_for_synthetic"]
