"""Coordinate-descent hyperparameter search: grids, the shared sweep store, cooperating workers, the CLI."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hf_infcompute.errors import InputError
from hf_infcompute.search import (
    PointResult,
    SearchGrid,
    SweepStore,
    coordinate_descent,
    default_grid,
    for_recipe,
    paper_grid,
    point_key,
)
from hf_infcompute.search.pretrain_objective import PretrainObjective

GRID = default_grid()
# The paper's regularized optimum for 300M parameters at 200M tokens.
OPTIMUM = {"learning_rate": 3e-3, "num_train_epochs": 16, "weight_decay": 1.6}


class Bowl:
    """A convex bowl over grid indices, lowest at `optimum`; logs every call (O_APPEND) and can be slow."""

    def __init__(self, grid: SearchGrid, optimum: dict, log: Path | None = None, delay: float = 0.0):
        self.grid, self.optimum, self.log, self.delay = grid, grid.index(optimum), log, delay
        self.calls: list[str] = []

    def loss(self, point: dict) -> float:
        weights = (1.0, 0.7, 0.4)
        return 2.0 + sum(w * (i - o) ** 2 for w, i, o in zip(weights, self.grid.index(point), self.optimum)) / 10

    def __call__(self, point: dict) -> float:
        self.calls.append(point_key(point))
        if self.log is not None:
            fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.write(fd, f"{point_key(point)}\n".encode())
            os.close(fd)
        time.sleep(self.delay)
        return self.loss(point)


class TwoBasins(Bowl):
    """A deep basin at `optimum` and a shallower one at `local`, whose bottom is locally optimal."""

    def __init__(self, grid: SearchGrid, optimum: dict, local: dict):
        super().__init__(grid, optimum)
        self.local = grid.index(local)

    def loss(self, point: dict) -> float:
        index = self.grid.index(point)
        deep = 2.0 + sum((i - o) ** 2 for i, o in zip(index, self.optimum)) / 10
        shallow = 2.5 + sum((i - o) ** 2 for i, o in zip(index, self.local)) / 10
        return min(deep, shallow)


class Interrupted(Bowl):
    """Raises `exception` (a kill) on the call after `after` evaluations."""

    def __init__(self, grid, optimum, after: int, exception: type[BaseException]):
        super().__init__(grid, optimum)
        self.after, self.exception = after, exception

    def __call__(self, point: dict) -> float:
        if len(self.calls) == self.after:
            raise self.exception()
        return super().__call__(point)


def assert_locally_optimal(result, objective: Bowl, grid: SearchGrid) -> None:
    assert result.locally_optimal
    neighbours = grid.neighbours(result.best_point)
    assert [n.point for n in result.neighbours] == neighbours  # every neighbour was evaluated
    assert result.best_loss == pytest.approx(objective.loss(result.best_point))
    for neighbour in result.neighbours:
        assert neighbour.loss == pytest.approx(objective.loss(neighbour.point))
        assert neighbour.loss >= result.best_loss


# Grids.


@pytest.mark.parametrize(
    "axes",
    [
        {"learning_rate": [3e-3, 1e-3]},  # not sorted
        {"learning_rate": [1e-3, 1e-3]},  # repeated
        {"learning_rate": [0.0, 1e-3]},  # a learning rate must be positive
        {"weight_decay": [-0.1, 0.1]},
        {"num_train_epochs": [1, 2.5]},  # epochs are whole
        {"num_train_epochs": [0, 1]},
        {"num_train_epochs": []},
        {"num_train_epochs": [True, 2]},
        {"num_train_epochs": [1, float("nan")]},
        {"learning rate": [1e-3]},  # not an identifier
        {},
    ],
)
def test_invalid_grids_are_rejected(axes):
    with pytest.raises(InputError):
        SearchGrid(axes)


def test_grid_points_indices_and_neighbours():
    assert paper_grid().shape == (6, 7, 8)
    assert GRID.shape == (6, 6, 6)
    assert GRID.axes["weight_decay"] == (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
    assert GRID.axes["num_train_epochs"] == (1, 2, 4, 8, 16, 32)
    point = GRID.point((3, 4, 4))
    assert point == OPTIMUM and GRID.index(point) == (3, 4, 4)
    assert GRID.canonical({"learning_rate": 0.0030000000001, "num_train_epochs": 16.0, "weight_decay": 1.6}) == OPTIMUM
    assert len(GRID.neighbours(point)) == 6
    corner = GRID.point((0, 0, 0))
    assert GRID.neighbours(corner) == [GRID.point((1, 0, 0)), GRID.point((0, 1, 0)), GRID.point((0, 0, 1))]
    with pytest.raises(InputError, match="not on the search grid"):
        GRID.index({"learning_rate": 5e-3, "num_train_epochs": 16, "weight_decay": 1.6})
    with pytest.raises(InputError, match="missing"):
        GRID.index({"learning_rate": 3e-3, "num_train_epochs": 16})


def test_grid_edges_name_the_axes_a_point_cannot_move_past():
    assert GRID.edges(OPTIMUM) == []
    assert GRID.edges(GRID.point((0, 4, 5))) == [
        "learning_rate 0.0001 (smallest on the grid)",
        "weight_decay 3.2 (largest on the grid)",
    ]
    pinned = GRID.replace(learning_rate=[3e-3])
    assert pinned.edges({**OPTIMUM, "weight_decay": 0.1}) == ["weight_decay 0.1 (smallest on the grid)"]


def test_standard_recipe_pins_weight_decay_at_0_1(tmp_path):
    standard = for_recipe("standard")
    assert standard.axes["weight_decay"] == (0.1,) and standard.pinned == ("weight_decay",)
    assert for_recipe("regularized").axes == GRID.axes
    assert for_recipe("regularized", epochs=[4, 8]).axes["num_train_epochs"] == (4, 8)
    with pytest.raises(InputError, match="fixes weight decay"):
        for_recipe("standard", weight_decays=[0.1, 0.2])
    with pytest.raises(InputError, match="unknown recipe"):
        for_recipe("ensemble")
    objective = Bowl(standard, {"learning_rate": 1e-3, "num_train_epochs": 8, "weight_decay": 0.1})
    start = {"learning_rate": 1e-4, "num_train_epochs": 1, "weight_decay": 0.1}
    result = coordinate_descent(objective, standard, start, SweepStore(tmp_path))
    assert result.best_point == {"learning_rate": 1e-3, "num_train_epochs": 8, "weight_decay": 0.1}
    assert all(key.endswith("weight_decay=0.1") for key in objective.calls)
    assert len(result.neighbours) == 4  # two along learning rate, two along epochs


def log_bowl(optimum: dict) -> callable:
    """A bowl in log space around `optimum`, defined off any grid (weight decay through log(wd + 0.05))."""

    def coordinate(name: str, value: float) -> float:
        return math.log(value + 0.05) if name == "weight_decay" else math.log(value)

    def loss(point: dict) -> float:
        return 2.0 + sum((coordinate(n, v) - coordinate(n, optimum[n])) ** 2 for n, v in point.items())

    return loss


def test_an_optimum_on_the_grids_edge_extends_the_axis_until_it_is_interior(tmp_path):
    small = SearchGrid({"learning_rate": [1e-3, 3e-3], "num_train_epochs": [4, 8], "weight_decay": [0.4, 0.8]})
    optimum = {"learning_rate": 2.7e-2, "num_train_epochs": 32, "weight_decay": 0.1}
    result = coordinate_descent(log_bowl(optimum), small, small.center(), SweepStore(tmp_path), extend_edges=True)
    assert result.best_point == {"learning_rate": 0.027, "num_train_epochs": 32, "weight_decay": 0.1}
    assert result.locally_optimal and result.grid.edges(result.best_point) == []
    assert result.grid.axes["learning_rate"] == (1e-3, 3e-3, 9e-3, 2.7e-2, 8.1e-2)
    assert result.grid.axes["weight_decay"][0] == 0.0  # below 0.1 the next step is no decay at all
    assert len(result.neighbours) == 6  # every +-1 neighbour on every axis trained: the optimum is certified
    assert SweepStore(tmp_path).grid_axes() == result.grid.to_dict()  # status counts the points of the wider grid
    # without extension the same search stops on the edges and says where
    plain = coordinate_descent(log_bowl(optimum), small, small.center(), SweepStore(tmp_path / "plain"))
    assert plain.grid == small and small.edges(plain.best_point) == [
        "learning_rate 0.003 (largest on the grid)",
        "num_train_epochs 8 (largest on the grid)",
        "weight_decay 0.4 (smallest on the grid)",
    ]


def test_a_start_from_past_the_grids_edge_joins_the_grid_and_the_search_walks_from_it(tmp_path):
    """A search started from another search's optimum, found on that search's extended grid."""
    small = SearchGrid({"learning_rate": [1e-3, 3e-3], "num_train_epochs": [4, 8], "weight_decay": [0.4, 0.8]})
    start = {"learning_rate": 9e-3, "num_train_epochs": 16, "weight_decay": 0.8}
    with pytest.raises(InputError, match="not on the search grid"):
        small.canonical(start)
    grid = small.including(start)
    assert grid.axes["learning_rate"] == (1e-3, 3e-3, 9e-3) and grid.axes["num_train_epochs"] == (4, 8, 16)
    assert grid.axes["weight_decay"] == (0.4, 0.8) and grid.including(start) == grid
    assert grid.canonical(start) == start
    bowl = Bowl(grid, {"learning_rate": 3e-3, "num_train_epochs": 8, "weight_decay": 0.8})
    result = coordinate_descent(bowl, grid, start, SweepStore(tmp_path))
    assert result.best_point == {"learning_rate": 3e-3, "num_train_epochs": 8, "weight_decay": 0.8}
    assert result.locally_optimal


def test_an_optimum_past_a_hard_bound_stops_there_and_says_so(tmp_path):
    small = SearchGrid({"learning_rate": [1e-3, 3e-3], "num_train_epochs": [2, 4], "weight_decay": [0.4, 0.8]})
    optimum = {"learning_rate": 2e-3, "num_train_epochs": 0.25, "weight_decay": 0.6}
    result = coordinate_descent(log_bowl(optimum), small, small.center(), SweepStore(tmp_path), extend_edges=True)
    assert result.best_point["num_train_epochs"] == 1
    assert result.grid.edges(result.best_point) == ["num_train_epochs 1 (the hard bound)"]


# Search.


def test_reaches_the_optimum_of_a_bowl_and_a_rerun_evaluates_nothing(tmp_path):
    store = SweepStore(tmp_path / "sweep")
    objective = Bowl(GRID, OPTIMUM)
    result = coordinate_descent(objective, GRID, GRID.center(), store)
    assert result.best_point == OPTIMUM
    assert_locally_optimal(result, objective, GRID)
    assert result.path[0] == GRID.center() and result.path[-1] == OPTIMUM
    losses = [objective.loss(point) for point in result.path]
    assert all(b < a for a, b in zip(losses, losses[1:]))  # every move strictly improves
    assert len(objective.calls) == len(set(objective.calls)) == result.evaluations == len(store.results())
    assert result.reused == 0

    again = Bowl(GRID, OPTIMUM)
    rerun = coordinate_descent(again, GRID, GRID.center(), store)
    assert again.calls == [] and rerun.evaluations == 0
    assert rerun.best_point == OPTIMUM and rerun.locally_optimal and rerun.path == result.path
    assert rerun.reused == len(store.results())


def test_stops_at_a_local_optimum_next_to_the_start(tmp_path):
    local = {"learning_rate": 1e-4, "num_train_epochs": 1, "weight_decay": 0.1}
    objective = TwoBasins(GRID, OPTIMUM, local)
    result = coordinate_descent(objective, GRID, GRID.point((1, 1, 0)), SweepStore(tmp_path))
    assert result.best_point == local
    assert objective.loss(local) > objective.loss(OPTIMUM)  # local, not global
    assert_locally_optimal(result, objective, GRID)


@pytest.mark.parametrize("kill", [KeyboardInterrupt, SystemExit])
def test_a_killed_search_resumes_without_repeating_work(tmp_path, kill):
    reference = Bowl(GRID, OPTIMUM)
    expected = coordinate_descent(reference, GRID, GRID.center(), SweepStore(tmp_path / "reference"))

    store = SweepStore(tmp_path / "sweep")
    killed = Interrupted(GRID, OPTIMUM, after=3, exception=kill)
    with pytest.raises(kill):
        coordinate_descent(killed, GRID, GRID.center(), store)
    assert len(killed.calls) == 3 and len(store.results()) == 3
    assert not list(store.claims_dir.iterdir())  # the interrupted point is free again

    resumed = Bowl(GRID, OPTIMUM)
    result = coordinate_descent(resumed, GRID, GRID.center(), store)
    assert not set(resumed.calls) & set(killed.calls)
    assert len(killed.calls) + len(resumed.calls) == len(reference.calls)
    assert result.best_point == expected.best_point == OPTIMUM
    assert result.path == expected.path and result.reused == 3


def _worker(directory: str, log: str, worker_id: str, barrier, out: str) -> None:
    objective = Bowl(GRID, OPTIMUM, log=Path(log), delay=0.1)
    barrier.wait()
    result = coordinate_descent(
        objective, GRID, GRID.center(), SweepStore(directory, lease_s=60), worker_id=worker_id, poll_interval=0.02
    )
    Path(out).write_text(json.dumps(result.to_dict()))


def test_concurrent_workers_share_the_sweep_and_never_evaluate_a_point_twice(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    log = tmp_path / "calls.log"
    workers = [
        context.Process(
            target=_worker, args=(str(tmp_path / "sweep"), str(log), f"w{i}", barrier, str(tmp_path / f"w{i}.json"))
        )
        for i in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    calls = log.read_text().split()
    assert len(calls) == len(set(calls)) == len(SweepStore(tmp_path / "sweep").results())
    results = [json.loads((tmp_path / f"w{i}.json").read_text()) for i in range(3)]
    assert all(r["best_point"] == OPTIMUM and r["locally_optimal"] for r in results)
    assert sum(r["evaluations"] for r in results) == len(calls)
    assert sum(r["evaluations"] > 0 for r in results) >= 2  # the work was shared
    assert not list((tmp_path / "sweep" / "claims").iterdir())


def test_waits_for_a_point_another_worker_holds(tmp_path):
    store = SweepStore(tmp_path / "sweep", lease_s=60)
    held = GRID.neighbours(GRID.center())[0]
    claim = store.try_claim(held, "other")
    assert claim is not None and store.try_claim(held, "me") is None  # a live claim is respected

    def finish_elsewhere():
        time.sleep(0.5)
        store.record(PointResult(point=held, status="finished", loss=2.05, worker_id="other", finished_at=time.time()))
        claim.release()

    other = threading.Thread(target=finish_elsewhere)
    other.start()
    objective = Bowl(GRID, OPTIMUM)
    result = coordinate_descent(objective, GRID, GRID.center(), store, poll_interval=0.02)
    other.join()
    assert point_key(held) not in objective.calls
    assert store.result(held).worker_id == "other" and result.locally_optimal


def test_a_dead_workers_claim_is_taken_over(tmp_path):
    directory = tmp_path / "sweep"
    point = GRID.center()
    # A real process claims the start point and dies without releasing it.
    script = (
        "import os, sys; from hf_infcompute.search import SweepStore; "
        f"claim = SweepStore(sys.argv[1]).try_claim({point!r}, 'dead'); "
        "assert claim is not None; os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", script, str(directory)], check=True)
    store = SweepStore(directory, lease_s=3600)
    holder = store.holder(point)
    assert holder.worker_id == "dead" and holder.host == socket.gethostname() and store.is_stale(holder)

    objective = Bowl(GRID, OPTIMUM)
    result = coordinate_descent(objective, GRID, point, store)
    assert objective.calls[0] == point_key(point) and result.best_point == OPTIMUM
    assert not list(store.claims_dir.iterdir())


def test_claims_heartbeat_and_expire_with_their_lease(tmp_path):
    point = GRID.center()
    beating = SweepStore(tmp_path / "beating", lease_s=1.0, heartbeat_s=0.05)
    with beating.try_claim(point, "mine") as claim:
        past = time.time() - 10
        os.utime(claim.path, (past, past))
        assert beating.is_stale(beating.holder(point))
        time.sleep(0.3)
        assert not beating.is_stale(beating.holder(point))  # the heartbeat refreshed it
    assert beating.holder(point) is None  # released

    store = SweepStore(tmp_path / "sweep", lease_s=60, heartbeat_s=50)
    claim = store.try_claim(point, "silent")
    owner = json.loads(claim.path.read_text())
    claim.path.write_text(json.dumps({**owner, "host": "elsewhere", "pid": 1}))  # a machine we cannot see into
    assert not store.is_stale(store.holder(point))  # within its lease
    past = time.time() - 120
    os.utime(claim.path, (past, past))
    assert store.is_stale(store.holder(point))
    taken = store.try_claim(point, "new")
    assert taken is not None and store.holder(point).worker_id == "new" and store.holder(point).generation == 1
    assert not claim.path.exists()  # the stale generation is gone
    assert store.try_claim(point, "third") is None
    taken.release()
    claim.release()


def test_failed_points_are_recorded_and_not_retried(tmp_path):
    store = SweepStore(tmp_path / "sweep")
    start = GRID.center()
    broken, non_finite = GRID.neighbours(start)[0], GRID.neighbours(start)[2]  # away from the optimum

    class Flaky(Bowl):
        def __call__(self, point):
            if point == broken:
                self.calls.append(point_key(point))
                raise RuntimeError("out of memory")
            if point == non_finite:
                self.calls.append(point_key(point))
                return {"val_loss": float("nan")}
            return super().__call__(point)

    objective = Flaky(GRID, OPTIMUM)
    result = coordinate_descent(objective, GRID, start, store)
    assert result.best_point == OPTIMUM
    failed = store.result(broken)
    assert failed.failed and failed.loss == math.inf and "RuntimeError: out of memory" in failed.error
    assert "Traceback" in failed.extra["traceback"]
    assert store.result(non_finite).failed and "non-finite" in store.result(non_finite).error
    assert json.loads(store.result_path(broken).read_text())["loss"] is None

    again = Flaky(GRID, OPTIMUM)
    coordinate_descent(again, GRID, start, store)
    assert again.calls == []  # failures are not retried by default

    healed = Bowl(GRID, OPTIMUM)
    retried = coordinate_descent(healed, GRID, start, store, retry_failed=True)
    assert sorted(healed.calls) == sorted([point_key(broken), point_key(non_finite)])
    assert not store.result(broken).failed and retried.best_point == OPTIMUM


def test_objective_output_input_errors_and_budget(tmp_path):
    store = SweepStore(tmp_path / "sweep")
    with pytest.raises(InputError, match="not on the search grid"):
        coordinate_descent(Bowl(GRID, OPTIMUM), GRID, {**OPTIMUM, "learning_rate": 5e-3}, store)

    def wrong_settings(point):
        raise InputError("no corpus given")

    with pytest.raises(InputError, match="no corpus"):
        coordinate_descent(wrong_settings, GRID, OPTIMUM, store)
    assert store.results() == [] and not list(store.claims_dir.iterdir())  # not recorded as a failed point

    assert coordinate_descent(Bowl(GRID, OPTIMUM), GRID, OPTIMUM, store, max_evaluations=0).best is None
    capped = coordinate_descent(Bowl(GRID, OPTIMUM), GRID, GRID.center(), store, max_evaluations=2)
    assert capped.evaluations == 2 and not capped.locally_optimal and capped.best is not None

    def with_extras(point):
        return {"val_loss": Bowl(GRID, OPTIMUM).loss(point), "run_id": point_key(point)}

    finished = coordinate_descent(with_extras, GRID, GRID.center(), store)
    assert finished.reused == 2 and finished.locally_optimal and finished.best_point == OPTIMUM
    assert finished.best.extra == {"run_id": point_key(OPTIMUM)}


def test_a_sweep_directory_is_bound_to_its_settings(tmp_path):
    SweepStore(tmp_path).bind({"corpus": "a", "token_budget": 1000})
    SweepStore(tmp_path).bind({"token_budget": 1000, "corpus": "a"})
    with pytest.raises(InputError, match="token_budget"):
        SweepStore(tmp_path).bind({"corpus": "a", "token_budget": 2000})


# The pre-training objective and the CLI.


def _fake_pretrain(calls: list):
    """A stand-in for `hf_infcompute.training.pretrain` whose val_loss is a bowl over the run's settings."""
    bowl = Bowl(for_recipe("regularized"), OPTIMUM)

    def pretrain(run, output_dir: str) -> dict:
        calls.append((run, output_dir))
        point = {name: getattr(run.training, name) for name in OPTIMUM}
        if run.data.corpus == "fail":
            return {"run_id": "x", "status": "failed", "val_loss": None}
        return {"run_id": point_key(point), "status": "finished", "val_loss": bowl.loss(point), "kind": "pretrain"}

    return pretrain


