"""Tokens/s of `RegularizedTrainer` against a plain PyTorch loop, fp32 and bf16, each eager and compiled, in one run.

    python benchmarks/trainer_throughput.py [--preset tiny-1m] [--vocab-size 2048] [--seq-len 128] [--batch 16]
        [--steps 60] [--precision fp32 bf16] [--compile no yes regional] [--workers 2]
        [--model-vocab-size 128256] [--loss-implementation chunked] [--single-run] [--json FILE]

The defaults are the quickstart's shape. For every precision and compile setting the loop and the Trainer train the
same model from the same initial weights on the same batches in the same order, so each row reports, side by side:
steady tokens/s (after `--warmup` steps), the wall time of the whole run (compile included), and the losses after the
same steps (a fixed sample of training sequences and the validation set, both evaluated in fp32), which tell whether a
setting keeps the loss. Ratios: the Trainer over the loop of the same setting, and every row over the eager bf16
Trainer, in steady tokens/s and in run time. Compiled settings train the Trainer a second time ("Trainer2"): the runs
of a study share one process, and a later run reuses part of what the first compiled, which its run time shows.
With `--compile yes` the loop compiles the whole model (`torch.compile`) and with `--compile regional` by regions
(`accelerate.utils.compile_regions`: the repeated decoder blocks, then each other leaf module); the Trainer's
`torch_compile` always compiles by regions (`RegularizedTrainer`).

Measured at the quickstart's shape (tiny-1m, vocabulary 2,048, 16 x 128), on a shared 2-core CPU under load, so
`--threads 1` (two threads there ran 14x slower, contended); tokens/s / run s, Trainer (loop). 30 steps, with the
Trainer compiling the whole model as transformers does: fp32 7,041 / 9.0 s (7,624 / 8.3 s); bf16 7,378 / 9.2 s (6,688 /
8.6 s); fp32 compiled 5,371 / 31.8 s, its second run 5,101 / 13.3 s (4,807 / 77.7 s); bf16 compiled 7,084 / 14.7 s, its
second run 6,802 / 16.3 s (7,026 / 11.5 s): a whole-model compile traces again in every run, as accelerate wraps each
run's model in a new autocast wrapper whose identity dynamo guards (`TORCH_LOGS=recompiles`: "Cache line invalidated
... got deallocated"; 3-8 s a run here, against 0.3 s for the loop, whose compiled code serves the next model). 12
steps, by regions: bf16 eager 4,688 / 5.9 s (4,659 / 5.6 s); bf16 by regions 5,222 / 6.6 s, its second run 5,865 / 5.3
s (4,803 / 31.7 s, the cold compile): 1.25x the eager bf16 Trainer's tokens/s, and faster per run compile included. A
later run's first step by regions takes 1.0-2.0 s, as eager, also for another preset (dynamo then compiles dynamic
shapes once). All losses after the same steps agree to 1e-4. On a quiet 2-core CPU (tiny-1m, vocabulary 4,096):
Trainer fp32 13,540 and bf16 13,244; loop fp32 14,748, bf16 15,125, fp32 compiled 14,438, bf16 compiled 22,516.
Again on a quiet 2-core CPU, `--compile no regional`, 60 steps: at tiny-1m and vocabulary 4,096 (the LM head is half
the FLOPs) the eager bf16 Trainer 15,469 tokens/s, by regions 13,333 (0.86x: compile does not pay there); at the
quickstart's cpu-150k and vocabulary 512 the eager bf16 Trainer 45,653 tokens/s, by regions 59,955 (1.31x), its
second run 2.4 s against 3.0 s eager (1.24x per run, compile included). The Trainer's validation losses after
the same steps agree within 1e-3 across these settings (cpu-150k: 5.1990 eager, 5.1992 and 5.2001 compiled).
With `--workers 2` (two Trainers at once, one thread each, as the quickstart's two workers), quiet 2-core CPU,
cpu-150k, vocabulary 512, `--precision fp32 bf16 --compile no regional --steps 200 --warmup 20`: the eager bf16
Trainer 46,945 tokens/s, eager fp32 61,880, bf16 by regions 63,969 (its second run 63,534); two bf16 workers by regions
74,077 summed (1.58x the eager bf16 Trainer, 1.16x one compiled process), two eager fp32 workers 73,078 (1.56x). At
60 steps the same run gave 52,094 and 80,827 (1.55x): single rows vary by 10-15% from run to run, the ratios less.
The validation losses after the same steps agree within 1e-2 (4.5043-4.5159 at 200 steps, fp32 against bf16).

`--model-vocab-size` sizes the model's embedding and LM head (e.g. 128,256, the paper's Llama 3 vocabulary) beyond the
BPE's `--vocab-size`: the token ids stay those of the small BPE, which leaves the FLOPs as at the full vocabulary (the
head multiplies every hidden state by all its rows and the loss normalises over all of them, whatever the ids; the
embedding lookup is a gather, not counted). `--loss-implementation` is the run's (`chunked`: as `pretrain` installs
it), `--single-run` trains each compiled setting's Trainer once, and `--json` writes every row (with its per-step
times and MFU) and the model's figures to a file.

The model FLOPs per second of the first setting's Trainer follow: tokens/s x training FLOPs per token
(`hf_infcompute.models.flops`: the blocks' matmuls, the LM head and causal attention, 3 x forward; embedding lookups not
counted). The utilisation (MFU) divides them by the dense peak of the detected GPU in the run's dtype (e.g. `--preset
llama-150m --precision bf16 --compile no --seq-len 4096` on an H100); on a CPU or an unknown device the peak is
unknown, and `--measure-peak` times a large matmul in that dtype to divide by instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import compile_regions
from torch import nn
from transformers import PreTrainedModel, TrainerCallback, get_scheduler

from hf_infcompute.data import PackedCollator, PretrainingData, prepare_data
from hf_infcompute.errors import InputError
from hf_infcompute.models import count_parameters
from hf_infcompute.models.flops import device_peak_flops, flops_per_token
from hf_infcompute.models.presets import build_model
from hf_infcompute.training import RegularizedTrainer, decay_parameter_names, parse_run_config
from hf_infcompute.training.config import RunConfig
from hf_infcompute.training.loss_forward import install_loss_forward
from hf_infcompute.training.pretraining import build_model_for, check_model_fits, model_config_for
from hf_infcompute.training.sampler import EpochShuffleSampler
from hf_infcompute.workers import cpu_share

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "pretrain"
LOSS_SAMPLE = 64  # training sequences whose loss is compared after the run
# The settings a `--workers` process takes from this run; it gets its precision, compile and thread count apart.
WORKER_FLAGS = (
    "preset",
    "vocab_size",
    "model_vocab_size",
    "loss_implementation",
    "tokenizer_train_chars",
    "seq_len",
    "batch",
    "steps",
    "warmup",
    "logging_steps",
    "corpus",
)


@dataclass
class Measurement:
    """One run: steady tokens/s, wall seconds of the whole run (compile included), losses after it and the seconds of
    each step after the warm-up."""

    tokens_per_second: float
    run_seconds: float
    train_loss: float
    val_loss: float
    step_seconds: list[float]

    @property
    def step_rsd(self) -> float:
        """Relative standard deviation of the timed steps' seconds (0 for fewer than two)."""
        times = self.step_seconds
        if len(times) < 2:
            return 0.0
        mean = sum(times) / len(times)
        return math.sqrt(sum((t - mean) ** 2 for t in times) / (len(times) - 1)) / mean


