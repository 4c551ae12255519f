"""Model size presets."""

from hf_infcompute.models.presets import (
    PRESETS,
    ModelPreset,
    ParameterCounts,
    build_model,
    count_parameters,
    get_preset,
)

__all__ = ["PRESETS", "ModelPreset", "ParameterCounts", "build_model", "count_parameters", "get_preset"]
