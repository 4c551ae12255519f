"""`DistillationTrainingArguments`: the student's training arguments plus the teacher and how to learn from it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from hf_infcompute.errors import InputError
from hf_infcompute.method import (
    DISTILLATION_WEIGHT_DECAY,
    KD_ALPHA,
    KD_MODES,
    KD_TEMPERATURE,
    SYNTHETIC_FRACTION,
)
from hf_infcompute.training.arguments import RegularizedTrainingArguments


@dataclass
class DistillationTrainingArguments(RegularizedTrainingArguments):
    """`RegularizedTrainingArguments` for a student that learns from a teacher (read by `DistillationTrainer`).

    `sequence` (the paper's): train on real rows mixed with the teacher's samples (`synthetic_data`, made by
    `hf-infcompute generate`), `synthetic_fraction` of every batch synthetic (0.5 is the paper's 1:1 mix).
    `token`: train on real rows against the teacher's next-token distributions (KL at `kd_temperature`), weighted
    `kd_alpha` against the usual cross-entropy; needs `teacher`. Students default to weight decay 0.1, the paper's.
    """

    # Settings naming a folder: a run id holds what the folder holds (`run_ids.folder_identity`), not its path.
    FOLDER_FIELDS: ClassVar[tuple[str, ...]] = ("teacher", "synthetic_data")

    kd_mode: str = field(default="sequence", metadata={"help": "'sequence' (mix in teacher samples) or 'token' (KL)."})
    teacher: str | None = field(default=None, metadata={"help": "Teacher model or ensemble folder."})
    synthetic_data: str | None = field(default=None, metadata={"help": "Folder written by `hf-infcompute generate`."})
    synthetic_fraction: float = field(
        default=SYNTHETIC_FRACTION, metadata={"help": "Share of synthetic rows in each batch (0.5: a 1:1 mix)."}
    )
    kd_temperature: float = field(
        default=KD_TEMPERATURE, metadata={"help": "Softmax temperature of token-level distillation."}
    )
    kd_alpha: float = field(default=KD_ALPHA, metadata={"help": "Weight of the KL term in token-level distillation."})
    weight_decay: float = field(
        default=DISTILLATION_WEIGHT_DECAY, metadata={"help": "Decoupled AdamW weight decay of the student."}
    )

    def __post_init__(self) -> None:
        if self.kd_mode not in KD_MODES:
            raise InputError(f"unknown kd_mode {self.kd_mode!r}; choose one of {', '.join(KD_MODES)}")
        if not 0 <= self.synthetic_fraction <= 1:
            raise InputError(f"synthetic_fraction must be in [0, 1], got {self.synthetic_fraction}")
        if self.kd_mode == "sequence" and self.synthetic_fraction > 0 and not self.synthetic_data:
            raise InputError("sequence distillation needs `synthetic_data` (run `hf-infcompute generate` first)")
        if self.kd_mode == "token" and not self.teacher:
            raise InputError("token-level distillation needs `teacher` (a model or ensemble folder)")
        if not (math.isfinite(self.kd_temperature) and self.kd_temperature > 0):
            raise InputError(f"kd_temperature must be positive, got {self.kd_temperature}")
        if not 0 <= self.kd_alpha <= 1:
            raise InputError(f"kd_alpha must be in [0, 1], got {self.kd_alpha}")
        super().__post_init__()
