"""Planning before training: step memory per device and the batch split (`memory`), and what a whole recipe costs in
trainings, tokens, FLOPs and device-hours (`hf_infcompute.planning.recipe`, imported on its own: it reads the run
arguments, which import this package)."""

from hf_infcompute.planning.memory import (
    StepMemory,
    gradient_accumulation,
    largest_micro_batch,
    step_memory,
)

__all__ = ["StepMemory", "gradient_accumulation", "largest_micro_batch", "step_memory"]
