"""The 'random' validation split: a seeded, stable, per-document rule that holds whole documents out of training.

Document `i` (its number in corpus order, or stream order for a streamed corpus) is held out when a hash of
(`validation_seed`, `i`) falls below a fraction sized from the corpus, so the choice depends on neither the token
budget D, the model, the run's seed nor the number of worker processes, and it can be made as documents stream by.
"""

from __future__ import annotations

import numpy as np

# The held-out documents are sized to give this many times the validation tokens, in expectation; a document-level
# sample's token count varies with the documents' lengths, and long documents need the margin.
HOLDOUT_MARGIN = 4.0
# At most this fraction of the documents is held out; a corpus that needs more is too small for the split.
MAX_HOLDOUT_FRACTION = 0.5
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def holdout_fraction(val_tokens: int, corpus_tokens: float) -> float:
    """The fraction of documents to hold out for `val_tokens` validation tokens from a corpus of at least
    `corpus_tokens` tokens (a lower bound: a low one holds out more)."""
    return min(MAX_HOLDOUT_FRACTION, HOLDOUT_MARGIN * val_tokens / max(corpus_tokens, 1))


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash of each value (the SplitMix64 finalizer; uint64 arithmetic wraps)."""
    z = values.astype(np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def held_out(seed: int, fraction: float, first_document: int, count: int) -> np.ndarray:
    """Which of the `count` documents numbered from `first_document` are held out (a boolean mask)."""
    indices = np.arange(first_document, first_document + count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        keys = _splitmix64(_splitmix64(np.full(count, seed, dtype=np.uint64)) + indices * _GOLDEN)
    uniform = (keys >> np.uint64(11)).astype(np.float64) / float(2**53)
    return uniform < fraction


def spread_rows(available: int, wanted: int) -> np.ndarray:
    """`wanted` row numbers spread evenly over `available` held-out rows, so that validation covers the whole
    held-out stream (for an ordered corpus: documents from its start to its end), not only its first documents."""
    return np.round(np.linspace(0, available - 1, wanted)).astype(np.int64)