def test_pretrain_objective_maps_points_to_run_settings(tmp_path, monkeypatch):
    import hf_infcompute.training as training
    from hf_infcompute.training import parse_run_config

    calls = []
    monkeypatch.setattr(training, "pretrain", _fake_pretrain(calls), raising=False)
    base = {"recipe": "regularized", "corpus": "c", "token_budget": 1000, "learning_rate": 1.0, "seed": 3}
    objective = PretrainObjective(parse_run_config(base), tmp_path)
    record = objective(OPTIMUM)
    run, output_dir = calls[0]
    # The point's coordinates are the run's own settings; the rest of the run is kept.
    assert run.identity() == parse_run_config({**base, **OPTIMUM}).identity()
    assert (run.training.learning_rate, run.training.num_train_epochs, run.training.weight_decay) == (3e-3, 16.0, 1.6)
    assert output_dir == str(tmp_path) and record["val_loss"] == 2.0
    assert "learning_rate" not in objective.binding(OPTIMUM) and objective.binding(OPTIMUM)["seed"] == 3
    with pytest.raises(RuntimeError, match="ended failed"):
        PretrainObjective(parse_run_config({**base, "corpus": "fail"}), tmp_path)(OPTIMUM)
    with pytest.raises(InputError, match="dropout"):
        objective({"dropout": 0.1})
    standard = PretrainObjective(parse_run_config({**base, "recipe": "standard"}), tmp_path)
    with pytest.raises(InputError, match="fixes weight_decay at 0.1"):
        standard.run_for(OPTIMUM)


