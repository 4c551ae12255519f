"""What a study has found, as typed records: the contents of its `study.json`.

The pipeline fills a `StudyState` phase by phase and saves it after each step; the report reads it back. Every field
is written, so a study.json that lacks one was written by another version and is refused, never half read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_infcompute.errors import InputError
from hf_infcompute.readers import read_json, read_rebuildable_json
from hf_infcompute.records import relative_paths, resolved_paths, write_json_atomic

STATE_FILE = "study.json"
# Raised whenever what study.json holds changes, so that a report is never written from a state it cannot read.
STATE_FORMAT = 5
RERUN = "Run the study again without --report-only; finished runs are read back, not trained again"


def search_key(recipe: str, preset: str, token_budget: int) -> str:
    """Where the state keeps the search of `recipe` for (`preset`, `token_budget`)."""
    return f"{recipe}/{preset}/{token_budget}"


@dataclass(frozen=True)
class SearchState:
    """The locally optimal point one recipe's search found for (preset, token budget), and how it got there."""

    recipe: str
    preset: str
    token_budget: int
    point: dict[str, Any] | None  # None when no point could be evaluated
    val_loss: float
    locally_optimal: bool
    run_id: str | None
    model_dir: str | None
    evaluations: int
    reused: int
    grid_edges: list[str]  # the axes on which `point` sits at the grid's edge
    start: str  # the start the reported point was reached from
    start_losses: dict[str, float]  # each start searched from -> the loss its search ended at
    chosen_by: str  # "search" (its locally optimal point), or "seed means" (a tie-break chose a neighbour)
    tie_break: dict[str, list[float]]  # each point re-trained at fresh seeds (`point_label`) -> their val losses
    compared_run_ids: list[str]  # the seed-0 runs of those points: picked for landing close, so no seed-sd sample


@dataclass(frozen=True)
class EnsembleState:
    """The K-member ensemble of one preset, and the member rule chosen by its K -> inf asymptote."""

    tuning: dict[str, float]  # member candidate -> its K -> inf asymptote on validation (`joint.member_limit`)
    tuning_intervals: dict[str, list[float] | None]  # each asymptote's 95% interval (None: unknown member noise)
    chosen: str
    k: int
    val_loss: float
    member_val_loss_mean: float
    model_dir: str
    run_id: str
    chosen_by: str = ""  # why `chosen` (`joint.choose_member_rule`); empty in studies that predate the reason


@dataclass(frozen=True)
class StudentState:
    """One trained student: its weight decay and validation loss."""

    weight_decay: float
    val_loss: float
    run_id: str
    model_dir: str | None


@dataclass(frozen=True)
class DistillationState:
    """The students of one teacher (or mode): the best of them, and every one trained."""

    preset: str
    teacher: str
    kd_mode: str
    student_val_loss: float
    weight_decay: float
    run_id: str
    model_dir: str | None
    status: str
    teacher_val_loss: float
    single_val_loss: float  # the best single model of the student's size
    students: list[StudentState]


@dataclass(frozen=True)
class BenchmarkState:
    """One model's downstream scores: the average and the headline value per task."""

    average: float
    model_dir: str
    scores: dict[str, float]


@dataclass(frozen=True)
class Failure:
    phase: str
    error: str


