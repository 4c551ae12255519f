"""Peak memory and tokens/s of preparing a corpus (tokenize and pack) at two sizes and two worker counts, in one run.

    python benchmarks/data_prep.py [--scale 1.0] [--tokenizer PATH] [--seq-len 1024]

The shared corpus is repeated into temporary corpora of 5M and 50M tokens (times `--scale`); each is prepared cold
(fresh `datasets` and project caches) with `preprocessing_num_workers` 1 and 2, each preparation in its own
subprocess. Targets: peak memory at 50M tokens within 1.2x of that at 5M; 2 workers at least 1.5x faster than 1.

Memory is reported twice: the largest process's peak RSS (`ru_maxrss`), which also counts the pages of memory-mapped
Arrow files it has read (page cache the kernel reclaims at will), and the peak anonymous memory of the preparation's
process tree (`Pss_Anon` summed over the process and its workers, sampled at most every 20 ms: no file pages, and
pages a forked worker shares with its parent counted once), which is what must not grow with the corpus. Reading
`smaps_rollup` walks a process's page tables (some 6 ms for a process that has imported torch) on the cores the
preparation runs on, so the sampler waits `1 / SAMPLER_DUTY` times as long as each sample took: it takes at most that
share of one core, and its CPU seconds are printed beside the preparation's. The tokenizer runs single-threaded in
each process (TOKENIZERS_PARALLELISM=false), so that the worker count is the only parallelism; the BPE is trained
once, before the measured preparations.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "pretrain"
SIZES = (5_000_000, 50_000_000)
WORKERS = (1, 2)
SAMPLE_S = 0.02
SAMPLER_DUTY = 0.05
MEMORY_TARGET, SPEED_TARGET = 1.2, 1.5


def train_tokenizer(folder: Path, vocab_size: int) -> Path:
    from hf_infcompute.data.tokenizer import take_chars, train_bpe_tokenizer

    texts = (json.loads(line)["text"] for path in sorted(CORPUS.glob("*.jsonl")) for line in path.open())
    train_bpe_tokenizer(list(take_chars(texts, 2_000_000)), vocab_size).save_pretrained(folder)
    return folder


def chars_per_token(tokenizer_dir: Path) -> float:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    texts = [json.loads(line)["text"] for line in sorted(CORPUS.glob("*.jsonl"))[-1].open()]
    return sum(map(len, texts)) / sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])


def write_corpus(folder: Path, n_chars: int) -> Path:
    """The shared corpus's documents, repeated in order until about `n_chars` characters, in files of ~3 MB."""
    folder.mkdir(parents=True)
    lines = [line for path in sorted(CORPUS.glob("*.jsonl")) for line in path.open()]
    written = part = 0
    while written < n_chars:
        with (folder / f"part-{part:04d}.jsonl").open("w") as out:
            for line in lines[(part % 6) * len(lines) // 6 : (part % 6 + 1) * len(lines) // 6]:
                out.write(line)
                written += len(json.loads(line)["text"])
                if written >= n_chars:
                    break
        part += 1
    return folder


def anonymous_bytes(process: psutil.Process) -> int:
    """The process's share of anonymous memory (Linux `Pss_Anon`): pages a forked worker still shares with its
    parent count once over the tree, and memory-mapped file pages not at all."""
    for line in Path(f"/proc/{process.pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss_Anon:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("this kernel reports no Pss_Anon in /proc/PID/smaps_rollup (Linux 5.x or later needed)")


def setup(settings: str) -> None:
    """Train the BPE unless a tokenizer is given, and print its characters per token. It runs in a subprocess so
    that this process stays small: a child's `ru_maxrss` starts from its parent's peak RSS."""
    tokenizer_dir, train = json.loads(settings)
    print(chars_per_token(train_tokenizer(Path(tokenizer_dir), 8192) if train else Path(tokenizer_dir)))


def measure(corpus: Path, tokenizer_dir: Path, workers: int, seq_len: int, scratch: Path) -> dict:
    """Prepare `corpus` in a subprocess; its seconds, tokens, peak RSS and the tree's peak anonymous memory."""
    settings = {
        "corpus": str(corpus),
        "tokenizer": str(tokenizer_dir),
        "cache_dir": str(scratch / "cache"),
        "seq_len": seq_len,
        "token_budget": seq_len,
        "preprocessing_num_workers": workers,
    }
    env = {**os.environ, "HF_DATASETS_CACHE": str(scratch / "hf_datasets"), "TOKENIZERS_PARALLELISM": "false"}
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", json.dumps(settings)], env=env, stdout=subprocess.PIPE, text=True
    )
    root, peak_anonymous, sampler_cpu = psutil.Process(child.pid), 0, time.process_time()
    while child.poll() is None:
        began = time.perf_counter()
        with contextlib.suppress(psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
            peak_anonymous = max(peak_anonymous, sum(map(anonymous_bytes, [root, *root.children(recursive=True)])))
        time.sleep(max(SAMPLE_S, (time.perf_counter() - began) / SAMPLER_DUTY))
    output = child.stdout.read()
    if child.returncode:
        raise SystemExit(f"preparing {corpus} with {workers} worker(s) failed (exit {child.returncode})")
    result = json.loads(output.strip().splitlines()[-1])
    return {**result, "peak_anonymous_mib": peak_anonymous / 2**20, "sampler_cpu_s": time.process_time() - sampler_cpu}


def child(settings: str) -> None:
    """Prepare one corpus and print its tokens, seconds, CPU seconds and peak RSS (this process and its workers), as
    JSON."""
    from hf_infcompute.data import DataArguments, prepare_data

    started, cpu_started = time.perf_counter(), _cpu_seconds()
    data = prepare_data(DataArguments(**json.loads(settings)))
    seconds, cpu_seconds = time.perf_counter() - started, _cpu_seconds() - cpu_started
    peak_kib = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    result = {"tokens": data.corpus_tokens, "seconds": seconds, "cpu_seconds": cpu_seconds}
    print(json.dumps({**result, "peak_rss_mib": peak_kib / 1024}))


def _cpu_seconds() -> float:
    """User and system CPU seconds of this process and its ended workers."""
    usages = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(usage.ru_utime + usage.ru_stime for usage in usages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="Multiply both corpus sizes (0.1: 0.5M and 5M).")
    parser.add_argument("--tokenizer", help="A pretrained tokenizer folder or hub id (default: a BPE of 8,192).")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--setup", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    if args.setup:
        return setup(args.setup)
    with tempfile.TemporaryDirectory(prefix="data_prep_") as tmp:
        tmp = Path(tmp)
        tokenizer_dir = Path(args.tokenizer) if args.tokenizer else tmp / "tokenizer"
        prepared = json.dumps([str(tokenizer_dir), not args.tokenizer])
        command = [sys.executable, __file__, "--setup", prepared]
        ratio = float(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout.split()[-1])
        results = {}
        for size in SIZES:
            corpus = write_corpus(tmp / f"corpus-{size}", int(size * args.scale * ratio))
            for workers in WORKERS:
                with tempfile.TemporaryDirectory(dir=tmp) as scratch:
                    results[size, workers] = measure(corpus, tokenizer_dir, workers, args.seq_len, Path(scratch))
                r = results[size, workers]
                print(
                    f"{r['tokens'] / 1e6:7.2f}M tokens  workers={workers}  {r['seconds']:7.1f} s  "
                    f"(CPU {r['cpu_seconds']:6.1f} s, sampler {r['sampler_cpu_s']:4.1f} s)  "
                    f"{r['tokens'] / r['seconds']:>9,.0f} tokens/s  peak RSS {r['peak_rss_mib']:7.0f} MiB  "
                    f"peak anonymous (all processes) {r['peak_anonymous_mib']:7.0f} MiB",
                    flush=True,
                )
    small, large = SIZES
    for workers in WORKERS:
        anonymous = results[large, workers]["peak_anonymous_mib"] / results[small, workers]["peak_anonymous_mib"]
        rss = results[large, workers]["peak_rss_mib"] / results[small, workers]["peak_rss_mib"]
        print(
            f"workers={workers}: {large // small}x the corpus, peak anonymous memory {anonymous:.2f}x "
            f"(target <= {MEMORY_TARGET}x: {'met' if anonymous <= MEMORY_TARGET else 'MISSED'}), peak RSS {rss:.2f}x"
        )
    for size in SIZES:
        speed = (results[size, 1]["seconds"] / results[size, 1]["tokens"]) / (
            results[size, 2]["seconds"] / results[size, 2]["tokens"]
        )
        verdict = "met" if speed >= SPEED_TARGET else "MISSED"
        target = f" (target >= {SPEED_TARGET}x: {verdict})" if size == large else ""
        print(f"{size * args.scale / 1e6:g}M tokens: 2 workers {speed:.2f}x as fast as 1{target}")


if __name__ == "__main__":
    main()
