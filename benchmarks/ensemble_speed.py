"""Forward time of a LogitEnsemble run as one batched call over stacked weights (vmap) against a loop over members.

    python benchmarks/ensemble_speed.py [--members 2 4 8] [--hidden 64] [--layers 2] [--vocab 1024] [--batch 8]
                                        [--seq-len 128] [--attn sdpa|eager] [--device cpu|cuda]

Prints, for each K, the best time of one forward pass (no gradients, no cache) both ways and the batched / looped ratio
(below 1: batching wins). Runs on CUDA when available, else on CPU; `member_execution="auto"` picks the loop on CPU.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_infcompute.ensemble import LogitEnsembleForCausalLM


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, nargs="+", default=[2, 4, 8], help="ensemble sizes K")
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
def forward_seconds(model: LogitEnsembleForCausalLM, input_ids: torch.Tensor) -> float:
    _sync(input_ids.device)
    start = time.perf_counter()
    model(input_ids, use_cache=False)
    _sync(input_ids.device)
    return time.perf_counter() - start


def main() -> None:
    args = parse_args()
    # On CPU, vmap over sdpa warns that it falls back to a per-member loop; that cost is what the ratio measures.
    warnings.filterwarnings("ignore", message=".*not yet implemented the batching rule.*")
    device = torch.device(args.device)
    input_ids = torch.randint(0, args.vocab, (args.batch, args.seq_len), device=device)
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, members: hidden {args.hidden}, "
        f"{args.layers} layers, vocab {args.vocab}, {args.attn}; batch {args.batch} x {args.seq_len} tokens"
    )
    print(f"{'K':>3} {'loop s':>10} {'vmap s':>10} {'vmap/loop':>10}")
    for k in args.members:
        members = [tiny_member(args, seed) for seed in range(k)]
        ensembles = {
            execution: LogitEnsembleForCausalLM.from_members(members, member_execution=execution).to(device).eval()
            for execution in ("loop", "vmap")
        }
        samples = {execution: [] for execution in ensembles}
        for repeat in range(args.repeats + 1):  # alternating, so that other load hits both alike; first is warm-up
            for execution, ensemble in ensembles.items():
                seconds = forward_seconds(ensemble, input_ids)
                if repeat:
                    samples[execution].append(seconds)
        # Best of `repeats`, as timeit reports: the run least disturbed by other load.
        times = {execution: min(seconds) for execution, seconds in samples.items()}
        print(f"{k:>3} {times['loop']:>10.4f} {times['vmap']:>10.4f} {times['vmap'] / times['loop']:>10.2f}")


if __name__ == "__main__":
    main()
