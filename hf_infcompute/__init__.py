"""hf-infcompute: data-constrained, compute-rich language-model pre-training on Hugging Face."""

from hf_infcompute.records import load_runs

__version__ = "0.1.0"

__all__ = ["__version__", "load_runs"]