def _cli(argv: list[str]) -> int:
    from hf_infcompute.cli.main import build_parser

    args = build_parser().parse_args(argv)
    return args.func(args)


def test_cli_search_end_to_end(tmp_path, monkeypatch, capsys):
    import hf_infcompute.training as training

    calls = []
    monkeypatch.setattr(training, "pretrain", _fake_pretrain(calls), raising=False)
    recipe = tmp_path / "regularized.yaml"
    recipe.write_text("recipe: regularized\ncorpus: c\ntoken_budget: 1000\nlearning_rate: 1e-3\nweight_decay: 0.8\n")
    sweep = tmp_path / "sweep"
    argv = ["search", str(recipe), "--output", str(sweep), "--grid-epochs", "4,8,16,32", "token_budget=2000"]
    assert _cli(argv + ["--poll-interval", "0.05"]) == 0
    printed = capsys.readouterr().out
    assert "locally optimal: learning_rate=0.003 num_train_epochs=16 weight_decay=1.6" in printed
    assert "move" in printed and "weight_decay 3.2" in printed
    assert "grid's edge" not in printed  # 16 epochs and weight decay 1.6 lie inside the grid
    saved = json.loads((sweep / "search.json").read_text())
    assert saved["best_point"] == OPTIMUM and saved["locally_optimal"]
    assert saved["grid"]["num_train_epochs"] == [4, 8, 16, 32]
    # the recipe's own values
    assert saved["path"][0] == {"learning_rate": 1e-3, "num_train_epochs": 8, "weight_decay": 0.8}
    assert all(run.data.token_budget == 2000 for run, _ in calls)
    assert {run.training.num_train_epochs for run, _ in calls} <= {4, 8, 16, 32}

    trained = len(calls)
    assert _cli(argv) == 0 and len(calls) == trained  # a finished search trains nothing new
    assert "0 point(s) trained here" in capsys.readouterr().out

    with pytest.raises(InputError, match="other settings"):
        _cli(["search", str(recipe), "--output", str(sweep), "token_budget=4000"])
    with pytest.raises(InputError, match="fixes weight.decay at 0.1"):
        _cli(["search", str(recipe), "recipe=standard", "--output", str(tmp_path / "s"), "--grid-wd", "0.1,0.2"])
    with pytest.raises(InputError, match="not on the search grid"):
        _cli(["search", str(recipe), "--output", str(tmp_path / "s2"), "--start", "5e-3,8"])