class StepTimer(TrainerCallback):
    """Wall time of the optimizer steps after `skip` warm-up steps, and of each of them."""

    def __init__(self, skip: int) -> None:
        self.skip, self.start, self.end = skip, None, None
        self.step_seconds: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        _sync()
        now = time.perf_counter()
        if state.global_step == self.skip:
            self.start = now
        elif state.global_step > self.skip:
            self.step_seconds.append(now - self.end)
        self.end = now


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@torch.no_grad()
def fp32_loss(model: nn.Module, dataset, pad_token_id: int, batch_size: int) -> float:
    """Mean loss of `model` over `dataset` in fp32, without autocast, whatever the run trained in."""
    model.eval()
    collate = PackedCollator(pad_token_id)
    losses = []
    for start in range(0, len(dataset), batch_size):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = {k: v.to(next(model.parameters()).device) for k, v in collate(rows).items()}
        losses.append(float(model(**batch).loss) * len(rows))
    model.train()
    return sum(losses) / len(dataset)


def losses_after(model: nn.Module, run: RunConfig, data: PretrainingData) -> tuple[float, float]:
    """Training-sample and validation losses of `model`, in fp32."""
    sample = data.train.select(range(min(LOSS_SAMPLE, len(data.train))))
    pad, size = data.tokenizer.pad_token_id, run.training.per_device_eval_batch_size
    return fp32_loss(model, sample, pad, size), fp32_loss(model, data.validation, pad, size)


