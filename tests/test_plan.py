"""`hf-infcompute plan`, the FLOPs and memory models behind it, the global batch split and out-of-memory searches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import AUTO_MICRO_BATCH_RUN
from torch.utils.flop_counter import FlopCounterMode
from transformers import LlamaConfig, LlamaForCausalLM

from hf_infcompute.cli.main import main
from hf_infcompute.errors import InputError
from hf_infcompute.models import count_parameters
from hf_infcompute.models.flops import device_peak_flops, flops_per_token, gpu_peak_flops
from hf_infcompute.planning import gradient_accumulation, step_memory
from hf_infcompute.search import SearchGrid, SweepStore, coordinate_descent
from hf_infcompute.study.pipeline import search_grid
from hf_infcompute.study.search_counts import fully_extended
from hf_infcompute.training.config import parse_run_config

REPO = Path(__file__).resolve().parents[1]
LLAMA3_VOCAB = 128_256


def run_plan(capsys: pytest.CaptureFixture, *args: str) -> dict:
    assert main(["plan", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_paper_presets_fit_80gb_at_the_paper_batch(capsys):
    plan = run_plan(capsys, str(REPO / "recipes" / "paper-200M.yaml"), "--vocab-size", str(LLAMA3_VOCAB))
    assert set(plan["presets"]) == {"llama-150m", "llama-300m", "llama-600m", "llama-1.4b"}
    for name, preset in plan["presets"].items():
        assert preset["fits"] and 0 < preset["memory_gib"] <= 0.9 * 80, name
        assert preset["micro_batch"] * preset["grad_accum"] * plan["world_size"] == 64 == preset["global_batch"]
    # llama-300m by hand: hidden 768, intermediate 2688, 12 layers, 12 heads of 64 (no grouping), 4096 tokens.
    per_layer = 4 * 768 * 768 + 3 * 768 * 2688  # q, k, v, o and gate, up, down
    forward = 2 * 12 * per_layer + 2 * 768 * LLAMA3_VOCAB + 2 * 2 * 12 * 768 * 4096 / 2
    assert plan["presets"]["llama-300m"]["flops_per_token"] == pytest.approx(3 * forward, rel=1e-12)
    assert plan["total_flops"] <= plan["total_flops_upper"]
    trained_flops = sum(w["flops"] for w in plan["work"] if not w["generated"])
    training_hours = trained_flops / (0.4 * 989.4e12) / 3600
    assert plan["device_hours"] == pytest.approx(training_hours + plan["sampling_hours"], rel=1e-9)


def test_plan_prices_sampling_by_decode_throughput_and_counts_the_serial_tail(capsys):
    recipe = str(REPO / "recipes" / "paper-200M.yaml")
    plan = run_plan(capsys, recipe, "--vocab-size", str(LLAMA3_VOCAB), "--workers", "8")
    sampling = {w["what"]: w for w in plan["work"] if w["generated"]}
    ensemble = sampling["sampling (ensemble teacher)"]["decode"]
    # 8 x llama-300m in bf16 on 80 GiB: KV 2 x 12 layers x 12 heads x 64 x 2 B per member and token; vLLM's paged
    # cache holds rows at seq_len / 2 on average in 0.9 of the memory less the weights.
    kv = 8 * 2 * 12 * 12 * 64 * 2
    weights = 8 * 2 * plan["presets"]["llama-300m"]["parameters"]
    rows = int((0.9 * 80 * 2**30 - weights) // (kv * 2048))
    step = (weights + rows * 2048 * kv) / 3.35e12 / 0.5  # memory-bound at half the bandwidth roofline
    assert ensemble["rows_in_flight"] == rows and ensemble["bound"] == "memory"
    assert ensemble["tokens_per_second"] == pytest.approx(rows / step, rel=1e-9)
    # Decode is far slower than the teacher's FLOPs at the training MFU would say.
    flops_hours = sampling["sampling (ensemble teacher)"]["flops"] / (0.4 * 989.4e12) / 3600
    hours = {what: w["tokens"] / w["decode"]["tokens_per_second"] / 3600 for what, w in sampling.items()}
    assert hours["sampling (ensemble teacher)"] > 10 * flops_hours
    assert plan["sampling_hours"] == pytest.approx(sum(hours.values()), rel=1e-9)
    out = run_plan(capsys, recipe, "--vocab-size", str(LLAMA3_VOCAB), "--backend", "transformers")
    slower = next(w for w in out["work"] if w["what"] == "sampling (ensemble teacher)")["decode"]
    assert slower["tokens_per_second"] < ensemble["tokens_per_second"] / 2
    measured = run_plan(capsys, recipe, "--vocab-size", str(LLAMA3_VOCAB), "--decode-tokens-per-second", "1000")
    assert measured["sampling_hours"] == pytest.approx(2 * 1e9 / 1000 / 3600)
    # The students train on the lead alone after the shared phases: their hours add to the wall clock undivided.
    students = sum(w["flops"] for w in plan["work"] if w["lead_only"]) / (0.4 * 989.4e12) / 3600
    assert plan["serial_tail_hours"] == pytest.approx(students, rel=1e-9) and students > 0
    assert plan["wall_hours"] == pytest.approx((plan["device_hours"] - students) / 8 + students, rel=1e-9)
    main(["plan", recipe, "--vocab-size", str(LLAMA3_VOCAB)])
    text = capsys.readouterr().out
    assert "sampling (ensemble teacher): 1e+09 tokens at" in text and "the serial tail" in text


def test_plan_of_a_run_recipe_with_a_global_batch(capsys, tmp_path):
    recipe = tmp_path / "run.yaml"
    recipe.write_text(
        "preset: llama-150m\nseq_len: 4096\ntoken_budget: 1_000_000\nnum_train_epochs: 2\n"
        "global_batch_size: 64\nprecision: bf16\n"
    )
    plan = run_plan(capsys, str(recipe), "--vocab-size", str(LLAMA3_VOCAB), "--gpu-memory", "24", "--world-size", "2")
    preset = plan["presets"]["llama-150m"]
    assert preset["micro_batch"] * preset["grad_accum"] * 2 == 64 and preset["memory_gib"] <= 0.9 * 24
    assert plan["tokens_trained"] == 2_000_000
    assert plan["total_flops"] == pytest.approx(2_000_000 * preset["flops_per_token"])


def test_flops_match_torch_flop_counter():
    """torch's counter sees every matmul (the eager attention's full square, masked half included)."""
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=224,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        tie_word_embeddings=True,
    )
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config)
    ids = torch.randint(0, 512, (2, 32))
    with FlopCounterMode(display=False) as forward:
        loss = model(input_ids=ids, labels=ids).loss
    with FlopCounterMode(display=False) as backward:
        loss.backward()
    ours = flops_per_token(config, 32)
    assert forward.get_total_flops() / ids.numel() == ours.non_embedding + ours.lm_head + 2 * ours.attention
    assert backward.get_total_flops() == 2 * forward.get_total_flops()
    assert ours.training == 3 * ours.forward


def test_device_peaks():
    assert gpu_peak_flops("NVIDIA H100 80GB HBM3", torch.bfloat16) == 989.4e12
    assert gpu_peak_flops("NVIDIA H100 PCIe", torch.bfloat16) == 756.5e12
    assert gpu_peak_flops("NVIDIA A100-SXM4-80GB", torch.float32, tf32=False) == 19.5e12
    assert gpu_peak_flops("NVIDIA A100-SXM4-80GB", torch.float32) == 156e12
    assert gpu_peak_flops("Some Future Accelerator", torch.bfloat16) is None
    assert device_peak_flops("cpu", torch.float32) is None


MEASURE = """
import json, sys, torch
torch.set_num_threads(1)  # each thread's allocator arena would count too
from transformers import LlamaConfig, LlamaForCausalLM
h, inter, layers, heads, kv, vocab, batch, seq = map(int, sys.argv[1:])
config = LlamaConfig(hidden_size=h, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
                     num_key_value_heads=kv, vocab_size=vocab, tie_word_embeddings=True)
