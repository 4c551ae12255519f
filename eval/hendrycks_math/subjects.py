"""Per-subject `process_docs` for MATH read from one local file.

The hub copy (EleutherAI/hendrycks_math) has one config per subject; the local file holds all 5,000 test problems
with their subject in `type`. Each function keeps one subject's rows, then applies the harness's own `process_docs`
(answer = the last \\boxed{} of the solution). Written here because the harness has no declarative row filter.
"""

from __future__ import annotations

from collections.abc import Callable

import datasets
from lm_eval.tasks.hendrycks_math.utils import process_docs as harness_process_docs


def _subject(label: str) -> Callable[[datasets.Dataset], datasets.Dataset]:
    def process_docs(dataset: datasets.Dataset) -> datasets.Dataset:
        rows = dataset.filter(lambda doc: doc["type"] == label)
        if len(rows) == 0:
            raise ValueError(f"the local MATH file has no rows with type {label!r}; it needs all seven subjects")
        return harness_process_docs(rows)

    return process_docs


algebra = _subject("Algebra")
counting_and_probability = _subject("Counting & Probability")
geometry = _subject("Geometry")
intermediate_algebra = _subject("Intermediate Algebra")
number_theory = _subject("Number Theory")
prealgebra = _subject("Prealgebra")
precalculus = _subject("Precalculus")
