"""Scoring speed of a LogitEnsemble: one cache-free forward pass of K members against K passes of one member.

    python benchmarks/ensemble_speed.py [--members 2 4 8] [--dtypes float32 bfloat16] [--hidden 64] [--layers 2]
                                        [--vocab 1024] [--batch 8] [--seq-len 128] [--attn sdpa|eager]
                                        [--device cpu|cuda]

Prints, for each dtype and K, the best time of one ensemble forward pass (no gradients, no cache, as lm-eval and a
KD teacher call it), its tokens/s, and its ratio to K times one member's pass: the cost of combining the members'
logits (1.0: none). Runs on CUDA when available, else on CPU. (Members run one after another: a batched vmap path
over stacked weights was measured on CPU, fp32 and bf16, with no consistent gain, and removed.)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_infcompute.ensemble import LogitEnsembleForCausalLM


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, nargs="+", default=[2, 4, 8], help="ensemble sizes K")
    parser.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"], default=["float32", "bfloat16"])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa", help="members' attention implementation")
    parser.add_argument("--repeats", type=int, default=20, help="timed forward passes per setting (best reported)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args()


def tiny_member(args: argparse.Namespace, seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=max(1, args.hidden // 32),
        max_position_embeddings=args.seq_len,
        tie_word_embeddings=True,
        attn_implementation=args.attn,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def forward_seconds(model: Callable[..., object], input_ids: torch.Tensor) -> float:
    _sync(input_ids.device)
    start = time.perf_counter()
    model(input_ids)  # no `use_cache`: the ensemble builds no cache, as when lm-eval scores it
    _sync(input_ids.device)
    return time.perf_counter() - start


def best_seconds(models: dict[str, Callable[..., object]], input_ids: torch.Tensor, repeats: int) -> dict[str, float]:
    """Best of `repeats` timed passes of each model, alternating (so that other load hits all alike) after a warm-up."""
    samples = {name: [] for name in models}
    for repeat in range(repeats + 1):
        for name, model in models.items():
            seconds = forward_seconds(model, input_ids)
            if repeat:
                samples[name].append(seconds)
    return {name: min(seconds) for name, seconds in samples.items()}


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    input_ids = torch.randint(0, args.vocab, (args.batch, args.seq_len), device=device)
    tokens = input_ids.numel()
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, members: hidden {args.hidden}, "
        f"{args.layers} layers, vocab {args.vocab}, {args.attn}; batch {args.batch} x {args.seq_len} tokens"
    )
    print(f"{'dtype':>9} {'K':>3} {'member s':>10} {'ensemble s':>11} {'tokens/s':>10} {'ens/(K x member)':>17}")
    for dtype in args.dtypes:
        for k in args.members:
            members = [tiny_member(args, seed).to(device, getattr(torch, dtype)).eval() for seed in range(k)]
            ensemble = LogitEnsembleForCausalLM.from_members(members).to(device).eval()
            # The member alone with the cache off: what the ensemble runs K times.
            single = partial(members[0], use_cache=False)
            times = best_seconds({"member": single, "ensemble": ensemble}, input_ids, args.repeats)
            ratio = times["ensemble"] / (k * times["member"])
            print(
                f"{dtype:>9} {k:>3} {times['member']:>10.4f} {times['ensemble']:>11.4f} "
                f"{tokens / times['ensemble']:>10,.0f} {ratio:>17.2f}"
            )


if __name__ == "__main__":
    main()