config._attn_implementation = "sdpa"
model = LlamaForCausalLM(config)
ids = torch.randint(0, vocab, (batch, seq))
def status_kib(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))
open("/proc/self/clear_refs", "w").write("5")  # the peak so far (imports, the model's init) is forgotten
before = status_kib("VmRSS")
model(input_ids=ids, labels=ids).loss.backward()
print(json.dumps((status_kib("VmHWM") - before) * 1024))
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads the process's memory from /proc")
def test_memory_model_within_a_factor_of_a_measured_step():
    """Peak RSS growth of one fp32 forward and backward (gradients, activations, loss; weights were already there)
    against the model: within 0.75-1.5x for a logit-bound and an activation-bound shape, measured in parallel."""
    shapes = {"logits": (128, 448, 2, 4, 4, 4096, 4, 512), "activations": (256, 896, 4, 4, 2, 512, 2, 1024)}
    jobs = {
        name: subprocess.Popen(
            [sys.executable, "-c", MEASURE, *map(str, shape)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"},
        )
        for name, shape in shapes.items()
    }
    for name, (h, inter, layers, heads, kv, vocab, batch, seq) in shapes.items():
        out, _ = jobs[name].communicate(timeout=300)
        assert jobs[name].returncode == 0
        config = LlamaConfig(
            hidden_size=h,
            intermediate_size=inter,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv,
            vocab_size=vocab,
            tie_word_embeddings=True,
        )
        memory = step_memory(config, count_parameters(config).total, batch, seq, bf16=False, loss_implementation="full")
        modelled = memory.gradients + memory.activations + memory.loss
        assert 0.75 <= json.loads(out) / modelled <= 1.5, (name, json.loads(out), modelled)


def test_global_batch_split_and_identity(corpus_dir):
    assert gradient_accumulation(64, 8, 2) == 4
    with pytest.raises(InputError, match="per_device_train_batch_size"):
        gradient_accumulation(64, 6, 1)
    base = {"corpus": str(corpus_dir), "token_budget": 8192, "global_batch_size": 64}
    small = parse_run_config({**base, "per_device_train_batch_size": 8}, "/tmp/unused")
    large = parse_run_config({**base, "per_device_train_batch_size": 32}, "/tmp/unused")
    assert small.training.gradient_accumulation_steps == 8 and large.training.gradient_accumulation_steps == 2
    assert small.run_id() == large.run_id()  # the same run on a device that fits a different micro-batch
    with pytest.raises(InputError, match="choose a per_device_train_batch_size that divides 64"):
        parse_run_config({**base, "per_device_train_batch_size": 24}, "/tmp/unused")
    with pytest.raises(InputError, match="set only one of them"):
        parse_run_config({**base, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 2}, "/tmp/unused")


def test_out_of_memory_stops_the_search(tmp_path):
    grid = SearchGrid({"learning_rate": [1e-3, 3e-3, 1e-2]})
    seen = []

    def objective(point):
        seen.append(point)
        if point["learning_rate"] == 3e-3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 33.60 GiB")
        return 1.0

    store = SweepStore(tmp_path / "sweep")
    with pytest.raises(InputError, match="ran out of device memory") as error:
        coordinate_descent(objective, grid, {"learning_rate": 3e-3}, store)
    for fix in ("per_device_train_batch_size", "gradient_checkpointing", "loss_implementation=chunked", "plan"):
        assert fix in str(error.value)
    assert seen == [{"learning_rate": 3e-3}]  # stopped at once, not steered around
    assert store.result({"learning_rate": 3e-3}) is None  # left for a re-run, not recorded as failed


def test_record_carries_batch_split_and_flops(tiny_run, tmp_path):
    from hf_infcompute.training import pretrain

    record = pretrain({**tiny_run, "num_train_epochs": 1, "global_batch_size": 16}, tmp_path)
    assert (record["micro_batch"], record["grad_accum"], record["world_size"]) == (8, 2, 1)
    assert record["global_batch"] == record["batch_size"] == 16
    assert record["steps"] == tiny_run["token_budget"] // tiny_run["seq_len"] // 16
    config = LlamaConfig.from_pretrained(record["model_dir"])
    assert record["train_flops"] == flops_per_token(config, tiny_run["seq_len"]).training * record["tokens_seen"]


def test_auto_micro_batch_fits_the_free_gpu_memory(corpus_dir, monkeypatch):
    """Simulated on the CPU: a GPU with 20 GiB free gets the largest micro-batch the memory model fits there."""
    from hf_infcompute.models.presets import get_preset
    from hf_infcompute.planning.device import fit_micro_batch
    from hf_infcompute.training.arguments import RegularizedTrainingArguments

    run = parse_run_config({**AUTO_MICRO_BATCH_RUN, "corpus": str(corpus_dir)}, "/tmp/unused")
    config = get_preset("llama-150m").build_config(vocab_size=LLAMA3_VOCAB)
    assert fit_micro_batch(run.training, config, 4096) == 64  # off a GPU the given micro-batch is kept
    free = 20 * 1024**3
    monkeypatch.setattr(RegularizedTrainingArguments, "device", property(lambda self: torch.device("cuda", 0)))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free, 80 * 1024**3))
    micro = fit_micro_batch(run.training, config, 4096)
    assert micro * run.training.gradient_accumulation_steps == 64 and micro < 64
    memory = step_memory(config, count_parameters(config).total, micro, 4096, bf16=True)
    doubled = step_memory(config, count_parameters(config).total, 2 * micro, 4096, bf16=True)
    assert memory.total <= 0.9 * free < doubled.total
    assert run.global_batch_size == 64
    with pytest.raises(InputError, match="set `global_batch_size` too"):
        parse_run_config({"corpus": str(corpus_dir), "token_budget": 8192, "auto_micro_batch": True}, "/tmp/unused")


