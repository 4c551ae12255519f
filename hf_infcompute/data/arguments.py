"""`DataArguments`: where the corpus comes from, how it is tokenized and packed, and the token budget D."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hf_infcompute.errors import InputError

MAX_DEFAULT_WORKERS = 8
VALIDATION_SPLITS = ("head", "random")

# A byte-level BPE holds every byte and its two special tokens (`<|endoftext|>`, `<|pad|>`) whatever it learns.
BPE_MIN_VOCAB = 256 + 2


@dataclass
class DataArguments:
    """The corpus, its tokenizer and packing, and the token budget D of a run."""

    corpus: str = field(
        default=None,
        metadata={"help": "Local .jsonl/.json/.txt/.parquet file, folder or glob, or a Hugging Face Hub dataset id."},
    )
    corpus_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    corpus_split: str = field(default="train", metadata={"help": "Hub dataset split to read."})
    corpus_revision: str | None = field(default=None, metadata={"help": "Hub dataset revision (commit or tag)."})
    text_column: str = field(default="text", metadata={"help": "Column holding the document text."})
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream a large hub dataset instead of downloading it; needs `max_corpus_tokens`."},
    )
    max_corpus_tokens: int | None = field(
        default=None, metadata={"help": "Stop tokenizing the corpus after this many tokens (required when streaming)."}
    )
    tokenizer: str = field(
        default="bpe",
        metadata={
            "help": "'bpe' trains a byte-level BPE on the corpus (offline default); otherwise a tokenizer path or "
            "hub id."
        },
    )
    vocab_size: int = field(default=4096, metadata={"help": "Vocabulary size of a trained BPE tokenizer."})
    tokenizer_train_chars: int = field(
        default=5_000_000, metadata={"help": "Characters of training text used to train the BPE tokenizer."}
    )
    preprocessing_num_workers: int | None = field(
        default=None,
        metadata={
            "help": "Processes that tokenize the corpus (`datasets.map` num_proc); default: the CPUs available, "
            f"at most {MAX_DEFAULT_WORKERS}. The packed rows do not depend on it."
        },
    )
    seq_len: int = field(default=256, metadata={"help": "Length of each packed training sequence, in tokens."})
    token_budget: int = field(
        default=None, metadata={"help": "D: the exact number of training tokens, repeated for each epoch."}
    )
    val_sequences: int = field(
        default=64,
        metadata={
            "help": "Held-out validation sequences (of `seq_len` tokens), the same for every run: searches and every "
            "choice read validation only."
        },
    )
    test_sequences: int | None = field(
        default=None,
        metadata={
            "help": "Held-out test sequences (of `seq_len` tokens; default: `val_sequences`): a second held-out split, "
            "disjoint from validation and training and the same for every run, on which reports measure every loss "
            "while searches and every choice read validation only."
        },
    )
    validation_split: str = field(
        default="random",
        metadata={
            "help": "How validation and test are chosen. 'random' (default): two seeded random samples of whole "
            "documents from across the corpus (or the part `max_corpus_tokens` reads), disjoint, held out from "
            "training and from a trained tokenizer, the same for every run whatever D, the model or `seed`; i.i.d. "
            "samples even when the corpus is ordered by source or time. 'head': the first `val_sequences` rows of the "
            "packed corpus (its first documents) and the `test_sequences` rows after them (from the first row past "
            "the documents validation reaches), biased samples of any corpus ordered by source, topic or time."
        },
    )
    validation_seed: int = field(
        default=0, metadata={"help": "Seed of the 'random' validation and test splits' documents."}
    )
    cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Cache of tokenizers and packed corpora (default: $HF_INFCOMPUTE_CACHE or ~/.cache/hf_infcompute)."
        },
    )

    def __post_init__(self) -> None:
        if not self.corpus:
            raise InputError("no corpus given: set `corpus` to local files (.jsonl/.txt/.parquet) or a hub dataset id")
        if self.token_budget is None:
            raise InputError("no token budget given: set `token_budget` (D, the number of training tokens)")
        if self.preprocessing_num_workers is None:
            self.preprocessing_num_workers = min(MAX_DEFAULT_WORKERS, _available_cpus())
        if self.test_sequences is None:
            self.test_sequences = self.val_sequences
        sizes = (
            "token_budget",
            "seq_len",
            "val_sequences",
            "test_sequences",
            "vocab_size",
            "tokenizer_train_chars",
            "preprocessing_num_workers",
        )
        for name in sizes:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise InputError(f"`{name}` must be a positive integer, got {value!r}")
        if self.tokenizer == "bpe" and self.vocab_size < BPE_MIN_VOCAB:
            raise InputError(
                f"vocab_size {self.vocab_size} cannot be honoured: a byte-level BPE tokenizer holds at least "
                f"{BPE_MIN_VOCAB} tokens (256 bytes and 2 special tokens); set `vocab_size` to {BPE_MIN_VOCAB} or more"
            )
        if self.validation_split not in VALIDATION_SPLITS:
            raise InputError(
                f"`validation_split` must be one of {list(VALIDATION_SPLITS)}, got {self.validation_split!r}"
            )
        seed = self.validation_seed
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise InputError(f"`validation_seed` must be a non-negative integer, got {self.validation_seed!r}")
        if self.seq_len < 2:
            raise InputError(f"`seq_len` must be at least 2, got {self.seq_len}")
        if self.streaming and not self.max_corpus_tokens:
            raise InputError("a streamed corpus needs `max_corpus_tokens` (how many tokens to read from the stream)")


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
