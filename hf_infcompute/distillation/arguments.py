"""`DistillationArguments`: the teacher, the synthetic corpus and how the student mixes it with real data."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hf_infcompute.errors import InputError

KD_MODES = ("sequence", "token")


@dataclass
class DistillationArguments:
    """How a student learns from a teacher.

    `sequence` (the paper's): train on real rows mixed with the teacher's samples (`synthetic_data`, made by
    `hf-infcompute generate`), `synthetic_fraction` of every batch synthetic (0.5 is the paper's 1:1 mix).
    `token`: train on real rows against the teacher's next-token distributions (KL at `kd_temperature`), weighted
    `kd_alpha` against the usual cross-entropy; needs `teacher`.
    """

    kd_mode: str = field(default="sequence", metadata={"help": "'sequence' (mix in teacher samples) or 'token' (KL)."})
    teacher: str | None = field(default=None, metadata={"help": "Teacher model or ensemble folder."})
    synthetic_data: str | None = field(default=None, metadata={"help": "Folder written by `hf-infcompute generate`."})
    synthetic_fraction: float = field(default=0.5, metadata={"help": "Share of synthetic rows in each batch."})
    kd_temperature: float = field(default=1.0, metadata={"help": "Softmax temperature of token-level distillation."})
    kd_alpha: float = field(default=0.5, metadata={"help": "Weight of the KL term in token-level distillation."})

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