def test_out_of_memory_anywhere_in_a_study_is_an_input_error_and_other_errors_pass():
    from hf_infcompute.errors import raise_if_out_of_memory

    with pytest.raises(InputError, match="ensemble tiny-1m ran out of device memory.*hf-infcompute plan"):
        raise_if_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"), "ensemble tiny-1m")
    raise_if_out_of_memory(RuntimeError("run x ended failed"), "ensemble tiny-1m")  # an ordinary failure: noted


def test_the_paper_recipe_header_states_what_plan_prints(capsys):
    """The cost in recipes/paper-200M.yaml's header is `plan`'s: its trainings and its H100-hours (to 100)."""
    import re

    header = (REPO / "recipes" / "paper-200M.yaml").read_text()
    plan = run_plan(capsys, str(REPO / "recipes" / "paper-200M.yaml"), "--vocab-size", str(LLAMA3_VOCAB))
    trainings = int(re.search(r"# (\d+) trainings expected", header).group(1))
    hours = int(re.search(r"~([\d,]+) H100-hours", header).group(1).replace(",", ""))
    assert trainings == plan["trainings"]
    assert hours == round(plan["device_hours"], -2)
    assert "of which 13.5 h are the serial tail" in header and "Not counted: evaluation" in header


# Two presets at two budgets, 3 values per axis: a standard point has at most 4 neighbours, a regularized one 6.
TINY_STUDY = {
    "name": "tiny",
    "run": {"tokenizer": "bpe", "vocab_size": 512, "seq_len": 64},
    "token_budget": 8192,
    "data_scaling_budgets": [16384],
    "presets": ["tiny-0.5m", "tiny-1m"],
    "standard": {"learning_rate": [1e-3, 3e-3, 1e-2], "num_train_epochs": [2, 4, 8], "start": [3e-3, 4]},
    "regularized": {
        "learning_rate": [1e-3, 3e-3, 1e-2],
        "num_train_epochs": [2, 4, 8],
        "weight_decay": [0.1, 0.4, 0.8],
        "start": [3e-3, 4, 0.4],
    },
    "ensemble": {"k": 4},
    "distillation": {"preset": "tiny-1m"},
}


