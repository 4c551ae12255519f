"""Data: corpora, tokenizers, packing into fixed-length sequences, and the exact-D training split."""

from hf_infcompute.data.arguments import DataArguments
from hf_infcompute.data.collator import PackedCollator
from hf_infcompute.data.corpus import load_corpus
from hf_infcompute.data.packing import PretrainingData, prepare_data

__all__ = ["DataArguments", "PackedCollator", "PretrainingData", "load_corpus", "prepare_data"]
