"""What one process of a launched group may do alone after training, without waiting on the others."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from transformers.integrations import deepspeed


@contextmanager
def zero3_set_aside() -> Iterator[None]:
    """Load models in this process alone while a ZeRO-3 run's DeepSpeed config is still live.

    transformers wraps `from_pretrained` in `deepspeed.zero.Init` while `is_deepspeed_zero3_enabled()`, which holds
    after training for as long as the arguments or the accelerator keep the config; its partitioning collectives would
    wait for the other ranks. The config is unset (`unset_hf_deepspeed_config`) for the duration and restored after.
    """
    saved = deepspeed._hf_deepspeed_config_weak_ref  # no public getter: `set_hf_deepspeed_config` restores it
    config = saved() if saved is not None else None
    deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if config is not None:
            deepspeed.set_hf_deepspeed_config(config)