def tiny_plan(**searches: dict):
    """The plan of TINY_STUDY with `searches` added to its `standard` and `regularized` settings."""
    from hf_infcompute.planning.memory import GIB
    from hf_infcompute.planning.recipe import plan_study, run_settings
    from hf_infcompute.study import parse_study

    values = {**TINY_STUDY, **{recipe: {**TINY_STUDY[recipe], **searches} for recipe in ("standard", "regularized")}}
    spec = parse_study(values)
    return spec, plan_study(spec, run_settings(spec.run, vocab_size=512), 80 * GIB)


def test_study_plan_searches_both_recipes_at_every_budget_from_every_start_with_tie_breaks():
    spec, plan = tiny_plan()
    rows = {(w.what, w.model): w for w in plan.work}
    assert len(rows) == len(plan.work)
    for budget in (8192, 16384):
        for preset in spec.presets:
            for recipe, neighbours in (("standard", 4), ("regularized", 6)):
                assert rows[(f"search {recipe} D={budget:,}", preset)].count > 0
                tie_break = rows[(f"tie-breaks {recipe} D={budget:,}", preset)]
                assert tie_break.count == 2 * 2  # tie_break_seeds x (the best point, the runner-up)
                # x (the best point, every neighbour), and every value past the grid's edges a choice on an edge
                # may go on to (`continuation_upper`)
                grid = search_grid(spec, recipe)[0]
                added = sum(len(fully_extended(grid).axes[n]) - len(v) for n, v in grid.axes.items())
                assert added > 0 and tie_break.count_upper == 2 * (1 + neighbours) + 2 * added
                # Expected epochs: the start's neighbourhood (standard: 4, 4, 4, 2 and 8 epochs, 4.4 on average).
                if recipe == "standard":
                    assert tie_break.tokens == pytest.approx(4 * 4.4 * budget)
            # Each regularized search at D also starts from the standard optimum: its expected runs, upper bound 0
            # (both starts walk one grid, whose size bounds them together); at the other budgets it starts from the
            # neighbouring budget's optimum only.
            further = rows.get((f"search regularized D={budget:,} (from the standard optimum)", preset))
            if budget == spec.token_budget:
                assert further.count > 0 and further.count_upper == 0 and further.tokens_upper == 0
            else:
                assert further is None
    # 8 searches, a regularized one at D from two starts: 10 search rows; a tie-break per search.
    assert sum(w.what.startswith("search ") for w in plan.work) == 2 * 2 * 2 + 2
    assert sum(w.what.startswith("tie-breaks ") for w in plan.work) == 8
    # Members: per preset k = 4 'paper' members (twice the epochs) and 4 'optimum' ones less member 0 (the search's
    # run) and members 1-2 (the regularized tie-break's fresh seeds at the chosen optimum).
    for preset in spec.presets:
        members = rows[("ensemble members", preset)]
        assert members.count == 1 + 4 and members.tokens == pytest.approx((1 + 4 * 2) * 4 * 8192)
    _, without = tiny_plan(tie_break_seeds=0)
    assert not any(w.what.startswith("tie-breaks") for w in without.work)
    assert {w.count for w in without.work if w.what == "ensemble members"} == {3 + 4}
    assert plan.trainings == without.trainings + 8 * 4 - 2 * 2


