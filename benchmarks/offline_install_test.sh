#!/usr/bin/env bash
# By hand: a fresh venv with only the lent machine's packages (build_wheels.MACHINE_PACKAGES, from the local index;
# torch the local CPU build) plus wheels/ installed with --no-index, then import every module the GPU checks use.
#
#   bash benchmarks/offline_install_test.sh [VENV]   ($PYTHON312 or python3.12 on PATH; run build_wheels.py first)
set -eu
cd "$(dirname "$0")/.."
venv="${1:-$(mktemp -d)/venv}"
"${PYTHON312:-python3.12}" -m venv "$venv"
machine=$(python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import build_wheels as b; print(' '.join(r.split('==')[0] for r in b.MACHINE_PACKAGES if not r.startswith('torch')))")
"$venv/bin/pip" install -q torch==2.13.0 $machine
"$venv/bin/pip" install -q --no-index --find-links wheels/ --no-deps -r wheels/requirements.txt
PYTHONPATH="$PWD:$PWD/benchmarks" HF_HUB_OFFLINE=1 "$venv/bin/python" - <<'PY'
import importlib, pkgutil
import hf_infcompute
names = [m.name for m in pkgutil.walk_packages(hf_infcompute.__path__, "hf_infcompute.") if not m.name.endswith("__main__")]
names += ["gpu_checks", "trainer_throughput", "generation_backends", "ensemble_speed", "datasets", "lm_eval", "lm_eval.tasks"]
for name in names:
    importlib.import_module(name)
print(f"offline install: imported {len(names)} modules")
PY