def model_for(run: RunConfig, data: PretrainingData, model_vocab_size: int | None) -> PreTrainedModel:
    """`build_model_for` (the run's preset, its `loss_implementation` installed), its embedding and LM head sized
    `model_vocab_size` when given (at least the tokenizer's length) instead of the tokenizer's vocabulary."""
    if model_vocab_size is None:
        return build_model_for(run, data)
    config = model_config_for(run, data)
    if model_vocab_size < config.vocab_size:
        raise InputError(
            f"--model-vocab-size {model_vocab_size} is below the tokenizer's {config.vocab_size} tokens: give at "
            "least that many rows, or leave it out to size the model by the tokenizer"
        )
    config.vocab_size = model_vocab_size
    model = build_model(config, seed=run.training.seed)
    args = run.training
    tokens = max(args.per_device_train_batch_size, args.per_device_eval_batch_size) * run.data.seq_len
    install_loss_forward(model, args.loss_implementation, args.loss_chunk_tokens, tokens_per_step=tokens)
    return model


def trainer_run(
    run: RunConfig, data: PretrainingData, steps: int, warmup: int, compiled: str, model_vocab_size: int | None
) -> Measurement:
    """`RegularizedTrainer` on the run (`torch_compile` compiles by regions whether `compiled` is yes or regional),
    built as `build_trainer` builds it around `model_for`'s model."""
    timer = StepTimer(warmup)
    check_model_fits(run)
    trainer = RegularizedTrainer(
        model=model_for(run, data, model_vocab_size),
        args=run.training,
        train_dataset=data.train,
        eval_dataset=data.validation,
        data_collator=PackedCollator(data.tokenizer.pad_token_id),
        processing_class=data.tokenizer,
        callbacks=[timer],
    )
    started = time.perf_counter()
    trainer.train()
    run_seconds = time.perf_counter() - started
    tokens = (steps - warmup) * run.global_batch_size * run.data.seq_len
    return Measurement(
        tokens / (timer.end - timer.start), run_seconds, *losses_after(trainer.model, run, data), timer.step_seconds
    )