def test_search_upper_bound_covers_the_grid_extended_to_the_hard_bounds():
    import random

    from hf_infcompute.search.grid import HARD_BOUNDS, LEARNING_RATE, NUM_TRAIN_EPOCHS, WEIGHT_DECAY
    from hf_infcompute.study.search_counts import continuation_upper, tie_break_epochs_upper

    spec, plan = tiny_plan()
    rows = {(w.what, w.model): w for w in plan.work}
    for recipe in ("standard", "regularized"):
        grid = search_grid(spec, recipe)[0]
        wide = fully_extended(grid)
        for name in (LEARNING_RATE, NUM_TRAIN_EPOCHS) + ((WEIGHT_DECAY,) if recipe == "regularized" else ()):
            assert (wide.axes[name][0], wide.axes[name][-1]) == HARD_BOUNDS[name]
        assert set(grid.axes[LEARNING_RATE]) <= set(wide.axes[LEARNING_RATE])
        # Every grid a search extending its edges reaches lies on it (random walks of extensions).
        rng = random.Random(0)
        for _ in range(20):
            reached = grid
            while True:
                index = tuple(rng.choice([0, n - 1, rng.randrange(n)]) for n in reached.shape)
                wider = reached.extended(reached.point(index))
                if wider is None and all(reached.extended(reached.point(i)) is None for i in corners(reached)):
                    break
                reached = wider or reached
                assert all(set(reached.axes[name]) <= set(wide.axes[name]) for name in grid.names)
            assert reached == wide  # extended at every corner, as far as it goes
        search = rows[(f"search {recipe} D=16,384", "tiny-1m")]
        # lr 1e-5 .. 0.3 (12 values), epochs 1 .. 256 (9), weight decay 0 .. 12.8 (8)
        assert search.count_upper == wide.size == (12 * 9 if recipe == "standard" else 12 * 9 * 8)
        epochs = sum(wide.axes[NUM_TRAIN_EPOCHS]) * wide.size // len(wide.axes[NUM_TRAIN_EPOCHS])
        assert search.tokens_upper == epochs * 16384
        tie_break = rows[(f"tie-breaks {recipe} D=16,384", "tiny-1m")]
        neighbours = 4 if recipe == "standard" else 6
        # At most: 256 epochs, its neighbours along the other axes too, and 128 below it.
        assert tie_break_epochs_upper(wide) == 256 * (1 + neighbours - 2) + 128
        added = sum(len(wide.axes[n]) - len(v) for n, v in grid.axes.items())
        assert continuation_upper(grid, wide, 2) == (2 * added, 2 * added * 256.0)
        assert tie_break.tokens_upper == (2 * tie_break_epochs_upper(wide) + 2 * added * 256) * 16384
    _, fixed = tiny_plan(extend_edges=False)
    rows = {(w.what, w.model): w for w in fixed.work}
    for recipe, neighbours in (("standard", 4), ("regularized", 6)):  # no edge to go past
        assert rows[(f"tie-breaks {recipe} D=8,192", "tiny-0.5m")].count_upper == 2 * (1 + neighbours)
    assert rows[("search standard D=8,192", "tiny-0.5m")].count_upper == 9
    assert rows[("search regularized D=8,192", "tiny-0.5m")].count_upper == 27
    assert rows[("search regularized D=8,192", "tiny-0.5m")].tokens_upper == 9 * (2 + 4 + 8) * 8192
    assert fixed.trainings == plan.trainings  # extensions are not expected


def corners(grid):
    import itertools

    return itertools.product(*((0, n - 1) for n in grid.shape))


def test_plan_text_fits_the_longest_work_label(capsys, tmp_path):
    import yaml

    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY_STUDY))
    assert main(["plan", str(recipe)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("work "))
    model = header.index("model")
    rows = lines[lines.index(header) + 1 : lines.index("", lines.index(header))]
    assert any("(from the standard optimum)" in row for row in rows)
    for row in rows:
        assert row[model - 2 : model] == "  " and row[model:].split()[0] in TINY_STUDY["presets"], row
