"""The checks of `benchmarks/gpu_check.sh`, one function each; every run of a check appends ONE JSON line to a file.

    python benchmarks/gpu_checks.py --list
    python benchmarks/gpu_checks.py --check NAME [--device cuda|cpu] --results FILE [--work DIR]
    python benchmarks/gpu_checks.py --record NAME --status ok|skipped|failed --reason TEXT --results FILE

A line holds `name`, `status` (ok, skipped or failed), `figures`, `seconds`, `error` (the reason or the error's last
lines), `device` and `created_at`. The checks drive the project through its command line and benchmark scripts
(subprocesses with flags), so a changed entry point is a one-line change here. `--device cpu` runs a check at toy
size (no vLLM, no bf16 MFU): a dry rehearsal of the Python path before a GPU is spent on it. Only the standard library
is imported at the top: `--list` and `--record` work before the project is installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]
BENCHMARKS = REPOSITORY / "benchmarks"
PAPER_RECIPE = REPOSITORY / "recipes" / "paper-200M.yaml"
FSDP2_CONFIG = REPOSITORY / "recipes" / "accelerate" / "fsdp2.yaml"
LLAMA3_VOCAB = 128_256
PAPER_SEQ_LEN = 4096
GIB = 2**30
# The throughput check (`throughput_configuration`): the paper's smallest preset, timed steps after a warm-up.
THROUGHPUT_PRESET = "llama-150m"
THROUGHPUT_BPE_VOCAB = 2048  # the small BPE whose ids feed the 128,256-row model
THROUGHPUT_WARMUP = 3  # first steps: allocator growth, cuBLAS/flash heuristics and the regional compile's traces
THROUGHPUT_TIMED_STEPS = 15
THROUGHPUT_STABLE_RSD = 0.03  # per-step seconds' relative sd under which a row's MFU counts as stable
THROUGHPUT_LIMIT_S = 120  # the step's limit in gpu_check.sh
THROUGHPUT_MFU_FLOOR = 0.2  # the lowest MFU the time estimate allows for
THROUGHPUT_OVERHEAD_S = 50  # start-up, corpus, BPE and packing, two regional compiles, fp32 losses after each run
CHARS_PER_TOKEN = 5  # make_corpus text under the 2,048-token BPE: 4.0 measured, with a margin


class CheckSkipped(Exception):
    """A check that cannot run here (e.g. vLLM on a CPU); its message is the reason."""


# ----------------------------------------------------------------------------------------------------------- helpers
def run_command(command: list[str], *, timeout: float = 600) -> str:
    """Run `command` from the repository root with this checkout first on the path; its stdout, or RuntimeError
    carrying the end of its output."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPOSITORY), str(BENCHMARKS)])}
    done = subprocess.run(
        command, cwd=REPOSITORY, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}")
    return done.stdout


def cli(*arguments: str, timeout: float = 600) -> str:
    """`hf-infcompute ARGUMENTS` of this checkout."""
    return run_command([sys.executable, "-m", "hf_infcompute", *arguments], timeout=timeout)


def number(pattern: str, text: str) -> float | None:
    """The first group of `pattern` in `text` as a float (thousands separators dropped), None where absent."""
    found = re.search(pattern, text)
    return float(found.group(1).replace(",", "")) if found else None


def make_corpus(folder: Path, n_chars: int, seed: int = 0) -> Path:
    """A JSONL corpus of `n_chars` characters of Zipf-distributed made-up words (enough structure for a BPE)."""
    rng = random.Random(seed)
    letters = "etaoinshrdlucmfwypvbgkqjxz"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(4000)]
    cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(words))))  # the same draws, faster
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "part-00.jsonl").open("w") as file:
        written = 0
        while written < n_chars:
            sentences = (" ".join(rng.choices(words, cum_weights=cumulative, k=rng.randint(5, 20))) for _ in range(20))
            text = ". ".join(sentences) + "."
            file.write(json.dumps({"text": text}) + "\n")
            written += len(text)
    return folder


