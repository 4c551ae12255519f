"""`hf-infcompute generate TEACHER --output DIR --num-tokens N`: sample a synthetic corpus for distillation."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="sample a synthetic corpus from a teacher (model or logit ensemble)",
        description="Sample exactly N tokens unconditionally from a teacher at temperature 1 (by default) into a "
        "sharded dataset of packed rows, for a student to train on beside the real data. An interrupted run "
        "resumes when rerun with the same settings.",
    )
    parser.add_argument("teacher", help="teacher model folder (a single model or a logit ensemble) or hub id")
    parser.add_argument("--output", "-o", required=True, help="folder for the shards and generation.json")
    parser.add_argument("--num-tokens", type=int, required=True, help="tokens to generate, e.g. 10_000_000")
    parser.add_argument(
        "--seq-len", type=int, default=None, help="tokens per row (default: the length the teacher was trained on)"
    )
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass; 1.0 disables (default)")
    parser.add_argument("--top-k", type=int, default=0, help="top-k sampling; 0 disables (default)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="rows per generate call (default: sized to the KV-cache budget on a GPU, 64 on CPU; vllm: requests, 4096)",
    )
    parser.add_argument("--shard-tokens", type=int, default=None, help="tokens per shard (default 10M)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--backend", choices=("transformers", "vllm"), default="transformers")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--dtype", default="auto", help="teacher dtype: auto (bfloat16 on a GPU, float32 on CPU), float32, bfloat16"
    )
    parser.add_argument(
        "--ensemble-mode",
        choices=("logit_average", "pooled"),
        default="logit_average",
        help="an ensemble teacher: logit_average samples the ensemble's own distribution (any backend); pooled "
        "samples each member alone for its share of the rows, a mixture of the members (vllm only)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_infcompute.generation import generate_synthetic
    from hf_infcompute.generation.synthetic import DEFAULT_SHARD_TOKENS

    result = generate_synthetic(
        args.teacher,
        args.output,
        num_tokens=args.num_tokens,
        seq_len=args.seq_len,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        batch_size=args.batch_size,
        shard_tokens=args.shard_tokens or DEFAULT_SHARD_TOKENS,
        seed=args.seed,
        backend=args.backend,
        device=args.device,
        dtype=args.dtype,
        ensemble_mode=args.ensemble_mode,
    )
    teacher = result.manifest["teacher"]
    kind = f"logit ensemble of {teacher['members']}" if teacher["ensemble"] else "single model"
    print(
        f"\n{result.tokens:,} tokens in {result.rows:,} rows of {result.manifest['settings']['seq_len']} "
        f"({result.shards} shards, {result.resumed_shards} already on disk) in {result.output_dir}\n"
        f"  teacher: {teacher['name']} ({kind})\n"
        f"  sampled {result.sampled_tokens:,} tokens in {result.wall_time_s:.0f} s "
        f"({result.tokens_per_second:,.0f} tokens/s)"
    )
    return 0
