"""A micro study end to end on the real corpus: report tables match the store; a resumed study trains nothing."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import MICRO_STUDY_RUN

from hf_infcompute import load_runs
from hf_infcompute.errors import InputError
from hf_infcompute.study import load_study, parse_study, run_study
from hf_infcompute.study.pipeline import DEFAULT_CORPUS, Study, resolve_corpus
from hf_infcompute.study.report import write_study_report
from hf_infcompute.study.search_plan import start_sources
from hf_infcompute.study.state import STATE_FILE, load_report_state
from hf_infcompute.workers import WorkerSlot

MICRO = {
    "name": "micro",
    "run": MICRO_STUDY_RUN,
    "token_budget": 4096,
    "data_scaling_budgets": [1024, 2048],
    "presets": ["cpu-30k", "cpu-50k", "cpu-120k"],
    "standard": {
        "learning_rate": [3e-3],
        "num_train_epochs": [1, 2],
        "start": [3e-3, 1],
        "extend_edges": False,
        "tie_break_seeds": 0,
    },
    "regularized": {
        "learning_rate": [3e-3],
        "num_train_epochs": [1, 2],
        "weight_decay": [0.1, 0.8],
        "start": [3e-3, 1, 0.1],
        "extend_edges": False,
        "tie_break_seeds": 0,
    },
    "ensemble": {
        "k": 3,
        "member_candidates": ["optimum", "paper"],
        "presets": ["cpu-30k", "cpu-50k", "cpu-120k"],
    },
    "distillation": {
        "synthetic_tokens": 2048,
        "synthetic_fraction": 0.5,
        "weight_decay": ["optimum", 0.05],
        "token_level": True,
    },
    "report_resamples": 40,  # the study's default is 1000; 40 keeps the reports to seconds
}


def micro_spec(corpus_dir, cache_dir):
    spec = {**MICRO, "run": {**MICRO["run"], "corpus": str(corpus_dir), "cache_dir": str(cache_dir)}}
    return parse_study(spec)


def parse_table(markdown: str, heading: str) -> list[list[str]]:
    """The body rows of the first table under `heading`."""
    lines = markdown.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in table[2:]]


@pytest.fixture(scope="module")
def micro_study(tmp_path_factory, corpus_dir, cache_dir):
    output = tmp_path_factory.mktemp("study")
    spec = micro_spec(corpus_dir, cache_dir)
    state = run_study(spec, output)
    return spec, output, state


def test_micro_study_report_matches_the_results_store(micro_study):
    spec, output, state = micro_study
    report = (output / "report.md").read_text()
    runs = load_runs(output)
    pretrain = runs[(runs.kind == "pretrain") & (runs.status == "finished")]
    rows = parse_table(report, "## Best runs per recipe, budget and size (measured)")
    # both recipes at every budget
    assert len(rows) == pretrain.groupby(["recipe", "token_budget", "preset"]).ngroups == 2 * 3 * 3
    for recipe, budget, preset, _, _, _, _, val_loss, test_loss, run_id in rows:
        group = pretrain[
            (pretrain.recipe == recipe) & (pretrain.token_budget == int(budget)) & (pretrain.preset == preset)
        ]
        # chosen on validation, reported on test
        assert float(val_loss) == pytest.approx(group.val_loss.min(), abs=1e-4)
        assert run_id == group.loc[group.val_loss.idxmin(), "run_id"]
        assert float(test_loss) == pytest.approx(group.loc[group.val_loss.idxmin(), "test_loss"], abs=1e-4)
    ensembles = parse_table(report, "## Ensembles (measured)")
    for preset, _, k, logits, probs, gap, _ in ensembles:
        record = runs[(runs.kind == "ensemble") & (runs.preset == preset) & (runs.k == int(k))]
        assert float(logits) in [pytest.approx(v, abs=1e-4) for v in record.test_loss]
        # both combinations scored on the same rows, their gap with an interval
        assert float(probs) in [pytest.approx(v, abs=1e-4) for v in record["test_loss_by_combine.probs"]]
        assert re.fullmatch(r"[+-]\d\.\d{4} \[[+-]\d\.\d{4}, [+-]\d\.\d{4}\]", gap)
    # every run, ensemble and student keeps its per-row losses of both splits and their documents, all on the same
    # rows
    scored = runs[runs.kind.isin(["pretrain", "ensemble", "student"])]
    assert scored.val_sequence_losses.map(len).eq(spec.run["val_sequences"]).all()
    assert scored.test_sequence_losses.map(len).eq(spec.run["val_sequences"]).all()
    assert scored.test_sequence_documents.map(len).eq(spec.run["val_sequences"]).all()
    assert scored.validation_fingerprint.nunique() == 1 and scored.test_fingerprint.nunique() == 1
    assert "## Seed-to-seed noise (measured)" in report and "degrees of freedom" in report
    # the regularized searches at D started from the standard optimum and the neighbouring size's optimum (the first
    # size: the study's start), the others from the neighbouring budget's; the report says which start won
    for search in state.searches.values():
        if search.recipe != "regularized":
            continue
        first = (
            "neighbouring budget"
            if search.token_budget != spec.token_budget
            else "study's start"
            if search.preset == spec.presets[0]
            else "neighbouring size"
        )
        assert search.val_loss == min(search.start_losses.values())
        if search.token_budget != spec.token_budget:
            assert set(search.start_losses) == {first}
            continue
        assert set(search.start_losses) == {first, "standard optimum"}
        standard = state.search("standard", search.preset, search.token_budget)
        assert search.val_loss <= standard.val_loss + 1e-6
    assert "## Where the regularized searches started" in report
    # with two values per axis every optimum sits on the grid's edge, and the report says where
    edges = [search for search in state.searches.values() if search.grid_edges]
    assert len(edges) == len(state.searches)
    for search in edges:
        line = f"- {search.recipe} {search.preset} at D = {search.token_budget:,}: "
        assert line + ", ".join(search.grid_edges) in report
    assert (state.corpus, state.corpus_config) == (spec.run["corpus"], None)
    assert f"Corpus `{spec.run['corpus']}`, main token budget D = 4,096," in report
    findings = parse_table(report, "## Findings")
    assert {row[1] for row in findings} <= {"yes", "**no**", "*inconclusive*", "not tested"} and len(findings) >= 6
    gaps = [row for row in findings if "gap" in row[2]]
    assert len(gaps) >= 5 and all(re.search(r"gap [+-]\d\.\d{4} \[", row[2]) for row in gaps)
    assert "joint N, K -> inf asymptote" in report and "share of the ensemble's gain" in report
    assert re.search(r"!\[.*\]\(figures/.*\.png\)", report)
    assert "![training_curves](figures/training_curves.png)" in report
    assert set(state.distillation) == {"ensemble", "self", "token"}
    students = runs[runs.kind == "student"].set_index("run_id")
    rows = parse_table(report, "## Distillation (measured)")
    assert len(rows) == len(students) == 3 * 2  # three teachers/modes x two weight decays (0.05 is no optimum)
    for teacher, weight_decay, val_loss, test_loss, _share, run_id in rows:
        record = students.loc[run_id]
        assert float(val_loss) == pytest.approx(record.val_loss, abs=1e-4)
        assert float(test_loss.removesuffix(" (best on validation)")) == pytest.approx(record.test_loss, abs=1e-4)
        assert float(weight_decay) == pytest.approx(record.weight_decay)
        assert record.kd_mode == ("token" if "token-level" in teacher else "sequence")
    for entry in state.distillation.values():
        assert entry.student_val_loss == min(s.val_loss for s in entry.students)
        best = [row for row in rows if row[-1] == entry.run_id]
        assert best[0][3].endswith("(best on validation)")


def test_resumed_study_trains_nothing_twice(micro_study, trained_runs):
    spec, output, first = micro_study
    before = len(load_runs(output))
    first_wall_time = first.wall_time_s
    again = run_study(spec, output)
    assert trained_runs == []
    assert len(load_runs(output)) == before
    # the report counts the time of both sessions
    assert again.sessions == first.sessions + 1 and again.wall_time_s > first_wall_time
    assert "over 2 sessions" in (output / "report.md").read_text()


def test_report_only_rewrites_the_report_and_names_the_fix_for_an_old_state(micro_study, tmp_path, capsys):
    from hf_infcompute.cli.main import main

    spec, output, _ = micro_study
    copy = tmp_path / "study"
    shutil.copytree(output, copy)
    recipe = tmp_path / "micro.yaml"
    recipe.write_text(
        yaml.safe_dump({**MICRO, "run": {**MICRO["run"], **{k: spec.run[k] for k in ("corpus", "cache_dir")}}})
    )
    (copy / "report.md").unlink()
    assert main(["study", str(recipe), "--output", str(copy), "--report-only"]) == 0
    assert (copy / "report.md").read_text() == (output / "report.md").read_text().replace(str(output), str(copy))
    state = json.loads((copy / "study.json").read_text())
    del state["format"], state["distillation"]["ensemble"]["students"]  # as written before students were listed
    (copy / "study.json").write_text(json.dumps(state))
    assert main(["study", str(recipe), "--output", str(copy), "--report-only"]) == 2
    assert "Run the study again without --report-only" in capsys.readouterr().err
    assert main(["study", str(recipe), "--output", str(tmp_path / "none"), "--report-only"]) == 2
    assert "no study in" in capsys.readouterr().err


def test_the_resolved_corpus_is_recorded_and_reported(micro_study, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    hub = Study(parse_study(MICRO), tmp_path / "hub").state  # no corpus given: the default hub dataset
    assert (hub.corpus, hub.corpus_config) == (DEFAULT_CORPUS["corpus"], DEFAULT_CORPUS["corpus_config"])
    spec, output, _ = micro_study
    copy = tmp_path / "study"
    shutil.copytree(output, copy)
    state = dataclasses.replace(load_report_state(copy), corpus=hub.corpus, corpus_config=hub.corpus_config)
    state.save(copy / STATE_FILE)
    report = write_study_report(spec, copy, load_report_state(copy)).read_text()
    assert "Corpus `HuggingFaceFW/fineweb-edu` (config `sample-10BT`), main token budget" in report


def test_killed_study_resumes_without_retraining(corpus_dir, cache_dir, tmp_path, monkeypatch, trained_runs):
    spec = parse_study(
        {
            **MICRO,
            "run": {**MICRO["run"], "corpus": str(corpus_dir), "cache_dir": str(cache_dir)},
            "presets": ["cpu-30k"],
            "data_scaling_budgets": [],
            # the optimum and its runner-up re-trained at a fresh seed: the optimum's copy is member 1
            "regularized": {**MICRO["regularized"], "tie_break_seeds": 1},
            "ensemble": {"k": 2, "member_candidates": ["optimum"]},
            "distillation": {"self_distillation": False, "synthetic_tokens": 1024},
        }
    )
    import hf_infcompute.ensemble.members as members

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(members, "train_ensemble", killed)
        with pytest.raises(KeyboardInterrupt):
            run_study(spec, tmp_path)
    recorded = load_runs(tmp_path)
    before_kill = set(recorded.run_id)
    # The searches finished before the kill: every record trained, or (the regularized points at weight decay 0.1)
    # the record of a standard run trained so.
    twins = recorded[recorded.same_training_as.notna()]
    assert set(twins.same_training_as) <= set(trained_runs) and (twins.weight_decay == 0.1).all()
    assert before_kill and set(trained_runs) | set(twins.run_id) == before_kill and len(twins) >= 1
    search = load_report_state(tmp_path).search("regularized", "cpu-30k", spec.token_budget)
    assert len(search.tie_break) == 2 and all(len(losses) == 1 for losses in search.tie_break.values())
    fresh = recorded[recorded.kind == "ensemble_member"]
    assert len(fresh) == 2 and set(fresh.run_id) <= set(trained_runs)
    trained_runs.clear()
    state = run_study(spec, tmp_path)
    # members and the student; no search point again, and member 1 is the tie-break's copy of the optimum
    assert trained_runs and not set(trained_runs) & before_kill
    assert before_kill < set(load_runs(tmp_path).run_id)
    assert state.distillation["ensemble"].status == "finished"


def test_workers_walk_every_search_after_the_searches_it_starts_from(corpus_dir, cache_dir, tmp_path):
    spec = micro_spec(corpus_dir, cache_dir)
    lead = Study(spec, tmp_path).search_order()
    helper = Study(spec, tmp_path, WorkerSlot(rank=1, world_size=4)).search_order()
    assert Study(spec, tmp_path, WorkerSlot(rank=2, world_size=4)).search_order() == lead
    expected = set(itertools.product(("standard", "regularized"), (1024, 2048, 4096), spec.presets))
    for order in (lead, helper):
        assert {(n.recipe, n.token_budget, n.preset) for n in order} == expected and len(order) == len(expected)
        for position, node in enumerate(order):  # every start is known when a search begins
            sources = [s for s in start_sources(spec, node).values() if s is not None]
            assert all(order.index(source) < position for source in sources)
    # the lead starts with the smallest size at D, the odd ranks with the largest: they train different searches
    assert (lead[0].token_budget, lead[0].preset) == (4096, spec.presets[0])
    assert (helper[0].token_budget, helper[0].preset) == (4096, spec.presets[-1])


def test_two_workers_share_a_study(corpus_dir, cache_dir, tmp_path):
    spec = {
        **MICRO,
        "run": {**MICRO["run"], "corpus": str(corpus_dir), "cache_dir": str(cache_dir)},
        "presets": ["cpu-30k", "cpu-50k"],
        "data_scaling_budgets": [],
        "ensemble": {"k": 2, "member_candidates": ["optimum", "paper"]},
        "distillation": {"self_distillation": False, "synthetic_tokens": 1024},
    }
    recipe = tmp_path / "study.yaml"
    recipe.write_text(yaml.safe_dump(spec))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "-m",
        "hf_infcompute",
        "study",
        str(recipe),
        "--output",
        str(tmp_path / "out"),
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = load_runs(tmp_path / "out")
    assert runs.run_id.is_unique  # no run trained (or recorded) twice
    points = [json.loads(p.read_text()) for p in (tmp_path / "out" / "sweeps").glob("*/points/*.json")]
    assert len({p["worker_id"] for p in points}) == 2  # both workers trained search points
    members = runs[runs.kind == "ensemble_member"]
    assert len(members) == len(set(members.run_id)) >= 4
    assert (tmp_path / "out" / "report.md").is_file()
    state = json.loads((tmp_path / "out" / "study.json").read_text())
    assert set(state["ensembles"]) == {"cpu-30k", "cpu-50k"} and state["distillation"]["ensemble"]["run_id"]
    # Both workers sampled shards of the ensemble's synthetic corpus, which is complete.
    synthetic = json.loads((tmp_path / "out" / "synthetic" / "ensemble-cpu-50k" / "generation.json").read_text())
    assert synthetic["status"] == "finished" and sorted(synthetic["workers"]) == ["0", "1"]
    assert all(worker["shards"] for worker in synthetic["workers"].values())


def test_study_spec_rejects_unknown_keys_and_needs_a_corpus_offline(monkeypatch):
    with pytest.raises(InputError, match=r"unknown key\(s\) \['epoch'\] in `standard`"):
        parse_study({**MICRO, "standard": {"learning_rate": [1e-3], "num_train_epochs": [1], "epoch": [1]}})
    with pytest.raises(InputError, match=r"unknown key\(s\) \['colour'\]"):
        parse_study({**MICRO, "colour": "blue"})
    with pytest.raises(InputError, match="set by the study itself"):
        parse_study({**MICRO, "run": {"token_budget": 5}})
    with pytest.raises(InputError, match="numbers >= 0 and/or 'optimum'"):
        parse_study({**MICRO, "distillation": {"weight_decay": ["best"]}})
    with pytest.raises(InputError, match="report_resamples must be a whole number >= 40"):
        parse_study({**MICRO, "report_resamples": 10})
    single = parse_study({**MICRO, "distillation": {"weight_decay": 0.2}}).distillation
    assert single.student_weight_decays(0.8) == [0.2]
    assert parse_study(MICRO).distillation.student_weight_decays(0.05) == [0.05]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="--data PATH.*default hub dataset"):
        resolve_corpus(parse_study(MICRO))


def test_old_study_keys_are_refused_with_the_new_name(tmp_path):
    old = {key: value for key, value in MICRO.items() if key != "token_budget"}
    with pytest.raises(InputError, match="`budget` is now `token_budget`"):
        parse_study({**old, "budget": 4096})
    with pytest.raises(InputError, match=r"`regularized\.epochs` is now `num_train_epochs`"):
        parse_study({**MICRO, "regularized": {"learning_rate": [3e-3], "epochs": [1, 2]}})
    recipe = tmp_path / "old.yaml"
    recipe.write_text(yaml.safe_dump({**MICRO, "standard": {"learning_rate": [3e-3], "epochs": [1, 2]}}))
    with pytest.raises(InputError, match=f"study recipe {re.escape(str(recipe))}: .*`standard.epochs` is now"):
        load_study(recipe)


@pytest.mark.parametrize("name", ["smoke", "quickstart", "paper-200M"])
def test_packaged_recipes_parse(name):
    spec = load_study(name, data="somewhere")
    assert spec.run["corpus"] == "somewhere" and len(spec.presets) >= 3


def test_a_search_starts_from_a_neighbours_optimum_past_its_grids_edge(corpus_dir, cache_dir, tmp_path, monkeypatch):
    """The neighbouring search extended its grid: its optimum joins this search's grid instead of stopping it."""
    import hf_infcompute.study.pipeline as pipeline

    spec = micro_spec(corpus_dir, cache_dir)
    seen = {}

    def descent(objective, grid, start, store, **kwargs):
        seen.update(grid=grid, start=start)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "coordinate_descent", descent)
    past_edge = {"learning_rate": 9e-3, "num_train_epochs": 4, "weight_decay": 0.8}
    with pytest.raises(KeyboardInterrupt):
        pipeline.search_recipe(spec, resolve_corpus(spec), "regularized", 4096, "cpu-30k", tmp_path, past_edge)
    assert seen["start"] == past_edge and seen["grid"].canonical(past_edge) == past_edge
    assert seen["grid"].axes["learning_rate"] == (3e-3, 9e-3) and seen["grid"].axes["num_train_epochs"] == (1, 2, 4)