def loop_run(
    run: RunConfig, data: PretrainingData, steps: int, warmup: int, compiled: str, model_vocab_size: int | None
) -> Measurement:
    """The same optimisation written by hand: AdamW groups, the Trainer's schedule, clipping, autocast, compile."""
    args = run.training
    model = model_for(run, data, model_vocab_size).to(args.device)
    decay = set(decay_parameter_names(model))
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decay], "weight_decay": args.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n not in decay], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(
        groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon
    )
    schedule = get_scheduler(args.lr_scheduler_type, optimizer, args.get_warmup_steps(steps), steps)
    loader = torch.utils.data.DataLoader(
        data.train,
        batch_size=args.per_device_train_batch_size,
        sampler=EpochShuffleSampler(len(data.train), seed=args.data_seed),  # the Trainer's order
        collate_fn=PackedCollator(data.tokenizer.pad_token_id),
    )
    compilers = {"no": lambda m: m, "yes": torch.compile, "regional": compile_regions}
    forward = compilers[compiled](model)
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    batches = iter(loader)
    model.train()
    step_seconds: list[float] = []
    started = previous = time.perf_counter()
    for step in range(steps):
        _sync()  # once a step, as the Trainer's StepTimer
        now = time.perf_counter()
        if step == warmup:
            steady = now
        elif step > warmup:
            step_seconds.append(now - previous)
        previous = now
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        batch = {k: v.to(args.device) for k, v in batch.items()}
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = forward(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    _sync()
    ended = time.perf_counter()
    step_seconds.append(ended - previous)
    tokens = (steps - warmup) * args.per_device_train_batch_size * run.data.seq_len
    return Measurement(tokens / (ended - steady), ended - started, *losses_after(model, run, data), step_seconds)


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


def peak_of(run: RunConfig, measure_peak: bool) -> tuple[float | None, str | None]:
    """The dense peak FLOP/s of the run's device in its dtype and where it comes from (None where unknown)."""
    device = run.training.device
    dtype = torch.bfloat16 if run.training.bf16 else torch.float32
    peak = device_peak_flops(device, dtype)
    if peak is not None:
        return peak, f"{torch.cuda.get_device_name(device)}, {dtype}"
    if measure_peak:
        return measured_matmul_flops(device, dtype), f"measured matmul peak on {device}, {dtype}"
    return None, None


def print_utilisation(run: RunConfig, config, tokens_per_second: float, peak: float | None, source: str | None) -> None:
    """Model FLOPs per second of the Trainer, by term, over the device's peak (or a measured matmul peak)."""
    flops = flops_per_token(config, run.data.seq_len)
    achieved = tokens_per_second * flops.training
    print(
        f"training FLOPs/token: {flops.training:.4g} = 3 x (blocks' matmuls {flops.non_embedding:.4g} + LM head "
        f"{flops.lm_head:.4g} + causal attention {flops.attention:.4g}); embedding lookups not counted"
    )
    print(f"model FLOP/s (Trainer): {achieved / 1e12:.4f} TFLOP/s")
    if peak is None:
        print(f"MFU: peak unknown for {run.training.device} (pass --measure-peak to divide by a measured matmul peak)")
    else:
        print(f"MFU: {achieved / peak:.1%} of {peak / 1e12:.4g} TFLOP/s ({source})")


def workers_run(cli: argparse.Namespace, precision: str, compiled: str) -> Measurement:
    """`cli.workers` processes training this setting's Trainer at once, each on its share of the cores, as the
    workers of `torchrun --nproc_per_node N -m hf_infcompute study` train a study's runs: their tokens/s summed (the
    processes wait for each other before training, so the steady windows overlap), the slowest run's seconds and
    worker 0's losses."""
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in vars(cli).items() if name in WORKER_FLAGS]
    with tempfile.TemporaryDirectory() as barrier:
        commands = [
            [sys.executable, __file__, *flags, "--precision", precision, "--compile", compiled]
            + ["--threads", str(cpu_share(cli.workers)), "--as-worker", f"{index},{cli.workers},{barrier}"]
            for index in range(cli.workers)
        ]
        processes = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for command in commands]
        outputs = [process.communicate()[0] for process in processes]
    if any(process.returncode for process in processes):
        raise SystemExit(f"a worker failed:\n{outputs}")
    measured = [Measurement(**json.loads(output.strip().splitlines()[-1])) for output in outputs]
    return Measurement(
        sum(m.tokens_per_second for m in measured),
        max(m.run_seconds for m in measured),
        measured[0].train_loss,
        measured[0].val_loss,
        measured[0].step_seconds,
    )