def write_run_recipe(path: Path, corpus: Path, device: str) -> Path:
    """A tiny `pretrain` recipe: a 1M-parameter model on a few steps of `corpus`, bf16 on a GPU."""
    values = {
        "recipe": "regularized",
        "corpus": str(corpus),
        "cache_dir": str(path.parent / "cache"),
        "tokenizer": "bpe",
        "vocab_size": 1024,
        "seq_len": 128,
        "token_budget": 65_536,
        "val_sequences": 32,
        "preset": "tiny-1m",
        "num_train_epochs": 1,
        "learning_rate": 3e-3,
        "weight_decay": 0.1,
        "per_device_train_batch_size": 16,
        "precision": "bf16" if device == "cuda" else "fp32",
        "disable_tqdm": True,
    }
    path.write_text("\n".join(f"{key}: {json.dumps(value)}" for key, value in values.items()) + "\n")
    return path


def finished_record(output: Path) -> dict[str, Any]:
    """The one finished run record under a `pretrain --output` folder."""
    from hf_infcompute.records import iter_records

    records = [r for r in iter_records(output) if r.get("status") == "finished"]
    if len(records) != 1:
        raise RuntimeError(f"expected one finished record under {output}, found {len(records)}")
    return records[0]


def loads_back(record: dict[str, Any]) -> dict[str, Any]:
    """`from_pretrained` of a record's saved model: every weight found (RuntimeError otherwise), all finite, and the
    run's record saved beside it."""
    import torch
    from transformers import AutoModelForCausalLM

    from hf_infcompute.hub import read_run_record

    model, info = AutoModelForCausalLM.from_pretrained(
        record["model_dir"], dtype=torch.float32, output_loading_info=True
    )
    if info["missing_keys"]:
        raise RuntimeError(f"{record['model_dir']} lacks weights: {sorted(info['missing_keys'])[:5]}")
    finite = all(torch.isfinite(p).all() for p in model.parameters())
    return {
        "loaded_parameters": sum(p.numel() for p in model.parameters()),
        "weights_finite": bool(finite),
        "record_saved_with_model": read_run_record(record["model_dir"]) == record,
    }


def tiny_members(folder: Path, k: int) -> list[Path]:
    """`k` tiny Llamas sharing one tokenizer (generation_backends' teacher, its output head redrawn per seed)."""
    import torch
    from generation_backends import build_tiny_teacher
    from transformers import AutoModelForCausalLM, AutoTokenizer

    first = build_tiny_teacher(folder / "member-0")
    paths = [first]
    for seed in range(1, k):
        model = AutoModelForCausalLM.from_pretrained(first)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            model.lm_head.weight.copy_(torch.randn(model.lm_head.weight.shape, generator=generator) * 0.3)
        model.save_pretrained(folder / f"member-{seed}")
        AutoTokenizer.from_pretrained(first).save_pretrained(folder / f"member-{seed}")
        paths.append(folder / f"member-{seed}")
    return paths


def ensemble_of(members: list[Path], folder: Path) -> Path:
    from hf_infcompute.ensemble.build import build_ensemble

    build_ensemble([str(m) for m in members], folder)
    return folder


def unigram_of(output: Path, vocab_size: int):
    from generation_backends import unigram

    return unigram(output, vocab_size)


def sample(teacher: Path, output: Path, num_tokens: int, device: str, *extra: str) -> dict[str, Any]:
    """`hf-infcompute generate`, its tokens/s as printed."""
    text = cli(
        "generate",
        str(teacher),
        "--output",
        str(output),
        "--num-tokens",
        str(num_tokens),
        "--seq-len",
        "128",
        "--device",
        device,
        *extra,
    )
    return {"tokens_per_second": number(r"\(([\d,.]+) tokens/s\)", text)}


def vllm_missing(device: str) -> str | None:
    """Why vLLM cannot sample here, or None."""
    if device != "cuda":
        return "vLLM needs a CUDA device"
    try:
        import vllm  # noqa: F401
    except ImportError as error:
        return f"vllm is not installed ({error})"
    return None


