"""`run_study`: the study's phases (`hf_infcompute.study.pipeline`), then its report (`hf_infcompute.study.report`),
each depending on the state (`hf_infcompute.study.state`) and not on the other."""

from __future__ import annotations

from pathlib import Path

from hf_infcompute.method import RECIPES
from hf_infcompute.study.pipeline import Study, search_grid
from hf_infcompute.study.progress import StudyProgress, after_searches_estimate, planned_runs
from hf_infcompute.study.report import write_study_report
from hf_infcompute.study.spec import StudySpec
from hf_infcompute.study.state import StudyState, load_report_state
from hf_infcompute.workers import WorkerSlot


def run_study(spec: StudySpec, output_dir: str | Path, slot: WorkerSlot | None = None) -> StudyState:
    """Run (or resume) every phase of `spec` into `output_dir` and write its report; returns the study state.

    Several workers (`slot`, e.g. one per GPU under `accelerate launch`) share the searches and the members;
    worker 0 distils, evaluates and writes the report.
    """
    from hf_infcompute.training.progress import follow_runs  # the training stack loads when a study runs

    study = Study(spec, output_dir, slot)
    grids = {recipe: search_grid(spec, recipe)[0] for recipe in RECIPES}
    progress = StudyProgress(output_dir, planned_runs(spec, grids), spec.name, slot.world_size if slot else 1)
    with follow_runs(progress):  # a line per run, not log dicts
        state = study.run_all(searches_done=lambda: progress.replan(after_searches_estimate(spec)))
    if study.is_lead:  # from the state as saved, so that `--report-only` writes the same report
        write_study_report(spec, output_dir, load_report_state(output_dir))
    return state
