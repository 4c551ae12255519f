"""`run_study`: the paper's study on one corpus, phase by phase, every run resumable and recorded.

1. standard recipe (weight decay 0.1): locally optimal LR and epochs per preset, at every token budget;
2. regularized recipe: locally optimal LR, epochs and weight decay per preset at the main budget;
3. ensembles: K members per preset for each member rule, the rule chosen by its K -> inf asymptote (the K-curves);
4. distillation: the K-member ensemble and the best single model each teach a student of the same size, one per
   weight decay candidate (the best is reported), and optionally a token-level student of the ensemble; every worker
   samples its share of each teacher's synthetic corpus (vLLM where installed), the lead trains the students;
5. optional downstream benchmarks;
keeping what each found in `study.json` (`hf_infcompute.study.state`). A killed study resumes: finished runs are never
trained again.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from hf_infcompute.errors import InputError, raise_if_out_of_memory
from hf_infcompute.method import STANDARD_WEIGHT_DECAY
from hf_infcompute.records import resolved_paths
from hf_infcompute.search import SearchGrid, SearchResult, SweepStore, coordinate_descent, for_recipe
from hf_infcompute.search.grid import LEARNING_RATE, NUM_TRAIN_EPOCHS, WEIGHT_DECAY
from hf_infcompute.search.pretrain_objective import FreshSeedObjective, PretrainObjective
from hf_infcompute.search.tie_break import TieBreak, break_tie, continue_past_edge
from hf_infcompute.study.folder import claim_study_folder
from hf_infcompute.study.search_plan import CONFIGURED_START, SearchNode, search_nodes, start_sources, walk_order
from hf_infcompute.study.spec import SearchSpec, StudySpec
from hf_infcompute.study.state import (
    STATE_FILE,
    BenchmarkState,
    DistillationState,
    EnsembleState,
    Failure,
    SearchState,
    StudentState,
    StudyState,
    previous_sessions,
    search_key,
)
from hf_infcompute.workers import WorkerSlot, is_lead, take_every_core

if TYPE_CHECKING:  # the training stack loads when a run is built, not when a study is read
    from hf_infcompute.training.config import RunConfig

logger = logging.getLogger(__name__)

# Used when a study names no corpus and the Hub is reachable: a public, deduplicated, quality-filtered web sample.
DEFAULT_CORPUS = {"corpus": "HuggingFaceFW/fineweb-edu", "corpus_config": "sample-10BT", "streaming": True}


def resolve_corpus(spec: StudySpec) -> dict[str, Any]:
    """The run settings with a corpus: the study's own, or the default hub dataset when online."""
    run = dict(spec.run)
    if run.get("corpus"):
        return run
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise InputError(
            "no corpus given and the Hub is offline: pass local files with --data PATH (e.g. --data "
            f"../shared/data/pretrain), or go online to use the default hub dataset {DEFAULT_CORPUS['corpus']}"
        )
    val_sequences = run.get("val_sequences", 64)
    held_out_tokens = (val_sequences + (run.get("test_sequences") or val_sequences)) * run.get("seq_len", 256)
    return {**DEFAULT_CORPUS, "max_corpus_tokens": 2 * (max(spec.budgets) + held_out_tokens), **run}


def search_start(grid: Any, search: SearchSpec, recipe: str) -> dict[str, Any]:
    if not search.start:
        return grid.center()
    names = [LEARNING_RATE, NUM_TRAIN_EPOCHS] + ([WEIGHT_DECAY] if recipe == "regularized" else [])
    start = dict(zip(names, search.start))
    if recipe == "standard":
        start[WEIGHT_DECAY] = STANDARD_WEIGHT_DECAY
    return grid.canonical(start)


def search_recipe(
    spec: StudySpec,
    run: dict[str, Any],
    recipe: str,
    budget: int,
    preset: str,
    output_dir: Path,
    start: dict[str, Any] | None = None,
) -> tuple[SearchResult, SearchGrid]:
    """Locally optimal hyperparameters of `recipe` for (`budget`, `preset`) from `start` (default: the study's),
    and the grid searched (extended past an edge where the optimum sat on it); every point is a recorded run."""
    grid, configured = search_grid(spec, recipe)
    if start is not None:  # another search's optimum, maybe past this grid's edge where that search extended it
        grid = grid.including(start)
    start = configured if start is None else grid.canonical(start)
    extend_edges = search_spec(spec, recipe).extend_edges
    objective = PretrainObjective(study_run(run, recipe, budget, preset), output_dir)
    store = SweepStore(sweep_dir(output_dir, recipe, budget, preset))
    store.bind(objective.binding(grid.names))
    result = coordinate_descent(objective, grid, start, store, extend_edges=extend_edges)
    return result, result.grid or grid