class EdgeLandscape:
    """Stands in for the study's trainings: the loss falls towards 4 epochs, past the grid's largest (2), and rises
    away from lr 3e-3 and weight decay 0.1; seed 0 reads 2 epochs and more 0.035 high, so the search stops at 1 epoch
    and only the tie-break's fresh seeds see the way past the edge."""

    def __init__(self, run, output_dir) -> None:
        pass

    def binding(self, axes) -> dict:
        return {"axes": sorted(axes)}

    def __call__(self, point: dict) -> float:
        from hf_infcompute.search.pretrain_objective import SEED_OFFSET

        epochs, offset = point["num_train_epochs"], point.get(SEED_OFFSET, 0)
        loss = 2.0 + 0.01 * (math.log2(epochs) - 2) ** 2
        loss += 0.1 * abs(math.log10(point["learning_rate"] / 3e-3)) + 0.1 * abs(point["weight_decay"] - 0.1)
        return loss + (0.035 if offset == 0 and epochs >= 2 else 0.0)


def test_a_tie_break_on_a_grid_edge_goes_on_past_it_in_the_study(corpus_dir, cache_dir, tmp_path, monkeypatch):
    import hf_infcompute.study.pipeline as pipeline

    monkeypatch.setattr(pipeline, "PretrainObjective", EdgeLandscape)
    monkeypatch.setattr(pipeline, "FreshSeedObjective", EdgeLandscape)
    searches = {"extend_edges": True, "tie_break_seeds": 2}
    values = {**MICRO, "data_scaling_budgets": [], "presets": ["cpu-30k", "cpu-50k", "cpu-120k"]}
    values["regularized"] = {**MICRO["regularized"], **searches, "learning_rate": [3e-3, 1e-2]}
    values["run"] = {**MICRO["run"], "corpus": str(corpus_dir), "cache_dir": str(cache_dir)}
    study = Study(parse_study(values), tmp_path)
    study.searches()
    found = study.state.searches["regularized/cpu-30k/4096"]
    assert found.chosen_by == "seed means" and found.point["num_train_epochs"] == 4
    assert not any(edge.startswith("num_train_epochs") for edge in found.grid_edges)
    assert {
        "learning_rate=0.003 num_train_epochs=4 weight_decay=0.1",
        "learning_rate=0.003 num_train_epochs=8 weight_decay=0.1",
    } <= set(found.tie_break)
