"""Peak memory and time of one training step with the chunked loss against the full one, side by side.

    python benchmarks/loss_memory.py [--shape PRESET:BATCHxSEQ:VOCAB ...] [--steps 5] [--precision fp32|bf16]
                                     [--chunk-tokens 1024]

Each measurement runs in a fresh subprocess (forward and backward of a model of the preset's shape on random
tokens), so that its peak resident memory (`ru_maxrss`; on a GPU, `torch.cuda.max_memory_allocated`) is its own.
Prints, per shape, the peak memory above the process's baseline and the fastest step time of `full` and `chunked`
(the fastest, which a busy machine disturbs least).
The default shapes are the quickstart's (tiny-1m, 16 x 128 tokens, vocabulary 4,096) and a large-vocabulary one.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from hf_infcompute.models import build_model, get_preset
from hf_infcompute.planning.memory import DEFAULT_LOSS_CHUNK_TOKENS
from hf_infcompute.training.loss_forward import install_loss_forward

DEFAULT_SHAPES = ("tiny-1m:16x128:4096", "tiny-0.5m:8x1024:32768")


def parse_shape(shape: str) -> tuple[str, int, int, int]:
    preset, tokens, vocab = shape.split(":")
    batch, seq = tokens.lower().split("x")
    return preset, int(batch), int(seq), int(vocab)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(implementation: str, shape: str, steps: int, precision: str, chunk_tokens: int) -> dict[str, float]:
    """Peak memory above the baseline (MiB) and the fastest of `steps` forward+backward steps (s), in this process."""
    preset, batch, seq, vocab = parse_shape(shape)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(get_preset(preset).build_config(vocab_size=vocab), seed=0).to(device)
    install_loss_forward(model, implementation, chunk_tokens)
    input_ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0)).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step() -> None:
        with autocast:
            loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        model.zero_grad(set_to_none=False)  # the gradients stay allocated, as in training
        if device.type == "cuda":
            torch.cuda.synchronize()

    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    baseline = _peak_mib(device)
    step()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"peak_mib": _peak_mib(device) - baseline, "step_s": min(times)}


def measure_in_subprocess(implementation: str, shape: str, steps: int, precision: str, chunk_tokens: int) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        implementation,
        "--shape",
        shape,
        "--steps",
        str(steps),
        "--precision",
        precision,
        "--chunk-tokens",
        str(chunk_tokens),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", action="append", help="PRESET:BATCHxSEQ:VOCAB (repeatable)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--chunk-tokens", type=int, default=DEFAULT_LOSS_CHUNK_TOKENS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shapes = args.shape or list(DEFAULT_SHAPES)
    if args.child:
        print(json.dumps(measure(args.child, shapes[0], args.steps, args.precision, args.chunk_tokens)))
        return
    print(f"{args.precision}, chunks of {args.chunk_tokens} tokens, fastest of {args.steps} steps")
    header = (
        f"{'shape':<26} {'full MiB':>9} {'chunked MiB':>12} {'ratio':>6} {'full s':>8} {'chunked s':>10} {'ratio':>6}"
    )
    print(header)
    for shape in shapes:
        full, chunked = (
            measure_in_subprocess(implementation, shape, args.steps, args.precision, args.chunk_tokens)
            for implementation in ("full", "chunked")
        )
        print(
            f"{shape:<26} {full['peak_mib']:>9.0f} {chunked['peak_mib']:>12.0f} "
            f"{chunked['peak_mib'] / max(full['peak_mib'], 1e-9):>6.2f} {full['step_s']:>8.4f} "
            f"{chunked['step_s']:>10.4f} {chunked['step_s'] / full['step_s']:>6.2f}"
        )


if __name__ == "__main__":
    main()
