"""A study's specification: one YAML file that says which runs make up the paper's study on your corpus."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hf_infcompute.errors import InputError
from hf_infcompute.method import STANDARD_WEIGHT_DECAY
from hf_infcompute.recipe_files import read_yaml


@dataclass(frozen=True)
class SearchSpec:
    """The grid of one recipe's coordinate descent, its starting point, whether an optimum on the grid's edge
    extends that axis past it (`SearchGrid.extended`), and how many fresh seeds break a tie within the seed noise
    (`hf_infcompute.search.tie_break`; 0: no tie-breaks)."""

    learning_rate: list[float]
    num_train_epochs: list[int]
    weight_decay: list[float] = field(default_factory=lambda: [STANDARD_WEIGHT_DECAY])
    start: list[float] | None = None
    extend_edges: bool = True
    tie_break_seeds: int = 2


# The paper's data scaling: D = 200M (the main budget) and 2D, 4D, 8D.
PAPER_BUDGET_FACTORS = (2, 4, 8)

# A candidate that stands for the single model's locally optimal value (member hyperparameters, student weight decay).
OPTIMUM = "optimum"


@dataclass(frozen=True)
class EnsembleSpec:
    """K members per preset for each of `member_candidates`: 'optimum' (the single model's locally optimal point) and
    'paper' (double the epochs, halve the weight decay); the candidate with the lower K -> inf asymptote on validation
    is the ensemble (the paper's criterion)."""

    k: int = 5
    member_candidates: list[str] = field(default_factory=lambda: [OPTIMUM, "paper"])
    presets: list[str] | None = None


@dataclass(frozen=True)
class DistillationSpec:
    """Ensemble distillation and self-distillation into a student of one preset.

    Every `weight_decay` candidate trains a student per teacher and the best is reported: 'optimum' is the single
    model's locally optimal weight decay, a number is used as is (the paper's students used 0.1, with far more
    synthetic text per real token than a small study samples). `token_level` adds a student trained on the real data
    against the ensemble's next-token distributions (beyond the paper), on the same budget.
    """

    preset: str | None = None
    synthetic_tokens: int | None = None
    synthetic_fraction: float = 0.5
    weight_decay: list[float | str] = field(default_factory=lambda: [OPTIMUM, 0.1])
    self_distillation: bool = True
    token_level: bool = False

    def __post_init__(self) -> None:
        decays = self.weight_decay if isinstance(self.weight_decay, list) else [self.weight_decay]
        bad = [d for d in decays if d != OPTIMUM and not (isinstance(d, (int, float)) and d >= 0)]
        if bad or not decays:
            raise InputError(
                f"distillation.weight_decay takes numbers >= 0 and/or '{OPTIMUM}', got {self.weight_decay!r}"
            )
        object.__setattr__(self, "weight_decay", decays)

    def student_weight_decays(self, optimum: float) -> list[float]:
        """The candidates as numbers, `optimum` standing for 'optimum', without repeats, in the order given."""
        decays = [float(optimum) if d == OPTIMUM else float(d) for d in self.weight_decay]
        return list(dict.fromkeys(decays))


@dataclass(frozen=True)
class BenchmarkSpec:
    """Downstream evaluation of the study's best models (off unless `enabled`)."""

    enabled: bool = False
    tasks: str = "paper"
    data_dir: str | None = None
    limit: int | None = None


MIN_REPORT_RESAMPLES = 40
# The percentile intervals' and p-values' own Monte Carlo error shrinks as 1 / sqrt(replicates): at 1000 a p-value
# near 0.05 is known to about +-0.007 (at 200, +-0.015, enough to flip a verdict at the line); 1000 is also Efron and
# Tibshirani's advice for percentile intervals.
REPORT_RESAMPLES = 1000


@dataclass(frozen=True)
class StudySpec:
    """Everything a study runs. `run` holds the settings shared by every run (the flat pre-training keys);
    `token_budget` is the main token budget D."""

    name: str
    run: dict[str, Any]
    token_budget: int
    presets: list[str]
    standard: SearchSpec
    regularized: SearchSpec
    data_scaling_budgets: list[int] | None = None
    ensemble: EnsembleSpec = field(default_factory=EnsembleSpec)
    distillation: DistillationSpec = field(default_factory=DistillationSpec)
    benchmarks: BenchmarkSpec = field(default_factory=BenchmarkSpec)
    description: str = ""
    expected_minutes: float | None = None
    # Replicates of the report's resampled analysis (documents and seed noise redrawn, the whole analysis redone):
    # more give steadier interval ends and p-values, fewer a quicker report. At least 40, so each 2.5% tail holds a
    # replicate.
    report_resamples: int = REPORT_RESAMPLES

    def __post_init__(self) -> None:
        if not (isinstance(self.report_resamples, int) and self.report_resamples >= MIN_REPORT_RESAMPLES):
            raise InputError(
                f"report_resamples must be a whole number >= {MIN_REPORT_RESAMPLES} (each 2.5% tail of a 95% interval "
                f"needs a replicate), got {self.report_resamples!r}"
            )

    @property
    def budgets(self) -> list[int]:
        """Every token budget both recipes are searched at: the data-scaling budgets (by default the paper's 2D, 4D
        and 8D) and the main one."""
        further = self.data_scaling_budgets
        if further is None:
            further = [factor * self.token_budget for factor in PAPER_BUDGET_FACTORS]
        return sorted(set(further) | {self.token_budget})

    @property
    def distillation_preset(self) -> str:
        return self.distillation.preset or self.presets[len(self.presets) // 2]


NESTED = {
    "standard": SearchSpec,
    "regularized": SearchSpec,
    "ensemble": EnsembleSpec,
    "distillation": DistillationSpec,
    "benchmarks": BenchmarkSpec,
}


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise InputError(f"`{where}` must be a mapping, got {values!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(f"unknown key(s) {unknown} in `{where}` of the study; valid keys: {sorted(names)}")
    try:
        return cls(**values)
    except TypeError as error:
        raise InputError(f"`{where}` of the study: {error}") from error


# Keys of older study files, refused with the run setting that replaced them.
RENAMED = {"budget": "token_budget", "epochs": "num_train_epochs"}


def _refuse_renamed(values: Any, where: str) -> None:
    if not isinstance(values, dict):
        return
    for old, new in RENAMED.items():
        if old in values:
            place = f"{where}.{old}" if where else old
            raise InputError(
                f"study key `{place}` is now `{new}`, the run setting it sets: rename it in the study YAML "
                f"(`{new}: {values[old]!r}`)"
            )


def parse_study(values: dict[str, Any]) -> StudySpec:
    """A `StudySpec` from a mapping; unknown keys are refused by name, renamed ones with their new name."""
    values = dict(values)
    _refuse_renamed(values, "")
    for key in ("standard", "regularized"):
        _refuse_renamed(values.get(key), key)
    for key, cls in NESTED.items():
        if key in values:
            values[key] = _build(cls, values[key], key)
    spec = _build(StudySpec, values, "study")
    if len(spec.presets) < 1:
        raise InputError("a study needs at least one preset")
    for name, search in (("standard", spec.standard), ("regularized", spec.regularized)):
        if search.tie_break_seeds < 0:
            raise InputError(f"{name}.tie_break_seeds must be 0 (no tie-breaks) or more, got {search.tie_break_seeds}")
    if spec.ensemble.k < 1:
        raise InputError(f"ensemble needs k >= 1 members, got k={spec.ensemble.k}")
    unknown = sorted(set(spec.ensemble.member_candidates) - {OPTIMUM, "paper"})
    if unknown:
        raise InputError(f"unknown member candidate(s) {unknown}; use '{OPTIMUM}' and/or 'paper'")
    outside = {
        "learning_rate": sorted(set(spec.standard.learning_rate) - set(spec.regularized.learning_rate)),
        "num_train_epochs": sorted(set(spec.standard.num_train_epochs) - set(spec.regularized.num_train_epochs)),
        "weight_decay": [] if STANDARD_WEIGHT_DECAY in spec.regularized.weight_decay else [STANDARD_WEIGHT_DECAY],
    }
    outside = {key: values for key, values in outside.items() if values}
    if outside:
        raise InputError(
            "the regularized search also starts from the standard recipe's optimum, so its grid must hold every "
            f"standard point; add {', '.join(f'{key} {values}' for key, values in outside.items())} to "
            "`regularized`"
        )
    for key in ("token_budget", "preset", "learning_rate", "num_train_epochs", "weight_decay", "recipe"):
        if key in spec.run:
            raise InputError(f"`run.{key}` is set by the study itself; remove it from `run`")
    return spec


def load_study(path: str | Path, *, data: str | None = None) -> StudySpec:
    """Read a study YAML; `data` replaces the corpus (`run.corpus`)."""
    path = Path(path)
    if not path.is_file():
        from importlib.resources import files

        packaged = files("hf_infcompute.recipes") / f"{path.name.removesuffix('.yaml')}.yaml"
        if not packaged.is_file():
            packaged_studies = sorted(
                entry.name.removesuffix(".yaml")
                for entry in files("hf_infcompute.recipes").iterdir()
                if entry.name.endswith(".yaml") and "presets" in read_yaml(Path(entry.name), "", entry.read_text())
            )
            raise InputError(
                f"study recipe {path} not found, neither as a file (relative paths are read from {Path.cwd()}) nor "
                f"as a packaged recipe: check the path, or name a packaged study ({', '.join(packaged_studies)})"
            )
        text = packaged.read_text()
    else:
        text = path.read_text()
    values = read_yaml(path, "study recipe", text)
    if data:
        values.setdefault("run", {})["corpus"] = data
    try:
        return parse_study(values)
    except InputError as error:
        raise InputError(f"study recipe {path}: {error}") from None