def as_worker(cli: argparse.Namespace) -> None:
    """One of `workers_run`'s processes: prepare the data, wait for the others, train, print the measurement."""
    index, count, barrier = cli.as_worker.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        run = run_config(cli, cli.precision[0], cli.compile[0], tmp)
        data = prepare_data(run.data)
        Path(barrier, f"ready-{index}").touch()
        while len(list(Path(barrier).glob("ready-*"))) < int(count):
            time.sleep(0.05)
        measured = trainer_run(run, data, cli.steps, cli.warmup, cli.compile[0], cli.model_vocab_size)
    print(json.dumps(dataclasses.asdict(measured)))


def run_config(cli: argparse.Namespace, precision: str, compiled: str, output_dir: str) -> RunConfig:
    loss = {"loss_implementation": cli.loss_implementation} if cli.loss_implementation else {}
    run = parse_run_config(
        {
            **loss,
            "corpus": cli.corpus,
            "token_budget": cli.steps * cli.batch * cli.seq_len,  # one epoch of `steps` steps
            "seq_len": cli.seq_len,
            "vocab_size": cli.vocab_size,
            "tokenizer_train_chars": cli.tokenizer_train_chars,
            "preset": cli.preset,
            "per_device_train_batch_size": cli.batch,
            "precision": precision,
            "torch_compile": compiled != "no",
            "num_train_epochs": 1,
            "save_strategy": "no",
            "logging_steps": cli.logging_steps,
            "disable_tqdm": True,
        }
    )
    run.training.output_dir = output_dir
    return run


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny-1m")
    parser.add_argument("--vocab-size", type=int, default=2048, help="of the BPE tokenizer trained on the corpus")
    parser.add_argument(
        "--model-vocab-size",
        type=int,
        help="rows of the model's embedding and LM head (default: the tokenizer's vocabulary; e.g. 128256, the "
        "paper's, with the BPE's token ids)",
    )
    parser.add_argument(
        "--loss-implementation",
        choices=["auto", "chunked", "full", "liger"],
        help="the run's loss_implementation (default: the run arguments')",
    )
    parser.add_argument("--tokenizer-train-chars", type=int, default=2_000_000)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", "--batch-size", dest="batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--logging-steps", type=int, default=10, help="the Trainer's, as in the study's runs")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--compile", nargs="+", default=["no", "yes"], choices=["no", "yes", "regional"])
    parser.add_argument("--single-run", action="store_true", help="train a compiled setting's Trainer once")
    parser.add_argument("--corpus", default=str(CORPUS))
    parser.add_argument(
        "--measure-peak",
        action="store_true",
        help="where the device's peak is unknown (a CPU), divide by a measured matmul peak",
    )
    parser.add_argument("--json", type=Path, help="also write the rows and the model's figures to this JSON file")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="also train each setting's Trainer in this many processes at once, each on its share of the cores "
        "(the study's `torchrun --nproc_per_node N`), and report their summed tokens/s",
    )
    parser.add_argument("--as-worker", help=argparse.SUPPRESS)  # index,count,barrier folder: one of those processes
    return parser


