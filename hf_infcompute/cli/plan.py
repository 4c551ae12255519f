"""`hf-infcompute plan RECIPE.yaml`: memory per device, FLOPs and device-hours of a recipe before anything trains.

A study YAML (e.g. recipes/paper-200M.yaml) is planned preset by preset with all its searches, members, synthetic
text and students; a plain run recipe as one training (or `--members` seeds of it). The micro-batch is the largest
that fits `--gpu-memory` at the recipe's global batch, gradient accumulation making up the rest; bounds and what is
counted: `hf_infcompute.planning.recipe`. Training is priced by FLOPs at `--mfu`; a study's sampling by the teacher's
decode throughput with `--backend` on the device (a roofline of its memory bandwidth: `hf_infcompute.generation.
budget`), or by `--decode-tokens-per-second` measured with `hf-infcompute generate`. Wall-clock hours spread the
shared work over `--workers` devices and add the students the lead trains alone (the serial tail).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from hf_infcompute.errors import InputError

DEFAULT_GPU = "H100 SXM"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="memory per device, FLOPs and device-hours of a study or run recipe, before anything trains",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", help="a study YAML (with `presets`) or a run recipe YAML")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="run settings to override (a study's `run` mapping)"
    )
    parser.add_argument(
        "--gpu-memory", type=float, default=80.0, metavar="GIB", help="memory of one device in GiB (default 80)"
    )
    parser.add_argument(
        "--gpu",
        default=DEFAULT_GPU,
        help=f"device whose dense bf16/tf32 peak the device-hours use (default {DEFAULT_GPU!r})",
    )
    parser.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation assumed (default 0.4)")
    parser.add_argument(
        "--world-size",
        type=int,
        default=1,
        help="processes sharing one global batch (default 1: a study runs one worker per device)",
    )
    parser.add_argument("--members", type=int, default=1, help="seeds of a run recipe trained (e.g. cpt --k)")
    parser.add_argument(
        "--workers", type=int, default=8, help="devices a study runs on, one worker each (default 8: one machine)"
    )
    parser.add_argument(
        "--backend",
        choices=["vllm", "transformers"],
        default="vllm",
        help="the sampling backend whose decode throughput prices a study's synthetic text (default vllm)",
    )
    parser.add_argument(
        "--decode-tokens-per-second",
        type=float,
        metavar="RATE",
        help="measured tokens/s one device samples the teacher at (replaces the bandwidth roofline)",
    )
    parser.add_argument(
        "--vocab-size", type=int, help="vocabulary of the recipe's tokenizer when it cannot be read (Llama 3: 128256)"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from hf_infcompute.generation.budget import gpu_bandwidth
    from hf_infcompute.models.flops import gpu_peak_flops
    from hf_infcompute.planning.memory import GIB
    from hf_infcompute.planning.recipe import (
        DecodeDevice,
        fits_message,
        plan_run,
        plan_study,
        resolve_vocab_size,
        run_settings,
    )
    from hf_infcompute.study.spec import load_study
    from hf_infcompute.training.config import load_recipe, parse_overrides

    if args.gpu_memory <= 0 or args.world_size < 1 or args.members < 1 or args.workers < 1:
        raise InputError("--gpu-memory must be positive, --world-size, --members and --workers at least 1")
    if args.decode_tokens_per_second is not None and args.decode_tokens_per_second <= 0:
        raise InputError(
            "--decode-tokens-per-second must be positive: give the tokens/s `hf-infcompute generate` printed"
        )
    path = Path(args.recipe)
    values = yaml.safe_load(path.read_text()) if path.is_file() else None
    is_study = isinstance(values, dict) and "presets" in values
    device_bytes = args.gpu_memory * GIB
    if is_study:
        spec = load_study(path)
        spec = dataclasses.replace(spec, run={**spec.run, **parse_overrides(args.overrides)})
        run_values = spec.run
    else:
        run_values = load_recipe(path, args.overrides)
    settings = run_settings(
        run_values, vocab_size=resolve_vocab_size(run_values, args.vocab_size), world_size=args.world_size
    )
    peak = gpu_peak_flops(args.gpu, torch.bfloat16 if settings.bf16 else torch.float32)
    bandwidth = gpu_bandwidth(args.gpu)
    if peak is None or bandwidth is None:
        raise InputError(
            f"unknown device {args.gpu!r} for its peak FLOP/s and memory bandwidth; name a known GPU (H100, H200, "
            "A100, L4, ...) with --gpu"
        )
    decode = DecodeDevice(
        args.backend, bandwidth, gpu_peak_flops(args.gpu, torch.bfloat16), args.decode_tokens_per_second
    )
    plan = (
        plan_study(spec, settings, device_bytes, decode)
        if is_study
        else plan_run(run_values, settings, device_bytes, members=args.members)
    )
    summary = {
        "presets": {name: preset.to_dict() for name, preset in plan.presets.items()},
        "work": [work.to_dict() for work in plan.work],
        "trainings": plan.trainings,
        "tokens_trained": plan.tokens_trained,
        "tokens_generated": plan.tokens_generated,
        "total_flops": plan.total_flops(),
        "total_flops_upper": plan.total_flops(upper=True),
        "device_hours": plan.device_hours(peak, args.mfu),
        "device_hours_upper": plan.device_hours(peak, args.mfu, upper=True),
        "sampling_hours": plan.device_hours(peak, args.mfu, generated=True),
        "serial_tail_hours": plan.serial_tail_hours(peak, args.mfu),
        "workers": args.workers,
        "wall_hours": plan.wall_hours(peak, args.mfu, args.workers),
        "wall_hours_upper": plan.wall_hours(peak, args.mfu, args.workers, upper=True),
        "device": {
            "name": args.gpu,
            "memory_gib": args.gpu_memory,
            "peak_flops": peak,
            "bandwidth": bandwidth,
            "mfu": args.mfu,
        },
        "seq_len": settings.seq_len,
        "global_batch": settings.global_batch,
        "world_size": settings.world_size,
        "loss_implementation": settings.loss_implementation,
    }
    warning = fits_message(plan.presets, device_bytes)
    if warning:
        summary["warning"] = warning
    print(json.dumps(summary, indent=2) if args.json else _text(args.recipe, summary))
    return 0


def _text(recipe: str, s: dict[str, Any]) -> str:
    d = s["device"]
    lines = [
        (
            f"plan of {recipe}: {d['name']} ({d['memory_gib']:g} GiB, peak {d['peak_flops'] / 1e12:.0f} TFLOP/s) at "
            f"{d['mfu']:.0%} MFU; global batch {s['global_batch']} x {s['seq_len']} tokens over {s['world_size']} "
            f"process(es), loss {s['loss_implementation']}"
        ),
        "",
        (
            f"{'model':<24}{'params':>9}{'non-emb':>9}{'micro x accum':>15}{'ckpt':>6}{'weights+grads+adam':>20}"
            f"{'activations':>13}{'loss':>7}{'total GiB':>11}{'train FLOPs/token':>19}"
        ),
    ]
    for name, p in s["presets"].items():
        m = p["memory"]
        active = m["activations_checkpointed"] if p["gradient_checkpointing"] else m["activations"]
        lines.append(
            f"{name:<24}{p['parameters'] / 1e6:>8.0f}M{p['non_embedding_parameters'] / 1e6:>8.0f}M"
            f"{p['micro_batch']:>9} x {p['grad_accum']:<3}{'yes' if p['gradient_checkpointing'] else 'no':>6}"
            f"{m['weights'] + m['gradients'] + m['optimizer']:>20.1f}{active:>13.1f}{m['loss']:>7.1f}"
            f"{p['memory_gib']:>11.1f}{p['flops_per_token']:>19.3g}"
        )
    what = max([40, *(len(w["what"]) + 2 for w in s["work"])])  # the longest label and two spaces
    lines += ["", f"{'work':<{what}}{'model':<24}{'runs (upper)':>14}{'tokens (upper)':>22}{'FLOPs (upper)':>22}"]
    for w in s["work"]:
        lines.append(
            f"{w['what']:<{what}}{w['model']:<24}{w['count']:>6} ({w['count_upper']:>5})"
            f"{w['tokens']:>11.3g} ({w['tokens_upper']:>8.3g}){w['flops']:>11.3g} ({w['flops_upper']:>8.3g})"
        )
    lines += [
        "",
        f"trainings {s['trainings']:,}; tokens trained {s['tokens_trained']:.3g}, "
        f"generated {s['tokens_generated']:.3g}",
    ]
    for w in s["work"]:
        if "decode" in w:
            rate = w["decode"]
            how = (
                "measured"
                if rate["bound"] == "measured"
                else f"{rate['backend']}, {rate['rows_in_flight']} rows in flight, {rate['bound']}-bound"
            )
            lines.append(
                f"{w['what']}: {w['tokens']:.3g} tokens at {rate['tokens_per_second']:,.0f} tokens/s per device "
                f"({how}): {w['tokens'] / rate['tokens_per_second'] / 3600:,.1f} device-hours"
            )
    lines += [
        (
            f"total {s['total_flops']:.3g} FLOPs (upper bound {s['total_flops_upper']:.3g}): "
            f"{s['device_hours']:,.0f} device-hours (upper bound {s['device_hours_upper']:,.0f}), training at "
            f"{d['mfu']:.0%} MFU, sampling {s['sampling_hours']:,.1f} device-hours at its decode throughput"
        ),
        (
            f"on {s['workers']} device(s): {s['wall_hours']:,.0f} hours of wall clock (upper bound "
            f"{s['wall_hours_upper']:,.0f}), of which {s['serial_tail_hours']:,.1f} h the lead trains the students "
            "alone (the serial tail)"
        ),
    ]
    if "warning" in s:
        lines.append(f"warning: {s['warning']}")
    return "\n".join(lines)
