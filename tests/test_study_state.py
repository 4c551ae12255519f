"""The study's state file: a round trip keeps every record, a missing field is refused with the fix; the study and
scaling modules import one way (no cycle)."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import hf_infcompute.scaling
import hf_infcompute.study
from hf_infcompute.errors import InputError
from hf_infcompute.study.state import (
    STATE_FILE,
    BenchmarkState,
    DistillationState,
    EnsembleState,
    Failure,
    SearchState,
    StudentState,
    StudyState,
    load_report_state,
    search_key,
)

PACKAGES = (hf_infcompute.study, hf_infcompute.scaling)


def full_state() -> StudyState:
    """A state with one record of every kind, as a finished study holds them."""
    search = SearchState(
        recipe="regularized",
        preset="tiny-1m",
        token_budget=4096,
        point={"learning_rate": 0.003, "num_train_epochs": 2, "weight_decay": 0.8},
        val_loss=5.125,
        locally_optimal=True,
        run_id="pretrain-a",
        model_dir="runs/pretrain-a",
        evaluations=3,
        reused=1,
        grid_edges=["weight_decay 0.8 (largest on the grid)"],
        start="standard optimum",
        start_losses={"study's start": 5.25, "standard optimum": 5.125},
        chosen_by="seed means",
        tie_break={"lr 0.003, 2 epochs, wd 0.8": [5.2, 5.3], "lr 0.003, 2 epochs, wd 0.4": [5.3, 5.35]},
        compared_run_ids=["pretrain-a", "pretrain-b"],
    )
    students = [StudentState(0.8, 5.0, "student-a", "runs/student-a"), StudentState(0.05, 5.25, "student-b", None)]
    return StudyState(
        name="micro",
        corpus="HuggingFaceFW/fineweb-edu",
        corpus_config="sample-10BT",
        searches={search_key("regularized", "tiny-1m", 4096): search},
        ensembles={
            "tiny-1m": EnsembleState(
                {"optimum": 4.9, "paper": 4.95},
                {"optimum": [4.85, 4.95], "paper": None},
                "optimum",
                3,
                4.8,
                5.1,
                "ensembles/e",
                "ensemble-e",
            )
        },
        distillation={
            "ensemble": DistillationState(
                preset="tiny-1m",
                teacher="ensembles/e",
                kd_mode="sequence",
                student_val_loss=5.0,
                weight_decay=0.8,
                run_id="student-a",
                model_dir="runs/student-a",
                status="finished",
                teacher_val_loss=4.8,
                single_val_loss=5.125,
                students=students,
            )
        },
        benchmarks={"regularized tiny-1m": BenchmarkState(0.25, "runs/pretrain-a", {"arc_easy": 0.3})},
        failures=[Failure("ensemble tiny-2m", "out of memory")],
        sessions=2,
        wall_time_s=61.5,
    )


def test_saved_state_loads_back_equal(tmp_path: Path) -> None:
    state = full_state()
    state.save(tmp_path / STATE_FILE)
    assert load_report_state(tmp_path) == state
    assert StudyState.from_json(json.loads(json.dumps(state.to_json()))) == state
    assert state.search("regularized", "tiny-1m", 4096).point["num_train_epochs"] == 2


@pytest.mark.parametrize(
    "drop",
    [
        ("corpus",),
        ("searches", "regularized/tiny-1m/4096", "grid_edges"),
        ("distillation", "ensemble", "students", 1, "model_dir"),
    ],
)
def test_a_state_missing_a_field_is_refused_with_the_fix(tmp_path: Path, drop: tuple) -> None:
    values = full_state().to_json()
    *path, field = drop
    entry = values
    for key in path:
        entry = entry[key]
    del entry[field]
    (tmp_path / STATE_FILE).write_text(json.dumps(values))
    with pytest.raises(InputError) as refused:
        load_report_state(tmp_path)
    message = str(refused.value)
    assert str(tmp_path / STATE_FILE) in message and f"{field}`" in message
    assert "Run the study again without --report-only" in message


def test_a_state_of_another_format_or_none_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no study in"):
        load_report_state(tmp_path)
    (tmp_path / STATE_FILE).write_text(json.dumps({**full_state().to_json(), "format": 2}))
    with pytest.raises(InputError, match="older hf-infcompute. Run the study again without --report-only"):
        load_report_state(tmp_path)


def _modules() -> dict[str, Path]:
    """Every module of the study and scaling packages (the packages included) by name, with its file."""
    found = {package.__name__: Path(package.__file__) for package in PACKAGES}
    for package in PACKAGES:
        for info in pkgutil.iter_modules(package.__path__):
            found[f"{package.__name__}.{info.name}"] = Path(package.__path__[0]) / f"{info.name}.py"
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of `modules` that `path` imports anywhere (a function's deferred import included)."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from package import module` imports that module; `from module import name`, the module itself
            imported |= {
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                for alias in node.names
            }
    return (imported & set(modules)) - {name}


def test_study_and_scaling_modules_import_one_way() -> None:
    modules = _modules()
    assert {
        "hf_infcompute.study.pipeline",
        "hf_infcompute.study.report",
        "hf_infcompute.study.state",
        "hf_infcompute.scaling.analysis",
        "hf_infcompute.scaling.report",
    } <= set(modules)
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert "hf_infcompute.study.report" not in graph["hf_infcompute.study.pipeline"]
    assert "hf_infcompute.study.pipeline" not in graph["hf_infcompute.study.report"]

    def cycle_from(name: str, trail: tuple[str, ...]) -> tuple[str, ...] | None:
        if name in trail:
            return trail[trail.index(name) :] + (name,)
        return next((found for nxt in sorted(graph[name]) if (found := cycle_from(nxt, trail + (name,)))), None)

    for name in graph:
        assert cycle_from(name, ()) is None, f"import cycle: {' -> '.join(cycle_from(name, ()))}"
    # and every module imports in a fresh interpreter, one per package: a module's package runs its __init__ first
    for package in PACKAGES:
        names = sorted(name for name in modules if name.startswith(package.__name__))
        script = "; ".join(f"import {name}" for name in names)
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