@dataclass(frozen=True)
class StudyState:
    """Everything a study found, keyed as in study.json. The pipeline adds entries to the mappings as phases finish;
    `corpus` and `corpus_config` name the data every run trained on, as resolved when the study started."""

    name: str
    corpus: str
    corpus_config: str | None
    searches: dict[str, SearchState]
    ensembles: dict[str, EnsembleState]
    distillation: dict[str, DistillationState]
    benchmarks: dict[str, BenchmarkState]
    failures: list[Failure]
    sessions: int
    wall_time_s: float
    format: int = STATE_FORMAT

    def search(self, recipe: str, preset: str, token_budget: int) -> SearchState:
        return self.searches[search_key(recipe, preset, token_budget)]

    def selected_run_ids(self) -> set[str]:
        """The runs the searches picked for landing low (each optimum) or close to it (the points a tie-break
        compared): no sample of the seed noise."""
        return {run_id for s in self.searches.values() for run_id in (s.run_id, *s.compared_run_ids) if run_id}

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: Any, source: str = STATE_FILE) -> StudyState:
        """The state from `to_json`'s mapping; `InputError` naming `source` and the fix when a field is missing."""
        fields = _fields(cls, values, "", source)
        mappings = {"searches": SearchState, "ensembles": EnsembleState, "benchmarks": BenchmarkState}
        for name, record in mappings.items():
            fields[name] = {
                key: record(**_fields(record, entry, f"{name}[{key}].", source))
                for key, entry in _mapping(fields[name], name, source).items()
            }
        distillation = {}
        for key, entry in _mapping(fields["distillation"], "distillation", source).items():
            where = f"distillation[{key}]."
            entry = _fields(DistillationState, entry, where, source)
            entry["students"] = [
                StudentState(**_fields(StudentState, student, f"{where}students[{i}].", source))
                for i, student in enumerate(entry["students"])
            ]
            distillation[key] = DistillationState(**entry)
        fields["distillation"] = distillation
        fields["failures"] = [
            Failure(**_fields(Failure, failure, f"failures[{i}].", source))
            for i, failure in enumerate(fields["failures"])
        ]
        return cls(**fields)

    def save(self, path: str | Path) -> None:
        """Write the state to `path`, its folders relative to the study folder (`relative_paths`)."""
        write_json_atomic(path, relative_paths(self.to_json(), Path(path).parent))

    @classmethod
    def load(cls, path: str | Path) -> StudyState:
        """Read a study.json; `InputError` naming the file and the fix when it is of another format or lacks a field."""
        values = read_json(path, fix=f"delete it. {RERUN}, and it is rebuilt from them")
        if not isinstance(values, dict) or values.get("format") != STATE_FORMAT:
            raise InputError(f"{path} was written by an older hf-infcompute. {RERUN}")
        return cls.from_json(resolved_paths(values, Path(path).parent), str(path))


def _mapping(values: Any, where: str, source: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise InputError(
            f"{source}: `{where}` is not a mapping; the file was not written by this hf-infcompute. {RERUN}"
        )
    return values


def _fields(cls: type, values: Any, where: str, source: str) -> dict[str, Any]:
    """`values` as keyword arguments of `cls`: every field without a default present, no other key."""
    values = _mapping(values, where.rstrip(".") or "study", source)
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    required = {f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    missing, unknown = sorted(required - set(values)), sorted(set(values) - names)
    if missing or unknown:
        problem = (
            f"lacks {', '.join(f'`{where}{m}`' for m in missing)}"
            if missing
            else f"holds unknown {', '.join(f'`{where}{u}`' for u in unknown)}"
        )
        raise InputError(f"{source} {problem}: it was written by another version of hf-infcompute. {RERUN}")
    return dict(values)


def previous_sessions(output_dir: str | Path) -> tuple[int, float]:
    """(sessions, wall time in seconds) of the study already in `output_dir`, (0, 0.0) before it starts. Read leniently:
    a study.json of an older format must not stop the run that replaces it."""
    values = read_rebuildable_json(
        Path(output_dir) / STATE_FILE,
        "it is rebuilt from the records of the finished runs (its count of sessions and wall time start again)",
    )
    if values is None:
        return 0, 0.0
    sessions, wall_time_s = values.get("sessions", 1), values.get("wall_time_s", 0.0)
    valid = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (sessions, wall_time_s))
    return (int(sessions), float(wall_time_s)) if valid else (0, 0.0)


def load_report_state(output_dir: str | Path) -> StudyState:
    """The saved state of the study in `output_dir`; `InputError` naming the fix when there is none or it is
    outdated."""
    path = Path(output_dir) / STATE_FILE
    if not path.is_file():
        raise InputError(f"no study in {output_dir}: run it first, without --report-only")
    return StudyState.load(path)
