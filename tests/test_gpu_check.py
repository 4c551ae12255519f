"""`benchmarks/gpu_check.sh --dry-run` reaches every GPU step and records each as skipped, with its reason."""

from __future__ import annotations

import ast
import json
import os
import re
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


def test_a_failing_check_writes_its_line_and_the_script_goes_on(tmp_path):
    """On a machine with a GPU (a stand-in nvidia-smi), a check that dies without writing still gets a failed line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: stand-in'\n")
    # pip succeeds at once; every check process dies before writing its line; the rest is the real interpreter.
    (bin_dir / "python").write_text(
        "#!/bin/bash\n"
        'case " $* " in\n'
        '  *" -m pip "*) exit 0 ;;\n'
        '  *" --check "*) echo "died early" >&2; exit 3 ;;\n'
        "esac\n"
        f'exec {sys.executable} "$@"\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    wheels = tmp_path / "wheels"  # a built wheel folder (the stand-in pip installs it at once)
    wheels.mkdir()
    (wheels / "requirements.txt").write_text("datasets==5.2.0\n")
    results = tmp_path / "gpu.jsonl"
    env = {
        **os.environ,
        "PYTHON": str(bin_dir / "python"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "GPU_CHECK_LOGS": str(tmp_path / "logs"),
        "GPU_CHECK_WHEELS": str(wheels),
    }
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", str(results)],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    install, *checks = [json.loads(line) for line in results.read_text().splitlines()]
    assert install["name"] == "install" and install["status"] == "ok"
    assert [line["name"] for line in checks] == check_names()
    for line in checks:
        assert line["status"] == "failed" and "exit code 3" in line["error"] and "died early" in line["error"], line


def test_dry_run_lists_every_check_with_its_time_limit(tmp_path):
    done = subprocess.run(
        ["bash", str(REPOSITORY / "benchmarks" / "gpu_check.sh"), "--dry-run", str(tmp_path / "r.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    listed = dict(re.findall(r"^(\w+): limit (\d+) s", done.stdout, re.MULTILINE))
    checks = subprocess.run(
        [sys.executable, str(REPOSITORY / "benchmarks" / "gpu_checks.py"), "--list"], capture_output=True, text=True
    ).stdout.split()
    assert list(listed) == ["install", *checks]
    assert sum(map(int, listed.values())) <= 540  # one call of at most 9 minutes
    assert "--no-index --find-links wheels/" in done.stdout


def test_the_wheel_folder_covers_every_third_party_import_of_the_checks():
    """Parse the imports of every module the checks run (the package and the benchmark scripts they call)."""
    sys.path.insert(0, str(REPOSITORY / "benchmarks"))
    import build_wheels

    files = [*(REPOSITORY / "hf_infcompute").rglob("*.py")] + [
        REPOSITORY / "benchmarks" / f"{name}.py"
        for name in ("gpu_checks", "trainer_throughput", "generation_backends", "ensemble_speed")
    ]
    local = {"hf_infcompute", "gpu_checks", "trainer_throughput", "generation_backends", "ensemble_speed"}
    optional = {"vllm", "liger_kernel", "trackio", "wandb", "deepspeed", "mlflow"}  # guarded, or not in the checks
    imported = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - local - optional
    available = build_wheels.available_distributions()
    missing = {
        name
        for name in third_party
        if build_wheels.IMPORT_NAMES.get(name, name).lower().replace("_", "-") not in available
    }
    assert not missing, f"imported by the checks but neither on the machine nor in wheels/: {sorted(missing)}"
    assert {"datasets", "lm-eval"} <= {build_wheels.distribution(w) for w in build_wheels.WHEELS}
