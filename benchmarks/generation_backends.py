"""Compare the sampling backends: tokens/s and token statistics of vLLM vs transformers on one teacher.

    python benchmarks/generation_backends.py [--teacher MODEL_DIR] [--num-tokens N] [--seq-len L]
                                             [--dtype bfloat16|float32]

Both backends run the teacher at one dtype (`--dtype`; default bfloat16 on a GPU, float32 on CPU), so their speeds
compare like for like. Both backends should sample the same distribution: the total-variation distance between
their unigram distributions should be no larger than between two transformers runs with different seeds (the
noise floor).
Without a teacher a tiny random Llama is built (its output head widened so its distribution is far from uniform).
vLLM is skipped, with the reason, where it is not installed or no CUDA device is visible.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_infcompute.data.tokenizer import train_bpe_tokenizer
from hf_infcompute.errors import InputError
from hf_infcompute.generation import generate_synthetic, load_synthetic
from hf_infcompute.generation.backends import require_vllm


def build_tiny_teacher(folder: Path) -> Path:
    texts = [f"sample text number {i} about foxes, dogs and {i % 13} other animals. " * 4 for i in range(300)]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=512)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=224,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def unigram(output_dir: Path, vocab_size: int) -> np.ndarray:
    rows = np.asarray(load_synthetic(output_dir)["input_ids"])[:, 1:]  # sampled tokens, start token dropped
    counts = np.bincount(rows.ravel(), minlength=vocab_size).astype(np.float64)
    return counts / counts.sum()


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(p - q).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", help="teacher model folder (default: a tiny random Llama)")
    parser.add_argument("--num-tokens", type=int, default=None, help="tokens per run (default 1M on GPU, 20K on CPU)")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=None, help="transformers rows per generate call")
    parser.add_argument(
        "--dtype",
        choices=["bfloat16", "float32"],
        default=None,
        help="the teacher's dtype in both backends (default: bfloat16 on a GPU, float32 on CPU)",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    dtype = args.dtype or ("bfloat16" if cuda else "float32")
    num_tokens = args.num_tokens or (1_000_000 if cuda else 20_000)
    batch_size = args.batch_size or (256 if cuda else 32)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        teacher = Path(args.teacher) if args.teacher else build_tiny_teacher(work / "teacher")
        runs = [("transformers", 0, batch_size), ("transformers", 1, batch_size)]
        try:
            require_vllm()
            runs.append(("vllm", 0, None))
        except InputError as error:
            print(f"vllm skipped: {error}")
        results = {}
        for backend, seed, batch in runs:
            name = f"{backend} seed {seed}"
            results[name] = generate_synthetic(
                teacher,
                work / name.replace(" ", "-"),
                num_tokens=num_tokens,
                seq_len=args.seq_len,
                backend=backend,
                seed=seed,
                batch_size=batch,
                dtype=dtype,
            )

        vocab = max(int(np.asarray(load_synthetic(r.output_dir)["input_ids"]).max()) for r in results.values()) + 1
        dists = {name: unigram(r.output_dir, vocab) for name, r in results.items()}
        reference = dists["transformers seed 0"]
        device = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
        print(f"\nteacher {teacher}, {num_tokens:,} tokens per run, rows of {args.seq_len}, {dtype}, {device}")
        print(f"{'run':<20} {'tokens/s':>12} {'seconds':>9} {'entropy':>9} {'TV vs transformers seed 0':>26}")
        for name, result in results.items():
            p = dists[name]
            entropy = float(-(p[p > 0] * np.log(p[p > 0])).sum())
            tv = total_variation(p, reference)
            speed = result.tokens_per_second
            print(f"{name:<20} {speed:>12,.0f} {result.wall_time_s:>9.1f} {entropy:>9.4f} {tv:>26.4f}")
        print("(transformers seed 1 gives the noise floor of the TV distance at this sample size)")


if __name__ == "__main__":
    main()
