"""Tokens/s of `RegularizedTrainer` against a plain PyTorch loop, same model, data and precision, in one run.

    python benchmarks/trainer_throughput.py [--preset tiny-2m] [--steps 60] [--precision fp32|bf16]

Prints both throughputs and their ratio (target: Trainer / loop >= 0.9), and the Trainer's model FLOPs per second:
tokens/s x training FLOPs per token (`hf_infcompute.models.flops`: the blocks' matmuls, the LM head and causal
attention, 3 x forward; embedding lookups not counted). The utilisation (MFU) divides them by the dense peak of the
detected GPU in the run's dtype (e.g. `--preset llama-150m --precision bf16 --seq-len 4096` on an H100); on a CPU or an
unknown device the peak is unknown, and `--measure-peak` times a large matmul in that dtype to divide by instead.
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
from hf_infcompute.models.flops import device_peak_flops, flops_per_token
from hf_infcompute.training import decay_parameter_names, parse_run_config
from hf_infcompute.training.pretraining import build_trainer

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "pretrain"


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
    optimizer = torch.optim.AdamW(
        groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
    )
    schedule = get_cosine_schedule_with_warmup(optimizer, max(1, math.ceil(0.01 * steps)), steps)
    loader = torch.utils.data.DataLoader(
        data.train,
        batch_size=args.per_device_train_batch_size,
        shuffle=True,
        collate_fn=PackedCollator(data.tokenizer.pad_token_id),
        drop_last=True,
    )
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


def measured_matmul_flops(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of square `size` matmuls in `dtype` on `device`, the best of `repeats`: a measured stand-in for a peak."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    best = math.inf
    for _ in range(repeats + 1):  # the first call warms up
        _sync()
        start = time.perf_counter()
        a @ b
        _sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def print_utilisation(run, config, tokens_per_second: float, measure_peak: bool) -> None:
    """Model FLOPs per second of the Trainer, by term, over the device's peak (or a measured matmul peak)."""
    flops = flops_per_token(config, run.data.seq_len)
    achieved = tokens_per_second * flops.training
    dtype = torch.bfloat16 if run.training.bf16 else torch.float32
    print(
        f"training FLOPs/token: {flops.training:.4g} = 3 x (blocks' matmuls {flops.non_embedding:.4g} + LM head "
        f"{flops.lm_head:.4g} + causal attention {flops.attention:.4g}); embedding lookups not counted"
    )
    print(f"model FLOP/s (Trainer): {achieved / 1e12:.4f} TFLOP/s")
    device = run.training.device
    peak = device_peak_flops(device, dtype)
    source = torch.cuda.get_device_name(device) if peak is not None else None
    if peak is None and measure_peak:
        peak, source = measured_matmul_flops(device, dtype), f"measured matmul peak on {device}"
    if peak is None:
        print(f"MFU: peak unknown for {device} (pass --measure-peak to divide by a measured matmul peak)")
    else:
        print(f"MFU: {achieved / peak:.1%} of {peak / 1e12:.4g} TFLOP/s ({source}, {dtype})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny-2m")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--corpus", default=str(CORPUS))
    parser.add_argument(
        "--measure-peak",
        action="store_true",
        help="where the device's peak is unknown (a CPU), divide by a measured matmul peak",
    )
    cli = parser.parse_args()
    budget = cli.steps * cli.batch_size * cli.seq_len
    with tempfile.TemporaryDirectory() as tmp:
        run = parse_run_config(
            {
                "corpus": cli.corpus,
                "token_budget": budget,
                "seq_len": cli.seq_len,
                "preset": cli.preset,
                "per_device_train_batch_size": cli.batch_size,
                "precision": cli.precision,
                "num_train_epochs": 1,
                "save_strategy": "no",
                "logging_steps": 1000,
                "disable_tqdm": True,
            }
        )
        run.training.output_dir = tmp
        data = prepare_data(run.data)
        loop = loop_tokens_per_second(run, data, cli.steps, cli.warmup)
        trainer = trainer_tokens_per_second(run, data, cli.steps, cli.warmup)
        loop_again = loop_tokens_per_second(run, data, cli.steps, cli.warmup)
    loop = (loop + loop_again) / 2  # bracket the Trainer between two loop runs against drift
    config = build_trainer(run, data).model.config
    params = count_parameters(config)
    print(f"preset {cli.preset} ({params.total:,} parameters), batch {cli.batch_size} x {cli.seq_len}, {cli.precision}")
    print(f"plain loop:         {loop:,.0f} tokens/s")
    print(f"RegularizedTrainer: {trainer:,.0f} tokens/s")
    print(f"ratio trainer/loop: {trainer / loop:.3f} (target >= 0.9)")
    print_utilisation(run, config, trainer, cli.measure_peak)


if __name__ == "__main__":
    main()