def sweep_dir(output_dir: Path, recipe: str, budget: int, preset: str) -> Path:
    return output_dir / "sweeps" / f"{recipe}-{preset}-D{budget}"


def search_spec(spec: StudySpec, recipe: str) -> SearchSpec:
    return spec.standard if recipe == "standard" else spec.regularized


def search_grid(spec: StudySpec, recipe: str) -> tuple[SearchGrid, dict[str, Any]]:
    """The grid and the start of a study's search of `recipe` (the one place reading the study's search fields)."""
    search = search_spec(spec, recipe)
    grid = for_recipe(
        recipe,
        learning_rates=search.learning_rate,
        epochs=search.num_train_epochs,
        weight_decays=search.weight_decay if recipe == "regularized" else None,
    )
    return grid, search_start(grid, search, recipe)


def study_run(run: dict[str, Any], recipe: str, token_budget: int, preset: str) -> RunConfig:
    """The run of `recipe` for (`token_budget`, `preset`) on the study's shared settings `run` (its YAML `run:`)."""
    from hf_infcompute.training.config import parse_run_config

    return parse_run_config({**run, "recipe": recipe, "token_budget": token_budget, "preset": preset})


class Study:
    """Runs the phases of a `StudySpec` into `output_dir`, keeping what each phase found in `study.json`."""

    def __init__(self, spec: StudySpec, output_dir: str | Path, slot: WorkerSlot | None = None) -> None:
        self.spec = spec
        self.output_dir = Path(output_dir)
        self.slot = slot
        self.run = resolve_corpus(spec)
        # Wall time adds up over the sessions of a resumed study; each save counts this one up to now.
        sessions, self._earlier_wall_time_s = previous_sessions(self.output_dir)
        self.state = StudyState(
            name=spec.name,
            corpus=self.run["corpus"],
            corpus_config=self.run.get("corpus_config"),
            searches={},
            ensembles={},
            distillation={},
            benchmarks={},
            failures=[],
            sessions=sessions + 1,
            wall_time_s=self._earlier_wall_time_s,
        )
        self._started = time.perf_counter()
        # The member rule each ensemble chose, as every worker saw it (helpers record no ensemble state).
        self._member_rules: dict[str, str] = {}
        self._synthetic: dict[str, Path] = {}  # teacher kind -> its finished synthetic corpus

    def save(self) -> None:
        if self.is_lead:  # helpers hold partial state; the lead's is the study's
            wall_time_s = self._earlier_wall_time_s + time.perf_counter() - self._started
            self.state = dataclasses.replace(self.state, wall_time_s=wall_time_s)
            self.state.save(self.output_dir / STATE_FILE)

    def note_failure(self, phase: str, error: Exception) -> None:
        logger.error("%s failed: %s", phase, error)
        self.state.failures.append(Failure(phase, str(error)))

    @property
    def is_lead(self) -> bool:
        """Worker 0 (or a lone process) records ensembles, distils and reports; the others help train."""
        return is_lead(self.slot)

    def check_runs(self) -> None:
        """Parse the run of every search before anything trains, so a bad `run:` key stops the study at once."""
        for node in search_nodes(self.spec):
            try:
                study_run(self.run, node.recipe, node.token_budget, node.preset)
            except InputError as error:
                raise InputError(f"study {self.spec.name}, `run:` section: {error}") from None

    def run_all(self, searches_done: Callable[[], None] | None = None) -> StudyState:
        """Every phase in order; `searches_done` is called once the searches are over (e.g. to re-plan progress)."""
        self.check_runs()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        claim_study_folder(self.spec, self.output_dir)
        self.searches()
        if searches_done is not None:
            searches_done()
        self.ensembles()
        self.sampling()
        if not self.is_lead:
            return self.state
        take_every_core(self.slot)  # the other workers have trained their last members and sampled their shards
        self.distillation()
        if self.spec.benchmarks.enabled:
            self.benchmarks()
        self.save()
        return self.state

    def search_starts(self, node: SearchNode) -> dict[str, dict[str, Any] | None]:
        """The points `node`'s search starts from (`search_plan.start_sources`): label -> point, None for the
        study's start; a source search that found no point is left out."""
        starts: dict[str, dict[str, Any] | None] = {}
        for label, source in start_sources(self.spec, node).items():
            if source is None:
                starts[label] = None
                continue
            found = self.state.searches.get(search_key(source.recipe, source.preset, source.token_budget))
            if found is not None and found.point is not None:
                starts[label] = found.point
        return starts or {CONFIGURED_START: None}

    def search_order(self) -> list[SearchNode]:
        """Every search in the order this worker walks it (`search_plan.walk_order`): workers of odd rank walk from
        the end. Each worker walks every search (from the shared results where another worker evaluated them), so
        every worker holds every optimum and starts every search from the same points."""
        return walk_order(self.spec, from_end=self.slot is not None and self.slot.rank % 2 == 1)

    def searches(self) -> None:
        for node in self.search_order():
            recipe, budget, preset = node.recipe, node.token_budget, node.preset
            key = search_key(recipe, preset, budget)
            outcomes = {}
            for label, start in self.search_starts(node).items():
                logger.info("search %s from the %s", key, label)
                outcomes[label] = search_recipe(self.spec, self.run, recipe, budget, preset, self.output_dir, start)
            won = min(outcomes, key=lambda label: outcomes[label][0].best_loss)
            result, grid = outcomes[won]
            tie, grid = self.tie_break(node, result, grid)
            best = result.best if tie is None else tie.chosen
            self.state.searches[key] = SearchState(
                recipe=recipe,
                preset=preset,
                token_budget=budget,
                point=None if best is None else dict(best.point),
                val_loss=math.inf if best is None else best.loss,
                locally_optimal=result.locally_optimal,
                run_id=best.extra.get("run_id") if best else None,
                model_dir=resolved_paths(best.extra, self.output_dir).get("model_dir") if best else None,
                evaluations=result.evaluations,
                reused=result.reused,
                grid_edges=grid.edges(best.point) if best else [],
                start=won,
                start_losses={label: outcome[0].best_loss for label, outcome in outcomes.items()},
                chosen_by="seed means" if tie is not None and tie.changed else "search",
                tie_break={} if tie is None else tie.fresh_losses,
                compared_run_ids=[] if tie is None else tie.compared_run_ids,
            )
            self.save()

    def tie_break(self, node: SearchNode, result: SearchResult, grid: SearchGrid) -> tuple[TieBreak | None, SearchGrid]:
        """The search's optimum and its neighbours within the seed noise re-trained at fresh seeds, the choice made on
        their means and, where the search extends its edges, carried past an edge it sits on
        (`hf_infcompute.search.tie_break`); None when the study turns tie-breaks off or nothing is close. Returns
        the grid with any value the continuation added."""
        search = search_spec(self.spec, node.recipe)
        if not search.tie_break_seeds:
            return None, grid
        run = study_run(self.run, node.recipe, node.token_budget, node.preset)
        objective = PretrainObjective(run, self.output_dir)
        sweep = sweep_dir(self.output_dir, node.recipe, node.token_budget, node.preset)
        search_store, seeds_store = SweepStore(sweep), SweepStore(sweep.with_name(f"{sweep.name}-seeds"))
        seeds_store.bind(objective.binding(grid.names))
        fresh = FreshSeedObjective(run, self.output_dir)
        tie = break_tie(fresh, result, seeds_store, search.tie_break_seeds, self.seed_sd())
        if tie is None or not search.extend_edges:
            return tie, grid
        # `search_recipe` bound the search's store to these settings before its descent
        return continue_past_edge(objective, fresh, tie, grid, search_store, seeds_store, search.tie_break_seeds)

    def seed_sd(self) -> float | None:
        """The seed sd of a searched point measured so far (validation, fresh seeds only: `PointNoise.pool`), for
        tie-breaks; None before any point has two fresh seeds."""
        from hf_infcompute.records import load_runs
        from hf_infcompute.study.seed_noise import PointNoise

        noise = PointNoise.of(load_runs(self.output_dir), self.state.selected_run_ids()).pool
        return None if noise is None else noise.sd

    def optimum(self, preset: str) -> SearchState:
        """The regularized recipe's locally optimal point for `preset` at the main budget."""
        return self.state.search("regularized", preset, self.spec.token_budget)

    def optimum_run(self, preset: str) -> RunConfig:
        """The run at the regularized recipe's locally optimal point for `preset` at the main budget."""
        run = study_run(self.run, "regularized", self.spec.token_budget, preset)
        return run.replace(**self.optimum(preset).point)

    def ensembles(self) -> None:
        from hf_infcompute.ensemble.members import train_ensemble
        from hf_infcompute.records import load_runs
        from hf_infcompute.scaling.analysis import member_losses, member_rule_limit
        from hf_infcompute.scaling.joint import choose_member_rule

        spec = self.spec.ensemble
        for preset in spec.presets or self.spec.presets:
            optimum = self.optimum(preset)
            if optimum.point is None:
                continue
            run = self.optimum_run(preset)
            try:
                curves, trained = {}, {}
                for rule in spec.member_candidates:
                    member_rule = "paper" if rule == "paper" else "none"
                    trained[rule] = train_ensemble(
                        run, self.output_dir, spec.k, member_rule=member_rule, slot=self.slot
                    )
                    curves[rule] = _ensemble_curve(trained[rule], self.output_dir, run, spec.k, member_rule)
                losses = member_losses(load_runs(self.output_dir))
                limits = {rule: member_rule_limit(curve, "val_loss", losses) for rule, curve in curves.items()}
                chosen, chosen_by = choose_member_rule(limits)
                tuning = {rule: limit.E for rule, limit in limits.items()}
                self._member_rules[preset] = "paper" if chosen == "paper" else "none"
                records = trained[chosen]
            except (InputError, RuntimeError) as error:
                raise_if_out_of_memory(error, f"ensemble {preset}")
                self.note_failure(f"ensemble {preset}", error)
                continue
            if not self.is_lead:
                continue
            full = records[-1]
            self.state.ensembles[preset] = EnsembleState(
                tuning=tuning,
                tuning_intervals={
                    rule: None if limit.interval is None else [float(v) for v in limit.interval]
                    for rule, limit in limits.items()
                },
                chosen=chosen,
                chosen_by=chosen_by,
                k=spec.k,
                val_loss=full["val_loss"],
                member_val_loss_mean=full["member_val_loss_mean"],
                model_dir=full["model_dir"],
                run_id=full["run_id"],
            )
            self.save()

    def teachers(self) -> dict[str, tuple[str, float]]:
        """The distillation teachers (kind -> model folder, validation loss): the K-member ensemble of the
        distillation preset and, for self-distillation, its best single model. A helper worker reads the ensemble
        from the lead's record, waiting for it."""
        from hf_infcompute.ensemble.members import planned_ensemble_id, wait_for_members

        preset = self.spec.distillation_preset
        optimum = self.optimum(preset)
        if optimum.point is None:
            return {}
        teachers = {}
        ensemble = self.state.ensembles.get(preset)
        if ensemble is not None:
            teachers["ensemble"] = (ensemble.model_dir, ensemble.val_loss)
        elif not self.is_lead and preset in self._member_rules:
            run = self.optimum_run(preset)
            ensemble_id = planned_ensemble_id(run, self.spec.ensemble.k, member_rule=self._member_rules[preset])
            record = wait_for_members(self.output_dir, [ensemble_id])[0]
            teachers["ensemble"] = (resolved_paths(record, self.output_dir)["model_dir"], record["val_loss"])
        if self.spec.distillation.self_distillation:
            teachers["self"] = (optimum.model_dir, optimum.val_loss)
        return teachers

    def synthetic_dir(self, teacher: str) -> Path:
        return self.output_dir / "synthetic" / f"{teacher}-{self.spec.distillation_preset}"

    def sampling(self) -> None:
        """Every worker samples its share of each teacher's synthetic corpus (its own shards, each drawn from its own
        seed) with vLLM where installed; the lead then waits until every corpus is complete."""
        from hf_infcompute.generation import generate_synthetic, wait_for_synthetic
        from hf_infcompute.generation.backends import default_backend
        from hf_infcompute.generation.synthetic import shared_shard_tokens

        preset = self.spec.distillation_preset
        if self.optimum(preset).point is None:
            return
        tokens = self.spec.distillation.synthetic_tokens or 2 * self.spec.token_budget
        seq_len = self.optimum_run(preset).data.seq_len
        rank, world_size = (self.slot.rank, self.slot.world_size) if self.slot else (0, 1)
        backend = default_backend()
        sampled = []
        for name, (teacher, _) in self.teachers().items():
            folder = self.synthetic_dir(name)
            try:
                generate_synthetic(
                    teacher,
                    folder,
                    num_tokens=tokens,
                    seq_len=seq_len,
                    shard_tokens=shared_shard_tokens(tokens, seq_len),
                    seed=0,
                    backend=backend,
                    rank=rank,
                    world_size=world_size,
                )
            except (InputError, RuntimeError) as error:
                raise_if_out_of_memory(error, f"sampling from {name}")
                self.note_failure(f"synthetic data from {name}", error)
                continue
            sampled.append(name)
        if self.is_lead:
            for name in sampled:
                wait_for_synthetic(self.synthetic_dir(name))
                self._synthetic[name] = self.synthetic_dir(name)

    def distillation(self) -> None:
        """Students of the distillation preset: one per teacher (and token-level KL) and weight decay candidate."""
        preset = self.spec.distillation_preset
        spec = self.spec.distillation
        optimum = self.optimum(preset)
        ensemble = self.state.ensembles.get(preset)
        if optimum.point is None:
            return
        base = self.optimum_run(preset)
        teachers = self.teachers()
        plans = {  # student kind -> (teacher folder, teacher loss, the student's own settings)
            name: (
                *teachers[name],
                {"synthetic_data": str(folder), "synthetic_fraction": spec.synthetic_fraction},
            )
            for name, folder in self._synthetic.items()
        }
        if spec.token_level and ensemble:
            plans["token"] = (
                ensemble.model_dir,
                ensemble.val_loss,
                {"kd_mode": "token", "teacher": ensemble.model_dir},
            )
        weight_decays = spec.student_weight_decays(optimum.point[WEIGHT_DECAY])
        for name, (teacher, teacher_loss, extra) in plans.items():
            tried = self._students(name, base, extra, weight_decays)
            if not tried:
                continue
            best = min(tried, key=lambda student: student.val_loss)
            self.state.distillation[name] = DistillationState(
                preset=preset,
                teacher=teacher,
                kd_mode=extra.get("kd_mode", "sequence"),
                student_val_loss=best.val_loss,
                weight_decay=best.weight_decay,
                run_id=best.run_id,
                model_dir=best.model_dir,
                status="finished",
                teacher_val_loss=teacher_loss,
                single_val_loss=optimum.val_loss,
                students=tried,
            )
            self.save()

    def _students(
        self, name: str, base: RunConfig, distillation: dict[str, Any], weight_decays: list[float]
    ) -> list[StudentState]:
        """Train (or find recorded) one student of `base` per weight decay, with the `distillation` settings of
        `DistillationTrainingArguments`; the finished ones."""
        from hf_infcompute.distillation import DistillationTrainingArguments, distill

        finished = []
        for weight_decay in weight_decays:
            try:
                student = base.replace(DistillationTrainingArguments, weight_decay=weight_decay, **distillation)
                record = distill(student, self.output_dir)
            except (InputError, RuntimeError) as error:
                raise_if_out_of_memory(error, f"student of {name} at weight decay {weight_decay:g}")
                self.note_failure(f"student of {name} at weight decay {weight_decay:g}", error)
                continue
            if record["status"] != "finished":
                self.note_failure(
                    f"student of {name} at weight decay {weight_decay:g}",
                    RuntimeError(f"run {record['run_id']} ended {record['status']}"),
                )
                continue
            finished.append(
                StudentState(
                    weight_decay=weight_decay,
                    val_loss=record["val_loss"],
                    run_id=record["run_id"],
                    model_dir=record.get("model_dir"),
                )
            )
        return finished

    def benchmarks(self) -> None:
        from hf_infcompute.evaluation import evaluate_model

        spec = self.spec.benchmarks
        models = {
            f"regularized {p}": Path(self.optimum(p).model_dir) for p in self.spec.presets if self.optimum(p).model_dir
        }
        models.update({f"ensemble {p} K={e.k}": Path(e.model_dir) for p, e in self.state.ensembles.items()})
        models.update(
            {f"student ({name})": Path(d.model_dir) for name, d in self.state.distillation.items() if d.model_dir}
        )
        for label, path in models.items():
            result = evaluate_model(
                path,
                spec.tasks,
                data_dir=spec.data_dir,
                limit=spec.limit,
                label=label,
                output_dir=self.output_dir / "benchmarks",
            )
            self.state.benchmarks[label] = BenchmarkState(
                average=result.average,
                model_dir=str(path),
                scores={t: result.headline(t).value for t in result.tasks},
            )
            self.save()


def _ensemble_curve(records: list[dict], output_dir: Path, run: RunConfig, k: int, member_rule: str) -> pd.DataFrame:
    """The ensembles of the first 1..k members (k, val_loss, members): from this process's records, or (on helper
    workers) the lead's, once written."""
    from hf_infcompute.ensemble.members import planned_ensemble_id, wait_for_members

    if records:
        found = {r["k"]: r for r in records if r.get("kind") == "ensemble"}
        ensembles = [found[size] for size in range(1, k + 1)]
    else:
        ids = [planned_ensemble_id(run, size, member_rule=member_rule) for size in range(1, k + 1)]
        ensembles = wait_for_members(output_dir, ids)
    return pd.DataFrame({field: [r.get(field) for r in ensembles] for field in ("k", "val_loss", "members")})
