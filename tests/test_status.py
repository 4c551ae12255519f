"""`hf-infcompute status`: per search, points finished, running (and who holds them), failed and left."""

from __future__ import annotations

import itertools
import os
import socket

from hf_infcompute.cli.main import main
from hf_infcompute.search import SweepStore, coordinate_descent, for_recipe
from hf_infcompute.training.claim import RunClaim


def test_status_counts_a_tiny_sweep_and_names_who_holds_what(tmp_path, capsys):
    sweep = tmp_path / "sweeps" / "regularized-tiny-1m-D4096"
    grid = for_recipe("regularized", learning_rates=[1e-3, 3e-3, 1e-2], epochs=[1, 2], weight_decays=[0.1, 0.8])

    def objective(point):
        if point["learning_rate"] == 1e-2:
            raise RuntimeError("loss diverged")
        return point["learning_rate"] * point["num_train_epochs"] + point["weight_decay"]

    store = SweepStore(sweep)
    store.bind({"corpus": "x"})
    start = {"learning_rate": 3e-3, "num_train_epochs": 1, "weight_decay": 0.1}
    result = coordinate_descent(objective, grid, start, store, worker_id="w0")
    finished = sum(not r.failed for r in store.results())
    failed = sum(r.failed for r in store.results())
    assert failed == 1 and result.evaluations == finished + failed
    points = [grid.point(index) for index in itertools.product(*map(range, grid.shape))]
    unvisited = next(point for point in points if store.result(point) is None)
    claim = store.try_claim(unvisited, "gpu-3")  # a live worker on this host
    run = RunClaim(tmp_path / "runs" / "member-run")
    run.acquire()
    try:
        assert main(["status", str(tmp_path)]) == 0
    finally:
        claim.release()
        run.release()
    lines = capsys.readouterr().out.splitlines()
    left = grid.size - finished - failed - 1
    assert lines[0] == (
        f"regularized-tiny-1m-D4096: {finished} finished, 1 running, 1 failed, {left} of 12 grid points left "
        "(the descent visits only part of its grid)"
    )
    host = socket.gethostname()
    assert lines[1].startswith("  running learning_rate=") and f"worker gpu-3 (pid {os.getpid()} on {host})" in lines[1]
    assert lines[2].startswith("  failed learning_rate=0.01,") and lines[2].endswith("RuntimeError: loss diverged")
    assert lines[3] == "runs being trained:" and lines[4].startswith(f"  member-run: pid {os.getpid()} on {host}")


def test_status_of_a_folder_without_sweeps_names_the_fix(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "pass the --output folder of `hf-infcompute study`" in capsys.readouterr().err