# ------------------------------------------------------------------------------------------------------------ checks
def check_memory(device: str, work: Path) -> dict[str, Any]:
    """Each paper preset at 4,096 x 128,256 with the micro-batch `plan` chooses for this device: the measured peak of
    one training step (forward, backward with the trainer's loss, AdamW step) against `plan`'s prediction, and
    whether the next larger micro-batch fits. One preset per subprocess, so each starts with the device empty."""
    import torch

    # The device's memory; 80 GiB (an H100's) for the toy run on a CPU.
    memory_gib = torch.cuda.get_device_properties(0).total_memory / GIB if device == "cuda" else 80.0
    plan = json.loads(
        cli(
            "plan",
            str(PAPER_RECIPE),
            "--vocab-size",
            str(LLAMA3_VOCAB),
            "--gpu-memory",
            f"{memory_gib:.1f}",
            "--json",
            timeout=120,
        )
    )
    seq_len, vocab_size = (PAPER_SEQ_LEN, LLAMA3_VOCAB) if device == "cuda" else (64, 4096)  # toy size on a CPU
    presets: dict[str, Any] = {}
    for name, planned in plan["presets"].items():
        entry: dict[str, Any] = {
            "plan_micro_batch": planned["micro_batch"],
            "plan_gib": planned["memory_gib"],
            "plan_fits": planned["fits"],
            "gradient_checkpointing": planned["gradient_checkpointing"],
        }
        micro_batch = planned["micro_batch"] if device == "cuda" else 1
        for size, key in ((micro_batch, "measured"), (2 * micro_batch, "next")):
            measured = json.loads(
                run_command(
                    [
                        sys.executable,
                        __file__,
                        "--measure-step",
                        name,
                        "--micro-batch",
                        str(size),
                        "--seq-len",
                        str(seq_len),
                        "--vocab-size",
                        str(vocab_size),
                        "--device",
                        device,
                        *(["--gradient-checkpointing"] if planned["gradient_checkpointing"] else []),
                    ],
                    timeout=300,
                )
                .strip()
                .splitlines()[-1]
            )
            entry[key] = {"micro_batch": size, **measured}
        if entry["measured"].get("peak_gib") is not None:
            entry["measured_over_plan"] = round(entry["measured"]["peak_gib"] / planned["memory_gib"], 3)
        presets[name] = entry
        if device == "cpu":  # one preset rehearses the path
            break
    return {"device_memory_gib": round(memory_gib, 1), "seq_len": seq_len, "vocab_size": vocab_size, "presets": presets}


