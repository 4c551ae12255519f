"""Calibrate a CPU study's ladder: tokens per parameter against the paper's range, and what the study will cost.

    python benchmarks/calibrate_cpu_ladder.py [recipes/quickstart.yaml] [--vocab-sizes 512 1024 2048]
        [--presets cpu-50k cpu-150k cpu-500k] [--steps 40]

The paper trains 150M-1.4B parameters on 200M tokens: 1.3 to 0.14 tokens per parameter (N counts every parameter,
embeddings included). A CPU study can only afford tiny models, and its findings only carry over when its models sit
in the same regime, so this prints, per vocabulary and preset, N and D / N at the study's token budget (marking those
inside the paper's range). It then times the Trainer on each of the study's presets at the study's own run settings
(a short run on the study's corpus, warm-up steps left out) and multiplies the seconds per token by the tokens the
study's plan expects each preset to train (`hf_infcompute.planning.recipe.plan_study`): the study's expected
training minutes (both recipes' searches at every budget from each of their starts, their tie-breaks, the members and
the students), and the upper bound if every point each search may reach were trained. Sampling synthetic text and
evaluation are not in the estimate; the study's own wall time (its report) has them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from transformers import TrainerCallback

from hf_infcompute.data import prepare_data
from hf_infcompute.models.presets import count_parameters, get_preset
from hf_infcompute.planning.recipe import plan_study, run_settings
from hf_infcompute.study.pipeline import study_run
from hf_infcompute.study.spec import load_study
from hf_infcompute.training.pretraining import build_trainer

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "pretrain"
PAPER_TOKENS_PER_PARAMETER = (0.14, 1.33)  # 200M tokens over 1.4B and over 150M parameters


class StepTimer(TrainerCallback):
    """Wall time of the optimizer steps after `skip` warm-up steps."""

    def __init__(self, skip: int) -> None:
        self.skip, self.start, self.end = skip, 0.0, 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.skip:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def regime_table(presets: list[str], vocab_sizes: list[int], token_budget: int) -> None:
    low, high = PAPER_TOKENS_PER_PARAMETER
    print(f"D = {token_budget:,} tokens; the paper's range of D / N: {low}-{high}")
    print(f"{'preset':<12}" + "".join(f"{f'V={v}: N, D/N':>26}" for v in vocab_sizes))
    for name in presets:
        cells = []
        for vocab in vocab_sizes:
            n = count_parameters(get_preset(name).build_config(vocab)).total
            ratio = token_budget / n
            cells.append(f"{n:>12,} {ratio:>8.3f}{'*' if low <= ratio <= high else ' ':>2}    ")
        print(f"{name:<12}" + "".join(cells))
    print("(* inside the paper's range)\n")


def seconds_per_token(run, steps: int, warmup: int) -> float:
    run = run.replace(max_steps=steps, save_strategy="no", report_to="none", output_dir="/tmp/calibrate")
    data = prepare_data(run.data)
    timer = StepTimer(warmup)
    build_trainer(run, data, callbacks=[timer]).train()
    tokens = (steps - warmup) * run.global_batch_size * run.data.seq_len
    return (timer.end - timer.start) / tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", nargs="?", default="recipes/quickstart.yaml")
    parser.add_argument("--data", default=str(CORPUS), help="the corpus (default: ../shared/data/pretrain)")
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--presets", nargs="+", help="presets for the regime table (default: the study's)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps timed per preset (after 5 warm-up)")
    args = parser.parse_args()
    spec = load_study(args.study, data=args.data)
    regime_table(args.presets or spec.presets, args.vocab_sizes, spec.token_budget)

    settings = run_settings(spec.run, vocab_size=spec.run.get("vocab_size"))
    plan = plan_study(spec, settings, device_bytes=24 * 2**30)
    per_token = {}
    for name in spec.presets:
        per_token[name] = seconds_per_token(study_run(spec.run, "regularized", spec.token_budget, name), args.steps, 5)
        print(f"{name}: {1 / per_token[name]:,.0f} tokens/s (Trainer, the study's run settings)")
    expected = upper = 0.0
    trained = [work for work in plan.work if not work.generated and work.model in per_token]
    what = max([36, *(len(work.what) + 2 for work in trained)])  # the longest label and two spaces
    print(f"\n{'work':<{what}}{'preset':<12}{'runs':>6}{'tokens':>14}{'minutes':>9}")
    for work in trained:
        minutes = work.tokens * per_token[work.model] / 60
        expected += minutes
        upper += work.tokens_upper * per_token[work.model] / 60
        print(f"{work.what:<{what}}{work.model:<12}{work.count:>6}{work.tokens:>14,.0f}{minutes:>9.1f}")
    print(
        f"\ntraining, expected: {expected:.0f} min; upper bound (every point each search may reach, every neighbour "
        f"re-trained in its tie-break): {upper:.0f} min (sampling not counted)"
    )


if __name__ == "__main__":
    main()
