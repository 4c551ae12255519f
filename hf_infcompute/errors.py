"""Errors raised for bad input. Each message names the fix."""

from __future__ import annotations

import sys


class InputError(ValueError):
    """A user-supplied setting, file or dataset cannot be used as given."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss and was stopped."""


def raise_if_out_of_memory(error: BaseException, what: str) -> None:
    """Re-raise a torch device out-of-memory `error` as an `InputError` naming the fixes.

    The device, not the run, is at fault: a search that steered around such a point, or a study that noted it as a
    failed member or student, would bias its results toward cheap settings. torch is looked up, not imported: code
    that raised its error loaded it.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(error, torch.OutOfMemoryError):
        raise InputError(
            f"{what} ran out of device memory ({error}); it stops here instead of counting as a failed run. Lower "
            "`per_device_train_batch_size` (with `global_batch_size` set, the accumulation keeps the global batch), "
            "turn on `gradient_checkpointing`, set `loss_implementation=chunked`, or run `hf-infcompute plan "
            "RECIPE.yaml` to see what fits; then run the same command again, which resumes."
        ) from error
