#!/usr/bin/env bash
# The GPU check: on a single-GPU machine with no package index, install what it lacks from the wheel folder built here
# by `python benchmarks/build_wheels.py` (wheels/, never committed), import the project from this checkout
# (PYTHONPATH) and run the checks of benchmarks/gpu_checks.py, each appending one JSON line to the results file.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [RESULTS.jsonl]
#
# RESULTS.jsonl (or $GPU_CHECK_RESULTS) defaults to benchmarks/results/gpu-$(date +%F).jsonl. Without a GPU
# (no working nvidia-smi), or with --dry-run, nothing is installed, each step is listed with its time limit and writes
# a `skipped` line with the reason; the exit code is 0 either way: a failing check writes its `failed` line and the
# script goes on. $GPU_CHECK_WHEELS (default wheels) is the wheel folder.
# $GPU_CHECK_BUDGET_S (default 540) bounds the whole run: each check's timeout is cut to what is left of it, and a
# check with under 15 s left is recorded as skipped. Each step's output goes to $GPU_CHECK_LOGS (default: a temporary
# folder, named at the start).
set -u
cd "$(dirname "$0")/.."

dry_run=""
results="${GPU_CHECK_RESULTS:-}"
for argument in "$@"; do
  case "$argument" in
    --dry-run) dry_run="dry run (--dry-run): nothing installed or run" ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) results="$argument" ;;
  esac
done
results="${results:-benchmarks/results/gpu-$(date +%F).jsonl}"
mkdir -p "$(dirname "$results")"
if [ -z "$dry_run" ] && ! nvidia-smi -L >/dev/null 2>&1; then
  dry_run="no CUDA device (nvidia-smi finds no GPU): dry run"
fi

python="${PYTHON:-python3}"
wheels="${GPU_CHECK_WHEELS:-wheels}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
checks="$python benchmarks/gpu_checks.py"
budget="${GPU_CHECK_BUDGET_S:-540}"
SECONDS=0
started=$SECONDS
# Seconds each step may take at most; together the budget (540 s), leaving a rerun inside 15 minutes of device time.
declare -A limit=([install]=45 [memory]=150 [throughput]=120 [pretrain]=60 [vllm]=15 [fsdp2]=60 [ensemble]=90)

# Run "$@" under the step's timeout (cut to the budget left); echo why it did not finish, if it did not.
timed() {
  local name="$1"; shift
  local left=$((budget - (SECONDS - started)))
  local seconds=$((limit[$name] < left ? limit[$name] : left))
  if [ "$seconds" -lt 15 ]; then echo "not run: the ${budget} s budget is spent"; return 2; fi
  timeout --kill-after=10 "$seconds" "$@" >"$log_dir/$name.log" 2>&1
  local rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then echo "timed out after ${seconds} s"; return 1; fi
  [ $rc -eq 0 ] || { echo "exit code $rc: $(tail -c 2000 "$log_dir/$name.log")"; return 1; }
}

echo "results: $results"
if [ -n "$dry_run" ]; then
  echo "install: limit ${limit[install]} s (pip install --no-index --find-links $wheels/ --no-deps -r $wheels/requirements.txt)"
  $checks --record install --status skipped --reason "$dry_run" --device cpu --results "$results"
elif [ ! -f "$wheels/requirements.txt" ]; then
  $checks --record install --status failed --results "$results" \
    --reason "no $wheels/requirements.txt: run python benchmarks/build_wheels.py on a machine with an index first"
else
  log_dir="${GPU_CHECK_LOGS:-$(mktemp -d)}"
  mkdir -p "$log_dir"
  echo "logs: $log_dir"
  # A fresh machine's system Python may be marked externally managed (PEP 668); this one is throwaway.
  why=$(PIP_BREAK_SYSTEM_PACKAGES=1 timed install "$python" -m pip install --no-index --find-links "$wheels" \
    --no-deps -r "$wheels/requirements.txt")
  if [ -n "$why" ]; then
    $checks --record install --status failed --reason "pip install --no-index from $wheels: $why" \
      --seconds "$SECONDS" --results "$results"
  else
    $checks --record install --status ok --seconds "$SECONDS" --reason "installed: $("$python" -m pip list 2>/dev/null \
      | grep -iE '^(torch|transformers|accelerate|datasets|lm.eval) ' | tr -s ' ' | paste -sd ',' -)" \
      --results "$results"
  fi
fi

for name in $($checks --list); do
  if [ -n "$dry_run" ]; then
    echo "$name: limit ${limit[$name]} s"
    $checks --record "$name" --status skipped --reason "$dry_run" --device cpu --results "$results"
    continue
  fi
  before=$(wc -l <"$results")
  step_start=$SECONDS
  why=$(timed "$name" $checks --check "$name" --device cuda --results "$results")
  rc=$?
  status=$([ $rc -eq 2 ] && echo skipped || echo failed)
  if [ "$(wc -l <"$results")" -eq "$before" ]; then  # killed (or never started) before it could write its line
    $checks --record "$name" --status "$status" --reason "${why:-no line written}" \
      --seconds $((SECONDS - step_start)) --results "$results"
  fi
  echo "$name: $(tail -n 1 "$results" | cut -c 1-200)"
done
echo "done in $((SECONDS - started)) s: $results"
exit 0
