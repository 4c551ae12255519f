"""Tokens/s of `RegularizedTrainer` against a plain PyTorch loop, same model, data and precision, in one run.

    python benchmarks/trainer_throughput.py [--preset tiny-2m] [--steps 60] [--precision fp32|bf16]

Prints both throughputs and their ratio (target: Trainer / loop >= 0.9). On a CUDA machine, `--preset llama-150m
--precision bf16 --seq-len 4096` also prints the model FLOPs utilisation (6 N tokens/s over the GPU's bf16 peak).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback, get_cosine_schedule_with_warmup

from hf_infcompute.data import PackedCollator, prepare_data
from hf_infcompute.models import count_parameters
from hf_infcompute.training import decay_parameter_names, parse_run_config
from hf_infcompute.training.pretraining import build_trainer

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "pretrain"
H100_BF16_PEAK_FLOPS = 989e12


class StepTimer(TrainerCallback):
    """Wall time of the optimizer steps after `skip` warm-up steps."""

    def __init__(self, skip: int) -> None:
        self.skip, self.start, self.end = skip, None, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.skip:
            _sync()
            self.start = time.perf_counter()
        _sync()
        self.end = time.perf_counter()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def trainer_tokens_per_second(run, data, steps: int, warmup: int) -> float:
    timer = StepTimer(warmup)
    trainer = build_trainer(run, data, callbacks=[timer])
    trainer.train()
    tokens = (steps - warmup) * run.global_batch_size * run.data.seq_len
    return tokens / (timer.end - timer.start)


def loop_tokens_per_second(run, data, steps: int, warmup: int) -> float:
    """The same optimisation written by hand: AdamW groups, cosine schedule, clipping, autocast."""
    model = build_trainer(run, data).model.to(run.training.device)
    args = run.training
    decay = set(decay_parameter_names(model))
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": args.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  eps=args.adam_epsilon)
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, math.ceil(0.01 * steps)), steps)
    loader = torch.utils.data.DataLoader(data.train, batch_size=args.per_device_train_batch_size, shuffle=True,
                                         collate_fn=PackedCollator(data.tokenizer.pad_token_id), drop_last=True)
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    batches = iter(loader)
    model.train()
    for step in range(steps):
        if step == warmup:
            _sync()
            start = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        batch = {k: v.to(args.device) for k, v in batch.items()}
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    _sync()
    return (steps - warmup) * args.per_device_train_batch_size * run.data.seq_len / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny-2m")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--corpus", default=str(CORPUS))
    cli = parser.parse_args()
    budget = cli.steps * cli.batch_size * cli.seq_len
    with tempfile.TemporaryDirectory() as tmp:
        run = parse_run_config({
            "corpus": cli.corpus, "token_budget": budget, "seq_len": cli.seq_len, "preset": cli.preset,
            "per_device_train_batch_size": cli.batch_size, "precision": cli.precision, "num_train_epochs": 1,
            "save_strategy": "no", "logging_steps": 1000, "disable_tqdm": True,
        })
        run.training.output_dir = tmp
        data = prepare_data(run.data)
        loop = loop_tokens_per_second(run, data, cli.steps, cli.warmup)
        trainer = trainer_tokens_per_second(run, data, cli.steps, cli.warmup)
        loop_again = loop_tokens_per_second(run, data, cli.steps, cli.warmup)
    loop = (loop + loop_again) / 2  # bracket the Trainer between two loop runs against drift
    params = count_parameters(build_trainer(run, data).model.config)
    print(f"preset {cli.preset} ({params.total:,} parameters), batch {cli.batch_size} x {cli.seq_len}, {cli.precision}")
    print(f"plain loop:         {loop:,.0f} tokens/s")
    print(f"RegularizedTrainer: {trainer:,.0f} tokens/s")
    print(f"ratio trainer/loop: {trainer / loop:.3f} (target >= 0.9)")
    if torch.cuda.is_available():
        mfu = 6 * params.total * trainer / H100_BF16_PEAK_FLOPS
        print(f"model FLOPs utilisation (6N tokens/s over 989 TFLOP/s): {mfu:.1%}")


if __name__ == "__main__":
    main()