@pytest.mark.slow
def test_real_sweep_on_a_tiny_model(tmp_path, tiny_run):
    training = pytest.importorskip("hf_infcompute.training")
    if not hasattr(training, "pretrain"):
        pytest.skip("hf_infcompute.training.pretrain is not available yet")
    from hf_infcompute.records import load_runs
    from hf_infcompute.training import parse_run_config

    config = {**tiny_run, "recipe": "standard", "token_budget": 4096}
    grid = for_recipe("standard", learning_rates=[1e-3, 3e-3, 1e-2], epochs=[1])
    store = SweepStore(tmp_path)
    start = grid.center()
    base = parse_run_config(config)
    result = coordinate_descent(PretrainObjective(base, tmp_path), grid, start, store, poll_interval=1)
    assert result.locally_optimal and math.isfinite(result.best_loss)
    assert [n.point for n in result.neighbours] == grid.neighbours(result.best_point)
    runs = load_runs(tmp_path)  # every trained point is a run record of the sweep
    assert len(runs) == len(store.results()) == result.evaluations
    for point_result in store.results():
        run = runs[runs.run_id == point_result.extra["run_id"]].iloc[0]
        assert run.val_loss == point_result.loss
        assert (run.learning_rate, run.num_train_epochs, run.weight_decay) == tuple(
            point_result.point[name] for name in ("learning_rate", "num_train_epochs", "weight_decay")
        )
    rerun = coordinate_descent(PretrainObjective(base, tmp_path), grid, start, store)
    assert rerun.evaluations == 0 and rerun.best_point == result.best_point