def main() -> None:
    cli = parser().parse_args()
    if cli.threads:
        torch.set_num_threads(cli.threads)
    if cli.as_worker:
        as_worker(cli)
        return
    settings = [(precision, compiled) for compiled in cli.compile for precision in cli.precision]
    rows: list[tuple[str, str, str, Measurement]] = []
    with tempfile.TemporaryDirectory() as tmp:
        first = run_config(cli, *settings[0], tmp)
        data = prepare_data(first.data)
        for precision, compiled in settings:
            run = run_config(cli, precision, compiled, tmp)
            # A compiled setting's Trainer runs twice: the study's later runs reuse what its first run compiled.
            second = compiled != "no" and not cli.single_run
            runners = [("loop", loop_run), ("Trainer", trainer_run)] + [("Trainer2", trainer_run)] * second
            for who, measure in runners:
                measured = measure(run, data, cli.steps, cli.warmup, compiled, cli.model_vocab_size)
                rows.append((who, precision, compiled, measured))
                print(f"measured {who} {precision} compile {compiled}: {measured}", flush=True)
                gc.collect()  # the run's model, gradients and optimizer state, before the next run's
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            if cli.workers > 1:
                rows.append((f"Trainer/{cli.workers}", precision, compiled, workers_run(cli, precision, compiled)))
                print(f"measured {cli.workers} Trainer workers {precision} compile {compiled}: {rows[-1][3]}")
    model = model_for(first, data, cli.model_vocab_size)
    config, loss_implementation = model.config, getattr(model, "loss_implementation", "full")
    del model
    flops = flops_per_token(config, cli.seq_len)
    # Each setting's own peak: bf16 and fp32 rows divide by their dtype's.
    peaks = {p: peak_of(run_config(cli, p, "no", "."), cli.measure_peak) for p in cli.precision}
    print(
        f"preset {cli.preset} ({count_parameters(config).total:,} parameters), vocabulary {config.vocab_size} "
        f"(token ids from a {len(data.tokenizer)}-token BPE), loss {loss_implementation}, "
        f"batch {cli.batch} x {cli.seq_len}, {cli.steps} steps (tokens/s after {cli.warmup})"
    )
    reference = next((m for who, p, c, m in rows if (who, p, c) == ("Trainer", "bf16", "no")), None)
    loops = {(p, c): m for who, p, c, m in rows if who == "loop"}
    print(
        f"{'runner':9} {'precision':9} {'compile':8} {'tokens/s':>9} {'run s':>7} {'train loss':>10} "
        f"{'val loss':>9} {'vs loop':>7} {'vs Trainer bf16':>15} {'(run s)':>7} {'step sd':>7} {'MFU':>6}"
    )
    table = []
    for who, precision, compiled, m in rows:
        loop = loops[precision, compiled]
        vs_loop = f"{m.tokens_per_second / loop.tokens_per_second:.3f}" if who != "loop" else ""
        speedup = f"{m.tokens_per_second / reference.tokens_per_second:.3f}" if reference else ""
        run_speedup = f"{reference.run_seconds / m.run_seconds:.3f}" if reference else ""
        peak = peaks[precision][0]
        mfu = m.tokens_per_second * flops.training / peak if peak else None
        print(
            f"{who:9} {precision:9} {compiled:8} {m.tokens_per_second:9,.0f} {m.run_seconds:7.2f} "
            f"{m.train_loss:10.4f} {m.val_loss:9.4f} {vs_loop:>7} {speedup:>15} {run_speedup:>7} "
            f"{m.step_rsd:7.1%} {'' if mfu is None else f'{mfu:.1%}':>6}"
        )
        table.append(
            {"runner": who, "precision": precision, "compile": compiled, **dataclasses.asdict(m)}
            | {"step_rsd": m.step_rsd, "mfu": mfu, "vs_loop": None if who == "loop" else float(vs_loop)}
        )
    loop, trainer = rows[0][3], rows[1][3]
    print(f"first setting ({settings[0][0]}, compile {settings[0][1]}):")
    print(f"plain loop:         {loop.tokens_per_second:,.0f} tokens/s")
    print(f"RegularizedTrainer: {trainer.tokens_per_second:,.0f} tokens/s")
    print(f"ratio trainer/loop: {trainer.tokens_per_second / loop.tokens_per_second:.3f} (target >= 0.9)")
    print_utilisation(first, config, trainer.tokens_per_second, *peaks[settings[0][0]])
    if cli.json:
        summary = {
            "preset": cli.preset,
            "parameters": count_parameters(config).total,
            "model_vocab_size": config.vocab_size,
            "tokenizer_vocab_size": len(data.tokenizer),
            "loss_implementation": loss_implementation,
            "micro_batch": cli.batch,
            "seq_len": cli.seq_len,
            "steps": cli.steps,
            "warmup": cli.warmup,
            "training_flops_per_token": flops.training,
            "lm_head_share_of_flops": flops.lm_head / flops.forward,
            "peak_flops": {p: peak for p, (peak, _) in peaks.items()},
            "peak_source": {p: source for p, (_, source) in peaks.items()},
            "rows": table,
        }
        cli.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