def measure_step(
    preset: str, micro_batch: int, seq_len: int, vocab_size: int, device: str, gradient_checkpointing: bool
) -> dict[str, Any]:
    """Peak memory and seconds of one bf16 training step of `preset` through `RegularizedTrainer.compute_loss` with
    the chunked loss installed as `pretrain` installs it (`install_loss_forward`, the loss `plan` assumes);
    `fits` False on out-of-memory."""
    import torch
    from transformers import LlamaForCausalLM

    from hf_infcompute.models.presets import get_preset
    from hf_infcompute.training import RegularizedTrainer, RegularizedTrainingArguments
    from hf_infcompute.training.loss_forward import computes_loss_in_chunks, install_loss_forward

    options: dict[str, Any] = {
        "output_dir": tempfile.mkdtemp(),
        "report_to": "none",
        "precision": "bf16",
        "per_device_train_batch_size": micro_batch,
        "loss_implementation": "chunked",
    }
    args = RegularizedTrainingArguments(**options)
    config = get_preset(preset).build_config(vocab_size)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    install_loss_forward(model, args.loss_implementation, args.loss_chunk_tokens)
    if not computes_loss_in_chunks(model):
        raise RuntimeError(f"{preset}: the chunked loss was not installed, the step would measure full logits")
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    trainer = RegularizedTrainer(model=model, args=args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    ids = torch.randint(0, vocab_size, (micro_batch, seq_len), device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = trainer.compute_loss(model, {"input_ids": ids, "labels": ids})
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
    except torch.OutOfMemoryError:
        return {"fits": False, "peak_gib": None}
    peak = torch.cuda.max_memory_allocated() / GIB if device == "cuda" else None
    return {
        "fits": True,
        "peak_gib": None if peak is None else round(peak, 2),
        "step_seconds": round(time.perf_counter() - start, 3),
        "loss": round(float(loss), 4),
        "loss_implementation": args.loss_implementation,
    }


def planned_micro_batch(preset: str, memory_gib: float) -> dict[str, Any]:
    """`plan`'s micro-batch of `preset` in the paper's recipe at vocabulary 128,256 on a device of `memory_gib`
    (`hf_infcompute.planning.recipe`, the API behind `hf-infcompute plan`), with its gradient checkpointing and its
    training FLOPs per token."""
    from hf_infcompute.planning.recipe import model_config, plan_model, run_settings
    from hf_infcompute.study.spec import load_study

    spec = load_study(PAPER_RECIPE)
    settings = run_settings(spec.run, vocab_size=LLAMA3_VOCAB)
    planned = plan_model(preset, model_config(spec.run, preset, settings)[1], settings, memory_gib * GIB)
    return {
        "micro_batch": planned.micro_batch,
        "gradient_checkpointing": planned.memory.gradient_checkpointing,
        "loss_implementation": settings.loss_implementation,
        "flops_per_token": planned.flops.training,
    }


def throughput_configuration(device: str, memory_gib: float, device_name: str) -> dict[str, Any]:
    """The flags of `trainer_throughput.py` for the throughput check and what they promise.

    On a GPU: the 150M preset with its embedding and head at 128,256 rows (the paper's vocabulary; the ids come from a
    2,048-token BPE, which leaves the FLOPs unchanged: the head multiplies every hidden state by all 128,256 rows and
    the chunked loss normalises over all of them whatever the ids, and the embedding lookup is an uncounted gather),
    the chunked loss installed as `pretrain` installs it, `plan`'s micro-batch for this device, bf16, 4,096 tokens;
    the loop and the Trainer, eager and compiled by regions, in one process. Steps: a fixed count, `THROUGHPUT_WARMUP`
    untimed then `THROUGHPUT_TIMED_STEPS` timed: the MFU is the mean over the timed steps, whose standard error is
    rsd / sqrt(15), 0.8% at a per-step relative sd of 3% (`THROUGHPUT_STABLE_RSD`, which the check tests on every row
    and records as `stable`); and four runs of 18 steps fit the step's 120 s down to 20% MFU (`estimated_seconds`).
    On a CPU: a toy rehearsal of the same path (tiny preset, still 128,256 rows and the chunked loss, fp32)."""
    from hf_infcompute.data.arguments import DataArguments
    from hf_infcompute.models.flops import gpu_peak_flops

    if device == "cuda":
        import torch

        planned = planned_micro_batch(THROUGHPUT_PRESET, memory_gib)
        if planned["micro_batch"] == 0 or planned["gradient_checkpointing"]:
            raise CheckSkipped(f"{THROUGHPUT_PRESET} needs gradient checkpointing on {memory_gib:.0f} GiB: {planned}")
        preset, precision, seq_len, micro_batch = THROUGHPUT_PRESET, "bf16", PAPER_SEQ_LEN, planned["micro_batch"]
        warmup, timed, compiled, loss = THROUGHPUT_WARMUP, THROUGHPUT_TIMED_STEPS, ["no", "regional"], "chunked"
        if planned["loss_implementation"] != loss:
            raise RuntimeError(f"the paper's recipe trains with loss {planned['loss_implementation']}, not {loss}")
        peak = gpu_peak_flops(device_name, torch.bfloat16)
    else:
        preset, precision, seq_len, micro_batch = "tiny-1m", "fp32", 128, 8
        warmup, timed, compiled, loss, peak, planned = 2, 3, ["no"], "chunked", None, None
    steps = warmup + timed
    val_sequences = next(f.default for f in dataclasses.fields(DataArguments) if f.name == "val_sequences")
    tokens = (steps * micro_batch + val_sequences) * seq_len
    runs = 2 * len(compiled)  # the loop and the Trainer per compile setting
    flags = [
        "--preset", preset,
        "--vocab-size", str(THROUGHPUT_BPE_VOCAB),
        "--model-vocab-size", str(LLAMA3_VOCAB),
        "--loss-implementation", loss,
        "--precision", precision,
        "--compile", *compiled,
        "--single-run",
        "--seq-len", str(seq_len),
        "--batch-size", str(micro_batch),
        "--steps", str(steps),
        "--warmup", str(warmup),
        "--logging-steps", str(steps),
        *([] if device == "cuda" else ["--measure-peak"]),
    ]  # fmt: skip
    estimate = None
    if planned is not None and peak is not None:
        step_seconds = micro_batch * seq_len * planned["flops_per_token"] / (peak * THROUGHPUT_MFU_FLOOR)
        estimate = round(runs * steps * step_seconds + THROUGHPUT_OVERHEAD_S, 1)
    return {
        "preset": preset,
        "model_vocab_size": LLAMA3_VOCAB,
        "tokenizer_vocab_size": THROUGHPUT_BPE_VOCAB,
        "loss_implementation": loss,
        "micro_batch": micro_batch,
        "planned": planned,
        "seq_len": seq_len,
        "warmup": warmup,
        "timed_steps": timed,
        "runs": runs,
        "corpus_chars": CHARS_PER_TOKEN * tokens,
        "estimated_seconds": estimate,
        "flags": flags,
    }


def check_throughput(device: str, work: Path) -> dict[str, Any]:
    """MFU of the 150M preset as the paper trains it (`throughput_configuration`): the loop and the Trainer on the same
    model, eager and compiled by regions, from benchmarks/trainer_throughput.py's JSON."""
    import torch

    memory_gib = torch.cuda.get_device_properties(0).total_memory / GIB if device == "cuda" else 80.0
    configuration = throughput_configuration(device, memory_gib, device_name(device))
    corpus = make_corpus(work / "corpus", configuration["corpus_chars"])
    report = work / "throughput.json"
    command = [sys.executable, str(BENCHMARKS / "trainer_throughput.py"), *configuration["flags"]]
    text = run_command([*command, "--corpus", str(corpus), "--json", str(report)])
    measured = json.loads(report.read_text())
    promised = {key: configuration[key] for key in ("model_vocab_size", "loss_implementation", "micro_batch")}
    ran = {key: measured[key] for key in promised}
    if ran != promised:
        raise RuntimeError(f"the run measured {ran}, not the configuration's {promised}")
    rows = {
        f"{row['runner']} {row['precision']} compile {row['compile']}": {
            "tokens_per_second": round(row["tokens_per_second"]),
            "mfu": None if row["mfu"] is None else round(row["mfu"], 4),
            "step_rsd": round(row["step_rsd"], 4),
            "mfu_relative_standard_error": round(row["step_rsd"] / len(row["step_seconds"]) ** 0.5, 4),
            "timed_steps": len(row["step_seconds"]),
            "run_seconds": round(row["run_seconds"], 1),
            "vs_loop": row["vs_loop"],
            "val_loss": round(row["val_loss"], 4),
        }
        for row in measured["rows"]
    }
    return {
        "command": " ".join(configuration["flags"]),
        "parameters": measured["parameters"],
        "model_vocab_size": measured["model_vocab_size"],
        "tokenizer_vocab_size": measured["tokenizer_vocab_size"],
        "loss_implementation": measured["loss_implementation"],
        "micro_batch": measured["micro_batch"],
        "plan_micro_batch": (configuration["planned"] or {}).get("micro_batch"),
        "seq_len": measured["seq_len"],
        "lm_head_share_of_flops": round(measured["lm_head_share_of_flops"], 3),
        "training_flops_per_token": measured["training_flops_per_token"],
        "peak_flops": measured["peak_flops"],
        "peak_source": measured["peak_source"],
        "estimated_seconds": configuration["estimated_seconds"],
        "stable": all(row["step_rsd"] < THROUGHPUT_STABLE_RSD for row in rows.values()),
        "rows": rows,
        "output": text.strip().splitlines()[-12:],
    }


def check_pretrain(device: str, work: Path) -> dict[str, Any]:
    """`hf-infcompute pretrain` (bf16 on a GPU) on a corpus made on the spot, a few steps; its record read back."""
    recipe = write_run_recipe(work / "run.yaml", make_corpus(work / "corpus", 600_000), device)
    cli("pretrain", str(recipe), "--output", str(work / "out"))
    record = finished_record(work / "out")
    if device == "cuda" and record["precision"] != "bf16":
        raise RuntimeError(f"the run trained in {record['precision']}, not bf16")
    return {
        key: record.get(key)
        for key in ("precision", "steps", "val_loss", "tokens_seen", "micro_batch", "train_flops", "world_size")
    } | loads_back(record)


def check_vllm(device: str, work: Path) -> dict[str, Any]:
    """vLLM against transformers sampling at one dtype: one model (benchmarks/generation_backends.py), and a K = 2
    ensemble in both modes against the transformers ensemble sampler (unigram total-variation distances)."""
    import numpy as np
    from generation_backends import total_variation

    missing = vllm_missing(device)
    if missing is not None:
        raise CheckSkipped(f"{missing}: vLLM is too large to carry to an offline machine in the wheel folder")
    num_tokens = 200_000 if device == "cuda" else 4_000
    dtype = "bfloat16" if device == "cuda" else "float32"
    text = run_command(
        [
            sys.executable,
            str(BENCHMARKS / "generation_backends.py"),
            "--num-tokens",
            str(num_tokens),
            "--seq-len",
            "128",
            "--dtype",
            dtype,
        ]
    )
    rows = {}
    for line in text.splitlines():
        found = re.match(r"(\w+ seed \d)\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", line.strip())
        if found:
            rows[found.group(1)] = {
                "tokens_per_second": float(found.group(2).replace(",", "")),
                "entropy": float(found.group(4)),
                "tv_vs_transformers_seed_0": float(found.group(5)),
            }
    figures: dict[str, Any] = {"dtype": dtype, "num_tokens": num_tokens, "single_model": rows}
    ensemble = ensemble_of(tiny_members(work / "members", 2), work / "ensemble")
    runs = {
        "transformers seed 0": ["--backend", "transformers", "--seed", "0"],
        "transformers seed 1": ["--backend", "transformers", "--seed", "1"],
    }
    runs["vllm logit_average"] = ["--backend", "vllm", "--ensemble-mode", "logit_average"]
    runs["vllm pooled"] = ["--backend", "vllm", "--ensemble-mode", "pooled"]
    speeds = {
        name: sample(ensemble, work / name.replace(" ", "-"), num_tokens // 4, device, "--dtype", dtype, *flags)
        for name, flags in runs.items()
    }
    from hf_infcompute.generation import load_synthetic

    vocab = max(int(np.asarray(load_synthetic(work / n.replace(" ", "-"))["input_ids"]).max()) for n in runs) + 1
    dists = {name: unigram_of(work / name.replace(" ", "-"), vocab) for name in runs}
    figures["ensemble_k2"] = {
        name: {
            **speeds[name],
            "tv_vs_transformers_seed_0": round(total_variation(dists[name], dists["transformers seed 0"]), 4),
        }
        for name in runs
    }
    return figures


def check_fsdp2(device: str, work: Path) -> dict[str, Any]:
    """`accelerate launch --num_processes 1 --config_file recipes/accelerate/fsdp2.yaml` of a tiny pretrain; the
    saved model loaded back with `from_pretrained`."""
    if device != "cuda":
        raise CheckSkipped(
            "accelerate 1.15 turns FSDP on only for GPU distributed types; on a CPU the launch trains "
            "without sharding, so it would not test the sharded save"
        )
    recipe = write_run_recipe(work / "run.yaml", make_corpus(work / "corpus", 600_000), device)
    run_command(
        [
            sys.executable,
            "-m",
            "accelerate.commands.accelerate_cli",
            "launch",
            "--num_processes",
            "1",
            "--config_file",
            str(FSDP2_CONFIG),
            "-m",
            "hf_infcompute",
            "pretrain",
            str(recipe),
            "--output",
            str(work / "out"),
        ]
    )
    record = finished_record(work / "out")
    return {key: record.get(key) for key in ("precision", "steps", "val_loss", "world_size")} | loads_back(record)


def check_ensemble(device: str, work: Path) -> dict[str, Any]:
    """The ensemble on the device, K = 2, 4, 8: scoring time against K passes of one member
    (benchmarks/ensemble_speed.py; its batched path was removed, so there is no batched figure) and sampling
    tokens/s of `hf-infcompute generate`."""
    ks = [2, 4, 8] if device == "cuda" else [2]
    text = run_command(
        [
            sys.executable,
            str(BENCHMARKS / "ensemble_speed.py"),
            "--device",
            device,
            "--members",
            *map(str, ks),
            "--repeats",
            "10" if device == "cuda" else "2",
        ]
    )
    scoring = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[0] in ("float32", "bfloat16"):
            scoring.append(
                {
                    "dtype": parts[0],
                    "k": int(parts[1]),
                    "member_s": float(parts[2]),
                    "ensemble_s": float(parts[3]),
                    "tokens_per_second": float(parts[4].replace(",", "")),
                    "ensemble_over_k_members": float(parts[5]),
                }
            )
    members = tiny_members(work / "members", max(ks))
    generation = {}
    for k in ks:
        teacher = ensemble_of(members[:k], work / f"ensemble-{k}")
        generation[str(k)] = sample(teacher, work / f"sample-{k}", 20_000 if device == "cuda" else 1_000, device)
    return {"scoring": scoring, "batched": None, "generation": generation}


CHECKS: dict[str, Callable[[str, Path], dict[str, Any]]] = {
    "memory": check_memory,
    "throughput": check_throughput,
    "pretrain": check_pretrain,
    "vllm": check_vllm,
    "fsdp2": check_fsdp2,
    "ensemble": check_ensemble,
}


# --------------------------------------------------------------------------------------------------------------- CLI
def write_line(
    results: Path,
    name: str,
    status: str,
    figures: dict[str, Any] | None,
    seconds: float,
    error: str | None,
    device: str,
) -> None:
    line = {
        "name": name,
        "status": status,
        "figures": figures or {},
        "seconds": round(seconds, 1),
        "error": error,
        "device": device,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a") as file:
        file.write(json.dumps(line) + "\n")


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else f"cpu ({os.cpu_count()} cores)"


def run_check(name: str, device: str, results: Path, work: Path | None) -> int:
    """Run one check and append its line: ok with figures, skipped with the reason, or failed with the error."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        try:
            figures = CHECKS[name](device, Path(tmp))
        except CheckSkipped as skipped:
            write_line(results, name, "skipped", None, time.perf_counter() - start, str(skipped), device_name(device))
            return 0
        except Exception as error:  # the driver goes on to the next check; the line says what failed
            text = "".join(traceback.format_exception(error))[-4000:]
            write_line(results, name, "failed", None, time.perf_counter() - start, text, device_name(device))
            return 1
    write_line(results, name, "ok", figures, time.perf_counter() - start, None, device_name(device))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", action="store_true", help="print the check names, one a line")
    parser.add_argument("--check", choices=CHECKS, help="run this check")
    parser.add_argument("--record", choices=CHECKS | {"install": None}, help="write a line without running anything")
    parser.add_argument("--status", choices=["ok", "skipped", "failed"], default="skipped")
    parser.add_argument("--reason", default="", help="the reason `--record` writes")
    parser.add_argument("--seconds", type=float, default=0.0, help="the seconds `--record` writes")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--results", type=Path, help="the JSONL file the line is appended to")
    parser.add_argument("--work", type=Path, help="folder for the check's scratch files (default: the system's)")
    parser.add_argument("--measure-step", metavar="PRESET", help=argparse.SUPPRESS)
    parser.add_argument("--micro-batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--seq-len", type=int, default=PAPER_SEQ_LEN, help=argparse.SUPPRESS)
    parser.add_argument("--vocab-size", type=int, default=LLAMA3_VOCAB, help=argparse.SUPPRESS)
    parser.add_argument("--gradient-checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.list:
        print("\n".join(CHECKS))
        return 0
    if args.measure_step:  # one preset's step in a fresh process, for check_memory
        print(
            json.dumps(
                measure_step(
                    args.measure_step,
                    args.micro_batch,
                    args.seq_len,
                    args.vocab_size,
                    args.device,
                    args.gradient_checkpointing,
                )
            )
        )
        return 0
    if args.results is None or not (args.check or args.record):
        parser.error("give --results and one of --check or --record (or --list)")
    if args.record:
        note = {"note": args.reason} if args.status == "ok" else None
        write_line(
            args.results,
            args.record,
            args.status,
            note,
            args.seconds,
            None if note else args.reason or None,
            args.device,
        )
        return 0
    return run_check(args.check, args.device, args.results, args.work)


if __name__ == "__main__":
    sys.exit(main())
