"""The paper's whole study on one corpus: searches, ensembles, distillation, scaling fits and a report."""

from hf_infcompute.study.pipeline import Study
from hf_infcompute.study.run import run_study
from hf_infcompute.study.spec import StudySpec, load_study, parse_study
from hf_infcompute.study.state import StudyState

__all__ = ["Study", "StudySpec", "StudyState", "load_study", "parse_study", "run_study"]
