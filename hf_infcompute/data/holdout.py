"""The 'random' validation and test splits: a seeded, stable, per-document rule that holds whole documents out of
training.

Document `i` (its number in corpus order, or stream order for a streamed corpus) gets a uniform `u` in [0, 1) from a
hash of (`validation_seed`, `i`): it is a validation document when `u < f_val`, a test document when
`f_val <= u < f_val + f_test`, a training document otherwise, with fractions sized from the corpus. The choice depends
on neither the token budget D, the model, the run's seed nor the number of worker processes, it can be made as
documents stream by, and the validation documents are a function of the seed and `f_val` alone (a test split added
beside them leaves them as they were).
"""

from __future__ import annotations

import numpy as np

# The held-out documents are sized to give this many times the validation tokens, in expectation; a document-level
# sample's token count varies with the documents' lengths, and long documents need the margin.
HOLDOUT_MARGIN = 4.0
# At most this fraction of the documents is held out, validation and test together; a corpus that needs more is too
# small for the splits.
MAX_HOLDOUT_FRACTION = 0.5
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
# A document's split under the random rule (`document_splits`).
TRAIN, VALIDATION, TEST = 0, 1, 2


def holdout_fractions(val_tokens: int, test_tokens: int, corpus_tokens: float) -> tuple[float, float]:
    """The fractions of documents to hold out for `val_tokens` validation and `test_tokens` test tokens from a corpus
    of at least `corpus_tokens` tokens (a lower bound: a low one holds out more). Validation's is sized as if alone;
    test's takes what is left of MAX_HOLDOUT_FRACTION at most."""
    val_fraction = min(MAX_HOLDOUT_FRACTION, HOLDOUT_MARGIN * val_tokens / max(corpus_tokens, 1))
    test_fraction = min(MAX_HOLDOUT_FRACTION - val_fraction, HOLDOUT_MARGIN * test_tokens / max(corpus_tokens, 1))
    return val_fraction, test_fraction


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash of each value (the SplitMix64 finalizer; uint64 arithmetic wraps)."""
    z = values.astype(np.uint64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def document_uniforms(seed: int, first_document: int, count: int) -> np.ndarray:
    """The uniform `u` in [0, 1) of each of the `count` documents numbered from `first_document`."""
    indices = np.arange(first_document, first_document + count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        keys = _splitmix64(_splitmix64(np.full(count, seed, dtype=np.uint64)) + indices * _GOLDEN)
    return (keys >> np.uint64(11)).astype(np.float64) / float(2**53)


def document_splits(
    seed: int, val_fraction: float, test_fraction: float, first_document: int, count: int
) -> np.ndarray:
    """The split (TRAIN, VALIDATION or TEST) of each of the `count` documents numbered from `first_document`."""
    uniform = document_uniforms(seed, first_document, count)
    splits = np.full(count, TRAIN, dtype=np.int8)
    splits[uniform < val_fraction + test_fraction] = TEST
    splits[uniform < val_fraction] = VALIDATION
    return splits


def spread_rows(available: int, wanted: int) -> np.ndarray:
    """`wanted` row numbers spread evenly over `available` held-out rows, so that a held-out split covers its whole
    stream (for an ordered corpus: documents from its start to its end), not only its first documents."""
    return np.round(np.linspace(0, available - 1, wanted)).astype(np.int64)
