"""`benchmarks/gpu_check.sh --dry-run` reaches every GPU step and records each as skipped, with its reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def check_names() -> list[str]:
    listed = subprocess.run(
        [sys.executable, "benchmarks/gpu_checks.py", "--list"],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return listed.stdout.split()


def test_dry_run_writes_one_skipped_line_per_check(tmp_path):
    results = tmp_path / "gpu.jsonl"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run", str(results)],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    names = check_names()
    assert {"memory", "throughput", "pretrain", "vllm", "fsdp2", "ensemble"} <= set(names)
    assert [line["name"] for line in lines] == ["install", *names]
    for line in lines:
        assert line["status"] == "skipped" and "dry run" in line["error"], line
        assert {"figures", "seconds", "device", "created_at"} <= set(line)


def test_results_file_from_the_environment(tmp_path):
    """Without an argument the results go to $GPU_CHECK_RESULTS; a second run appends to it."""
    results = tmp_path / "nested" / "gpu.jsonl"
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_RESULTS": str(results)}
    for _ in range(2):
        subprocess.run(
            ["bash", "benchmarks/gpu_check.sh", "--dry-run"],
            cwd=REPOSITORY,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    assert len(results.read_text().splitlines()) == 2 * (1 + len(check_names()))
