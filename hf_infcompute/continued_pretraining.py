"""Continued pre-training (CPT) of an existing causal LM on a scarce domain corpus, with the paper's levers.

K members continue the base model on the same domain tokens in different data orders (small batch, several epochs,
optional LoRA), then the members, their logit ensemble and their weight-averaged soup are scored against the base
model on downstream tasks (the math tasks by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_infcompute.ensemble.members import member_config, record_curve, train_ensemble, train_members
from hf_infcompute.errors import InputError
from hf_infcompute.evaluation import EvalResult, evaluate_model
from hf_infcompute.evaluation.results import comparison_markdown, comparison_rows
from hf_infcompute.records import iter_records, write_json_atomic, write_text_atomic
from hf_infcompute.training.config import RunConfig
from hf_infcompute.workers import WorkerSlot, end_launch

REPORT_STEM = "cpt_scores"


@dataclass(frozen=True)
class CPTResult:
    """The new records (members' ensembles and soup) and one benchmark row per scored model."""

    records: list[dict[str, Any]]
    scores: list[dict[str, Any]]
    report: Path | None


def continued_pretraining(
    run: RunConfig,
    output_dir: str | Path,
    *,
    k: int = 4,
    vary: str = "data",
    tasks: str | list[str] = "math",
    eval_data_dir: str | None = None,
    eval_limit: int | float | None = None,
    max_gen_toks: int | None = None,
    evaluate: bool = True,
    slot: WorkerSlot | None = None,
) -> CPTResult:
    """Continue `run.model.base_model` with K members, build their ensemble and soup, and score everything.

    `run` holds the usual run settings (corpus, token_budget, seq_len, num_train_epochs, learning_rate, ...;
    `lora_r > 0` for LoRA). Members differ in data order by default (`vary="data"`: same starting weights).
    Returns the records and the benchmark rows; the table goes to `output_dir/cpt_scores.{json,md}`.

    Under a multi-process launch, either each member trains data-parallel (or sharded) on every process (`slot` None):
    then every rank trains all members, the launch ends on every rank (`end_launch`), and rank 0 alone builds the
    K-curve and the soup and scores in one plain process while the others return empty results; or each independent
    worker (`slot`) trains its own members and worker 0 goes on once all are recorded.
    """
    if not run.model.base_model:
        raise InputError("continued pre-training needs `base_model` (a causal LM folder or hub id)")
    if slot is None:
        members = train_members(run, output_dir, k, vary=vary)
        if not end_launch():
            return CPTResult(records=[], scores=[], report=None)
        records = record_ensemble_and_soup(run, members, output_dir, vary=vary)
    else:
        records = train_ensemble(run, output_dir, k, vary=vary, soup=True, slot=slot)
    if not records or not evaluate:
        return CPTResult(records=records, scores=[], report=None)
    ensemble = next(r for r in records if r["kind"] == "ensemble" and r["k"] == k)
    soup = next(r for r in records if r["kind"] == "soup")
    by_id = {r["run_id"]: r for r in iter_records(output_dir) if r["run_id"] in ensemble["members"]}
    members = [by_id[run_id] for run_id in ensemble["members"]]  # member order, not record-store order
    candidates = [("base", run.model.base_model, None)]
    candidates += [(f"member {m['member_index']}", m["model_dir"], m["val_loss"]) for m in members]
    candidates += [
        (f"ensemble K={k}", ensemble["model_dir"], ensemble["val_loss"]),
        (f"soup K={k}", soup["model_dir"], soup["val_loss"]),
    ]
    results: list[EvalResult] = [
        evaluate_model(path, tasks, data_dir=eval_data_dir, limit=eval_limit, max_gen_toks=max_gen_toks, label=label)
        for label, path, _ in candidates
    ]
    rows = comparison_rows(results, [loss for _, _, loss in candidates])
    report = Path(output_dir) / f"{REPORT_STEM}.md"
    write_json_atomic(report.with_suffix(".json"), rows)
    write_text_atomic(report, comparison_markdown(rows))
    return CPTResult(records=records, scores=rows, report=report)


def record_ensemble_and_soup(
    run: RunConfig, members: list[dict[str, Any]], output_dir: str | Path, *, vary: str
) -> list[dict[str, Any]]:
    """Record the K-curve and the soup of data-parallel `members` (their records, in order) in this one process.

    The members' records are used as they are: their run ids count every process of the launch in the batch size,
    so a single process would not find them again by their settings.
    """
    failed = [m["run_id"] for m in members if m["status"] != "finished"]
    if failed:
        raise InputError(
            f"members failed to train ({', '.join(failed)}); see their records and lower the learning "
            "rate, then delete those records to retrain"
        )
    run = member_config(run, 0, vary=vary)
    rule = {"member_rule": "none", "vary": vary}
    return record_curve(run, members, output_dir, combine="logits", soup=True, rule=rule)
