"""The study's analysis in the trackers of its `report_to`: one "analysis" entry per tracker, beside the study's runs
(the naming of `hf_infcompute.training.tracking`), holding what the report found, not recomputed:

- the findings (claim, verdict and the evidence: each gap with its 95% interval) as a table;
- every fitted asymptote E (`ScalingReport.key_asymptotes`) and finite data-efficiency multiplier as numbers;
- the figures of the study's `figures/` folder as images.

tensorboard writes into `<output_dir>/tb/<study>/analysis`; wandb opens the run `<study>-analysis` (job type
`analysis`) in the group `<study>/analysis` of the training runs' project; trackio logs the run `<study>-analysis` into
the study's project. Each tracker is imported only when named; one not installed is skipped with a warning.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hf_infcompute.scaling.analysis import ScalingReport
from hf_infcompute.scaling.report import markdown_table
from hf_infcompute.study.findings import Finding

logger = logging.getLogger(__name__)

ANALYSIS = "analysis"
FINDING_COLUMNS = ["claim", "verdict", "evidence"]
WANDB_DEFAULT_PROJECT = "huggingface"  # WandbCallback's project unless WANDB_PROJECT is set


def trackers_of(report_to: str | Sequence[str] | None) -> list[str]:
    """The trackers `report_to` names, resolved as `TrainingArguments` does ("all": every one installed)."""
    if report_to in (None, "none", ["none"]):
        return []
    if report_to in ("all", ["all"]):
        from transformers.integrations import get_available_reporting_integrations

        return list(get_available_reporting_integrations())
    return [report_to] if isinstance(report_to, str) else list(report_to)


def scalars(scaling: ScalingReport) -> dict[str, float]:
    """The report's numeric results by name: each asymptote E and each finite data-efficiency multiplier."""
    values = {f"asymptote/{a.analysis}": float(a.E) for a in scaling.key_asymptotes()}
    for row in scaling.efficiency.itertuples() if len(scaling.efficiency) else []:
        if math.isfinite(row.efficiency):
            values[f"data_efficiency/{row.series}/D{row.token_budget}"] = float(row.efficiency)
    return values


def finding_rows(found: Sequence[Finding]) -> list[list[str]]:
    return [[f.claim, f.verdict, f.evidence] for f in found]


def _tensorboard(
    study: str, output_dir: Path, found: Sequence[Finding], values: dict[str, float], figures: Sequence[Path]
) -> None:
    from matplotlib.image import imread
    from torch.utils.tensorboard import SummaryWriter

    from hf_infcompute.training.tracking import TENSORBOARD_DIRNAME

    writer = SummaryWriter(log_dir=str(output_dir / TENSORBOARD_DIRNAME / study / ANALYSIS))
    writer.add_text("findings", "\n".join(markdown_table(FINDING_COLUMNS, finding_rows(found))), 0)
    for name, value in values.items():
        writer.add_scalar(name, value, 0)
    for figure in figures:
        writer.add_image(f"figures/{figure.stem}", imread(figure)[..., :3], 0, dataformats="HWC")
    writer.close()


def _wandb(study: str, found: Sequence[Finding], values: dict[str, float], figures: Sequence[Path]) -> None:
    import wandb

    from hf_infcompute.training.tracking import finish_open_wandb_run

    finish_open_wandb_run()
    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", WANDB_DEFAULT_PROJECT),
        group=f"{study}/{ANALYSIS}",
        name=f"{study}-{ANALYSIS}",
        job_type=ANALYSIS,
    )
    media: dict[str, Any] = {"findings": wandb.Table(columns=FINDING_COLUMNS, data=finding_rows(found))}
    media.update({f"figures/{figure.stem}": wandb.Image(str(figure)) for figure in figures})
    run.log(media)
    run.summary.update(values)
    run.finish()


def _trackio(
    study: str, project: str, found: Sequence[Finding], values: dict[str, float], figures: Sequence[Path]
) -> None:
    import trackio

    grouped = {"group": ANALYSIS} if "group" in inspect.signature(trackio.init).parameters else {}  # newer releases
    trackio.init(project=project, name=f"{study}-{ANALYSIS}", **grouped)
    trackio.log(
        {
            **values,
            "findings": trackio.Table(columns=FINDING_COLUMNS, data=finding_rows(found)),
            **{f"figures/{figure.stem}": trackio.Image(str(figure)) for figure in figures},
        }
    )
    trackio.finish()


def log_analysis(
    run: dict[str, Any],
    study: str,
    output_dir: str | Path,
    found: Sequence[Finding],
    scaling: ScalingReport,
    figures: Sequence[Path],
) -> list[str]:
    """Log the study's findings, fits and `figures` (PNG files) to every tracker of `run["report_to"]` (the study's
    `run:` settings); returns the trackers logged to."""
    from hf_infcompute.training.tracking import trackio_project

    output_dir = Path(output_dir)
    values = scalars(scaling)
    project = trackio_project(run.get("project"), study)  # the study's runs' project
    writers: dict[str, Callable[[], None]] = {
        "tensorboard": lambda: _tensorboard(study, output_dir, found, values, figures),
        "wandb": lambda: _wandb(study, found, values, figures),
        "trackio": lambda: _trackio(study, project, found, values, figures),
    }
    logged = []
    for tracker in trackers_of(run.get("report_to")):
        if tracker not in writers:
            continue  # another of transformers' integrations: it gets the runs, not this analysis
        try:
            writers[tracker]()
        except ModuleNotFoundError as error:
            if (error.name or "").split(".")[0] != tracker:
                raise
            logger.warning(
                "report_to names %s, which is not installed (pip install %s): the study's analysis is not logged to it",
                tracker,
                tracker,
            )
            continue
        logged.append(tracker)
    return logged
