"""Build a logit ensemble from trained members, refusing bad members as `InputError` (bad input, fix named)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from huggingface_hub.errors import StrictDataclassError
from transformers import PreTrainedModel

from hf_infcompute.ensemble.configuration_logit_ensemble import EnsembleMemberError
from hf_infcompute.ensemble.modeling_logit_ensemble import LogitEnsembleForCausalLM
from hf_infcompute.errors import InputError


@contextmanager
def members_as_input() -> Iterator[None]:
    """Report member and setting problems of the (self-contained) modeling code as `InputError`."""
    try:
        yield
    except (EnsembleMemberError, StrictDataclassError) as error:
        raise InputError(str(error)) from error


def build_ensemble(
    members: Iterable[str | os.PathLike | PreTrainedModel],
    output_dir: str | os.PathLike | None = None,
    *,
    combine: str = "logits",
    **load_kwargs: Any,
) -> LogitEnsembleForCausalLM:
    """`LogitEnsembleForCausalLM.from_members`, saved (with the members' tokenizer) to `output_dir` when given.

    members: model folders (as `pretrain` saves them), hub ids or models in memory; they must share vocabulary,
        tokenizer and context length.
    combine: "logits" (mean of pre-softmax logits, the paper's ensemble) or "probs" (mean of probabilities).
    load_kwargs: passed to each member's `from_pretrained` (e.g. `dtype`).
    """
    with members_as_input():
        ensemble = LogitEnsembleForCausalLM.from_members(
            members,
            combine=combine,
            **load_kwargs,
        )
    if output_dir is not None:
        ensemble.save_pretrained(output_dir)
    return ensemble
