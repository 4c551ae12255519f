"""What breaks on a first GPU run, checked on the CPU: device memory between in-process runs, vLLM's naming rules
for the ensemble, the streamed scorer's memory, ranks that must not hang, and scoring precision."""

from __future__ import annotations

import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
from conftest import AUTO_MICRO_BATCH_RUN

from hf_infcompute.training.config import parse_run_config

REPO = Path(__file__).resolve().parents[1]
GIB = 1024**3


class FakeCudaMemory:
    """PyTorch's CUDA memory API over a simulated 80 GiB device: `allocated` bytes live in tensors, `reserved` bytes
    are held by the caching allocator (allocated plus cached blocks); the driver counts all reserved bytes as used."""

    def __init__(self, total: int = 80 * GIB):
        self.total, self.allocated, self.reserved = total, 0, 0
        self.cache_releasable = True

    def mem_get_info(self, device=None) -> tuple[int, int]:
        return self.total - self.reserved, self.total

    def memory_reserved(self, device=None) -> int:
        return self.reserved

    def memory_allocated(self, device=None) -> int:
        return self.allocated

    def empty_cache(self) -> None:
        if self.cache_releasable:
            self.reserved = self.allocated

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("mem_get_info", "memory_reserved", "memory_allocated", "empty_cache"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))


@pytest.mark.parametrize("cache_releasable", [True, False])
def test_a_second_run_in_the_process_sizes_its_micro_batch_like_the_first(corpus_dir, monkeypatch, cache_releasable):
    """D1: the previous run's cached blocks (14 GiB, no longer allocated) do not count as used, whether
    `empty_cache` returns them to the driver or (fragmented) it cannot."""
    from hf_infcompute.models.presets import get_preset
    from hf_infcompute.planning.device import fit_micro_batch
    from hf_infcompute.training.arguments import RegularizedTrainingArguments

    settings = {**AUTO_MICRO_BATCH_RUN, "corpus": str(corpus_dir)}
    config = get_preset("llama-1.4b").build_config(vocab_size=128_256)
    runs = [parse_run_config(settings, "/tmp/unused").training for _ in range(3)]
    for args in runs:
        assert args.device.type == "cpu"  # sets up the (single-process) distributed state before faking a GPU
    memory = FakeCudaMemory()
    memory.cache_releasable = cache_releasable
    memory.install(monkeypatch)
    monkeypatch.setattr(RegularizedTrainingArguments, "device", property(lambda self: torch.device("cuda", 0)))
    first = fit_micro_batch(runs[0], config, 4096)
    assert first >= 1
    memory.reserved = 14 * GIB  # the first run's tensors are gone; the allocator keeps their blocks cached
    assert memory.mem_get_info()[0] == 66 * GIB  # what the driver alone reports
    second = fit_micro_batch(runs[1], config, 4096)
    assert second == first
    memory.allocated = memory.reserved = 70 * GIB  # memory really in use still counts
    with pytest.raises(Exception, match="not one sequence"):
        fit_micro_batch(runs[2], config, 4096)


def test_the_device_planner_imports_first_in_a_fresh_interpreter():
    """D1: `hf_infcompute.planning.device` imported before anything else (no cycle through `training`)."""
    for module in ("hf_infcompute.planning.device", "hf_infcompute.training.pretraining"):
        done = subprocess.run(
            [sys.executable, "-c", f"import {module}"], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]


def vllm_extract_layer_index(layer_name: str) -> int:
    """vLLM's rule, reimplemented from vllm/model_executor/models/utils.py `extract_layer_index` (with the default
    `num_attn_module=1`, as `bind_kv_cache` in vllm/v1/worker/utils.py and `LlamaAttention` call it): a layer's name
    must hold exactly one dot-separated integer, its index."""
    integers = []
    for part in layer_name.split("."):
        try:
            integers.append(int(part))
        except ValueError:
            continue
    assert len(integers) == 1, f"layer name {layer_name} should only contain one integer"
    return integers[0]


def vllm_supports_kw(function, name: str) -> bool:
    """vLLM's `supports_kw` for ordinary signatures: the keyword is a parameter, or `**kwargs` takes it."""
    import inspect

    parameters = inspect.signature(function).parameters
    if name in parameters:
        return parameters[name].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def vllm_is_text_generation_model(model_class) -> bool:
    """vLLM's rules, reimplemented from vllm/model_executor/models/interfaces_base.py: `is_vllm_model` (an
    `__init__` taking `vllm_config`, a callable `embed_input_ids`, a `forward` taking `input_ids` and `positions`)
    and `is_text_generation_model` (also `compute_logits`)."""
    return (
        vllm_supports_kw(model_class.__init__, "vllm_config")
        and callable(getattr(model_class, "embed_input_ids", None))
        and all(vllm_supports_kw(model_class.forward, kw) for kw in ("input_ids", "positions"))
        and callable(getattr(model_class, "compute_logits", None))
    )


@pytest.mark.parametrize("root", ["", "model"])
def test_vllm_ensemble_attention_names_hold_one_unique_layer_index(root):
    """D2: the attention layers of K members, named as vLLM's Llama builds them through the ensemble's `layer_type`,
    pass `extract_layer_index` and number all members' layers 0..total-1 once each (the engine's layer count)."""
    from hf_infcompute.generation import vllm_ensemble

    class RecordingLayer:  # stands in for vLLM's LlamaDecoderLayer: its attention is `{prefix}.self_attn.attn`
        def __init__(self, *, vllm_config, prefix):
            self.attention_name = f"{prefix}.self_attn.attn"

    depths = [3, 2, 3]
    members = [{"num_hidden_layers": depth} for depth in depths]
    names, first_layer, ensemble_root = [], 0, f"{root}." if root else ""
    for index, depth in enumerate(depths):
        build = vllm_ensemble.member_layer_type(RecordingLayer, first_layer, ensemble_root)
        member_prefix = f"{ensemble_root}members.{index}"
        # vLLM's LlamaForCausalLM -> LlamaModel(prefix=".../model") -> make_layers(prefix=".../model.layers")
        layers = [build(vllm_config=None, prefix=f"{member_prefix}.model.layers.{j}") for j in range(depth)]
        names += [layer.attention_name for layer in layers]
        first_layer += depth
    indices = [vllm_extract_layer_index(name) for name in names]
    assert sorted(indices) == list(range(sum(depths)))
    assert vllm_ensemble.engine_overrides(
        {"member_configs": [{**m, "hidden_size": 8, "num_attention_heads": 2} for m in members]}
    )["num_hidden_layers"] == len(set(indices))
    assert len(set(names)) == len(names)
    with pytest.raises(AssertionError, match="only contain one integer"):  # the names members' own prefixes give
        vllm_extract_layer_index("members.1.model.layers.0.self_attn.attn")


def test_vllm_ensemble_is_a_vllm_generation_model():
    """D2: the class passes vLLM's model checks, and `embed_input_ids`/`forward(inputs_embeds=)` agree with
    `forward(input_ids)` (members faked as embedding-only models)."""
    from torch import nn

    from hf_infcompute.generation.vllm_ensemble import VLLMLogitEnsemble

    assert vllm_is_text_generation_model(VLLMLogitEnsemble)

    class FakeMember(nn.Module):
        def __init__(self, seed):
            super().__init__()
            self.embedding = nn.Embedding(10, 4)
            torch.nn.init.normal_(self.embedding.weight, generator=torch.Generator().manual_seed(seed))

        def embed_input_ids(self, input_ids):
            return self.embedding(input_ids)

        def forward(self, input_ids, positions, intermediate_tensors=None, inputs_embeds=None):
            hidden = self.embedding(input_ids) if inputs_embeds is None else inputs_embeds
            return hidden * 2 + positions.unsqueeze(-1)

    ensemble = VLLMLogitEnsemble.__new__(VLLMLogitEnsemble)
    nn.Module.__init__(ensemble)
    ensemble.members, ensemble.hidden_size = nn.ModuleList([FakeMember(0), FakeMember(1)]), 4
    ids, positions = torch.tensor([1, 5, 7]), torch.arange(3)
    embeds = ensemble.embed_input_ids(ids)
    assert embeds.shape == (3, 8)
    torch.testing.assert_close(ensemble(None, positions, inputs_embeds=embeds), ensemble(ids, positions))


def micro_members(k: int = 3, **overrides) -> list:
    from transformers import LlamaForCausalLM

    from tests.conftest import micro_llama_config

    members = []
    for seed in range(k):
        torch.manual_seed(seed)
        members.append(LlamaForCausalLM(micro_llama_config(**overrides)).eval())
    return members


def validation_rows(rows: int = 8, length: int = 16):
    import datasets

    ids = torch.randint(1, 64, (rows, length), generator=torch.Generator().manual_seed(7))
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "length": [length] * rows})


@torch.no_grad()
def test_streamed_curve_keeps_a_bounded_number_of_running_sums(monkeypatch):
    """D3: streamed members run over windows of chunks, so the running sums alive at once are those of the chunks
    the free memory holds beside a member (here 2 of a batch's 8), not of every chunk of the batch; the curve is the
    same as scored resident."""
    from hf_infcompute.ensemble import curve

    members, data = micro_members(), validation_rows()
    resident = curve.ensemble_curve(members, data, 0, batch_size=8, chunk_tokens=16, stream=False)

    live: weakref.WeakSet = weakref.WeakSet()  # the combiners still referenced
    peak = [0]

    class CountingCombiner(curve.LogitCombiner):
        def add(self, logits):
            super().add(logits)
            live.add(self)
            peak[0] = max(peak[0], sum(c.total.numel() * c.total.element_size() for c in live))

    chunk_bytes = len(curve.COMBINE_MODES) * 1 * 15 * 64 * 4  # one row of 15 targets x vocabulary 64, float32
    member_bytes = curve.model_bytes(members[0])
    assert curve.live_chunks(10**12, member_bytes, chunk_bytes) > 8  # plenty of memory: all chunks at once
    free = int((member_bytes + 3 * chunk_bytes) / (1 - curve.MEMORY_HEADROOM)) + 1
    assert curve.live_chunks(free, member_bytes, chunk_bytes) == 2
    monkeypatch.setattr(curve, "LogitCombiner", CountingCombiner)
    monkeypatch.setattr(curve, "free_device_memory", lambda device: free)
    streamed = curve.ensemble_curve(members, data, 0, batch_size=8, chunk_tokens=16, stream=True)
    # Two chunks' sums, and the last combiner of a finished chunk still named by the loop variable.
    assert 0 < peak[0] <= 2 * chunk_bytes + chunk_bytes // 2
    assert streamed.ensemble == pytest.approx(resident.ensemble, abs=1e-6)
    assert streamed.members == pytest.approx(resident.members, abs=1e-6)
    # Before windows, a streamed batch kept every chunk's sums until its last member: 8 chunks' worth here.
    assert peak[0] < 8 * chunk_bytes


# ------------------------------------------------------------------ ranks that must not hang (gloo, on the CPU)

# A hang ends with the process group's timeout (a collective that waits longer fails), so a test fails in seconds.
GROUP_TIMEOUT_S = 10

RANK_PROLOGUE = """
import datetime, os, sys, time
from pathlib import Path
from types import SimpleNamespace
import torch
import torch.distributed as dist
sys.path.insert(0, {repo!r})
rank, world, port, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                  MASTER_ADDR="127.0.0.1", MASTER_PORT=port, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds={timeout}))
"""
# Send/receive based: it pairs with no collective that one rank runs alone, so a lone collective times out.
RANK_EPILOGUE = """
dist.monitored_barrier(timeout=datetime.timedelta(seconds={timeout}))
dist.destroy_process_group()
"""


def run_ranks(body: str, folder: Path, world: int = 2, timeout: float = 120) -> None:
    """Run `body` in `world` processes of one gloo group (`rank`, `world`, `folder` defined), all ending at a barrier;
    fail if any process fails (a collective that one rank waits on alone times out after GROUP_TIMEOUT_S)."""
    import socket
    import textwrap

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    script = folder / "ranks.py"
    script.write_text(
        RANK_PROLOGUE.format(repo=str(REPO), timeout=GROUP_TIMEOUT_S)
        + textwrap.dedent(body)
        + RANK_EPILOGUE.format(timeout=GROUP_TIMEOUT_S)
    )
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), str(world), port, str(folder)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(world)
    ]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=timeout)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for rank, (process, output) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, f"rank {rank} failed:\n{output[-3000:]}"


def test_lead_scoring_after_a_zero3_run_loads_without_waiting_for_the_other_ranks(tmp_path):
    """D5: after a launched ZeRO-3 run the lead alone loads the saved model to score it; with the DeepSpeed config
    still live transformers would load inside `zero.Init`, whose collectives (simulated here by an all-reduce in the
    load, as partitioning does) wait for ranks that have moved on."""
    run_ranks(
        """
        from transformers import LlamaForCausalLM
        from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled, set_hf_deepspeed_config
        import datasets
        import hf_infcompute.training.pretraining as pretraining
        from tests.conftest import micro_llama_config

        class Zero3Config:  # what the run's arguments keep alive: transformers' HfDeepSpeedConfig of a ZeRO-3 run
            config = {}
            def is_zero3(self):
                return True

        live_config = Zero3Config()
        set_hf_deepspeed_config(live_config)
        loader = pretraining.AutoModelForCausalLM

        class ZeroInitLoader:
            @staticmethod
            def from_pretrained(*args, **kwargs):
                if is_deepspeed_zero3_enabled():  # zero.Init partitions every parameter with the group's collectives
                    dist.all_reduce(torch.zeros(1))
                return loader.from_pretrained(*args, **kwargs)

        pretraining.AutoModelForCausalLM = ZeroInitLoader
        if rank == 0:
            model = LlamaForCausalLM(micro_llama_config())
            model.save_pretrained(folder / "model")
            trainer = SimpleNamespace(
                model=model, is_fsdp_enabled=False, is_deepspeed_enabled=True,
                args=SimpleNamespace(per_device_eval_batch_size=2, device=torch.device("cpu"), bf16=False),
            )
            rows = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3, 4, 5, 6]] * 3, "length": [6] * 3})
            data = SimpleNamespace(validation=rows, test=rows, tokenizer=SimpleNamespace(pad_token_id=0))
            validation, test = pretraining.held_out_sequence_losses(trainer, data, folder / "model")
            # scored, and the run's config restored
            assert len(validation) == len(test) == 3 and is_deepspeed_zero3_enabled()
        """,
        tmp_path,
    )


def test_lora_final_save_under_sharding_merges_on_the_lead_while_every_rank_gathers(tmp_path):
    """D6: LoRA under FSDP2/ZeRO-3: every rank joins the full-state-dict gather (an all-gather here) and the lead
    saves the merged model, which predicts as the adapters merged into the unsharded model."""
    run_ranks(
        """
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, LlamaForCausalLM
        from hf_infcompute.models.checkpoint import merged
        from hf_infcompute.training.pretraining import save_final_model
        from tests.conftest import micro_llama_config

        def lora_model():
            torch.manual_seed(0)
            lora = LoraConfig(task_type="CAUSAL_LM", target_modules="all-linear", r=4, init_lora_weights=False)
            return get_peft_model(LlamaForCausalLM(micro_llama_config()), lora)

        class ShardedAccelerator:
            def get_state_dict(self, model):
                ranks = [None] * world
                dist.all_gather_object(ranks, rank)  # the gather of the shards, which every rank must join
                return {key: value.clone() for key, value in model.state_dict().items()} if rank == 0 else {}

        model = lora_model()
        trainer = SimpleNamespace(
            model=model, model_wrapped=model, is_fsdp_enabled=True, is_deepspeed_enabled=False,
            args=SimpleNamespace(bf16=False),
            accelerator=ShardedAccelerator(), is_world_process_zero=lambda: rank == 0,
            processing_class=SimpleNamespace(save_pretrained=lambda folder: None),
            _save=lambda *args, **kwargs: None, save_model=lambda *args, **kwargs: None,
        )
        save_final_model(trainer, folder / "model", {"run_id": "lora"})
        if rank == 0:
            saved = AutoModelForCausalLM.from_pretrained(folder / "model")
            ids = torch.randint(0, 64, (2, 8))
            torch.testing.assert_close(saved(ids).logits, merged(lora_model())(ids).logits)
        """,
        tmp_path,
    )


@pytest.mark.slow
def test_ranks_wait_for_the_lead_preparing_data_longer_than_the_group_timeout(tiny_run, tmp_path):
    """D14: the lead builds the data cache (slowed here past the group's timeout) while the other rank waits on the
    cache's file lock, not at a barrier; both then have the same data."""
    settings = {**tiny_run, "cache_dir": str(tmp_path / "cache")}
    run_ranks(
        f"""
        from hf_infcompute.data import cache
        from hf_infcompute.training.pretraining import pretrain

        build = cache._build_atomically
        def slow_build(target, fill):
            time.sleep({GROUP_TIMEOUT_S} * 0.6)  # twice (tokenizer, packed corpus): past the group's timeout
            build(target, fill)

        cache._build_atomically = slow_build

        class Prepared(Exception):
            pass

        def stop_with_the_data(run, data, callbacks):
            raise Prepared(len(data.train))

        try:
            pretrain({settings!r}, folder / "out", trainer_factory=stop_with_the_data)
        except Prepared as prepared:
            rows = prepared.args[0]
        counts = [None] * world
        dist.all_gather_object(counts, rows)
        assert counts[0] == counts[1] > 0
        """,
        tmp_path,
        timeout=300,
    )


# ------------------------------------------------------------------ precision of scoring and of saved weights

# bf16 keeps 8 bits of mantissa: logits of these models move by ~1e-2 at most, a row's mean NLL by less than 0.01.
BF16_NLL_TOLERANCE = 0.01


@torch.no_grad()
def test_bf16_scoring_equals_fp32_within_tolerance():
    """D12: validation rows and the K-curve scored under bf16 autocast agree with fp32 within BF16_NLL_TOLERANCE
    nats per row; the reduction stays float32."""
    from hf_infcompute.ensemble.curve import ensemble_curve
    from hf_infcompute.training.validation import sequence_losses

    members, data = micro_members(num_hidden_layers=2), validation_rows()
    fp32 = sequence_losses(members[0], data, 0, batch_size=4)
    bf16 = sequence_losses(members[0], data, 0, batch_size=4, bf16=True)
    assert fp32 != bf16  # bf16 really ran
    assert max(abs(a - b) for a, b in zip(fp32, bf16)) < BF16_NLL_TOLERANCE
    assert next(members[0].parameters()).dtype == torch.float32  # autocast, not a cast of the weights
    curve32 = ensemble_curve(members, data, 0, batch_size=4)
    curve16 = ensemble_curve(members, data, 0, batch_size=4, bf16=True)
    for mode, losses in curve32.ensemble.items():
        assert losses == pytest.approx(curve16.ensemble[mode], abs=BF16_NLL_TOLERANCE)


def test_a_bf16_run_saves_its_final_weights_in_bf16(tmp_path):
    """D15: the final model of a bf16 run is written in bf16 (half the bytes) and loads as bf16 with dtype="auto";
    it predicts as the fp32 weights do within bf16's precision."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    from hf_infcompute.training import RegularizedTrainer, RegularizedTrainingArguments
    from hf_infcompute.training.pretraining import save_final_model
    from tests.conftest import micro_llama_config

    torch.manual_seed(0)
    model = LlamaForCausalLM(micro_llama_config(num_hidden_layers=2))
    args = RegularizedTrainingArguments(output_dir=str(tmp_path / "run"), report_to="none", precision="bf16")
    trainer = RegularizedTrainer(model=model, args=args)
    save_final_model(trainer, tmp_path / "model", {"run_id": "bf16"})
    with safe_open(tmp_path / "model" / "model.safetensors", "pt") as saved:
        assert {saved.get_tensor(name).dtype for name in saved.keys()} == {torch.bfloat16}  # noqa: SIM118
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model", dtype="auto")
    assert loaded.dtype == torch.bfloat16 and model.dtype == torch.float32  # the trained model is left as it was
    ids = torch.randint(0, 64, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits.float(), model(ids).logits, atol=0.05, rtol=0.05)
    fp32_args = RegularizedTrainingArguments(output_dir=str(tmp_path / "run32"), report_to="none", precision="fp32")
    save_final_model(RegularizedTrainer(model=model, args=fp32_args), tmp_path / "model32", {"run_id": "fp32"})
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "model32", dtype="auto").dtype == torch.float32


@pytest.mark.slow
def test_record_curve_loads_each_member_once_and_scores_the_soup(tiny_run, tmp_path, monkeypatch):
    """D15 and D12: the K-curve, the saved ensemble and the soup come from one load of each member; the soup folder
    has the tokenizer, and bf16 members are saved, ensembled and souped in bf16."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_infcompute.ensemble.members import train_ensemble

    run = parse_run_config({**tiny_run, "num_train_epochs": 1, "precision": "bf16"})
    output = tmp_path / "out"
    loads: list[str] = []
    original = AutoModelForCausalLM.from_pretrained.__func__

    def counted(cls, source, *args, **kwargs):
        loads.append(str(source))
        return original(cls, source, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(counted))
    records = train_ensemble(run, output, 2, soup=True)
    member_dirs = [r["model_dir"] for r in records if r["kind"] == "ensemble" and r["k"] == 2]
    assert member_dirs  # the full ensemble is saved
    members = sorted({path for path in loads if "/runs/" in path})
    assert len(members) == 2 and all(loads.count(path) == 1 for path in members)
    soup = next(r for r in records if r["kind"] == "soup")
    assert AutoTokenizer.from_pretrained(soup["model_dir"]) is not None
    monkeypatch.undo()
    assert AutoModelForCausalLM.from_pretrained(soup["model_dir"], dtype="auto").dtype == torch.bfloat16
    assert AutoModelForCausalLM.from_pretrained(members[0], dtype="auto").dtype == torch.bfloat16


def test_dataloader_workers_default_to_the_spare_cores_of_a_gpu_process(monkeypatch):
    """D13: on a GPU the batches are collated by worker processes (the cores of the process's share but one, at most
    4); on the CPU by none; a given count is kept, and the data order does not depend on it."""
    from torch.utils.data import DataLoader

    from hf_infcompute.training.arguments import (
        MAX_DEFAULT_DATALOADER_WORKERS,
        RegularizedTrainingArguments,
        default_dataloader_workers,
    )

    monkeypatch.setattr("hf_infcompute.workers.os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert default_dataloader_workers(on_gpu=True) == MAX_DEFAULT_DATALOADER_WORKERS  # one process on 16 cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert default_dataloader_workers(on_gpu=True) == 1  # 8 processes: 2 cores each, one for the training loop
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert default_dataloader_workers(on_gpu=True) == 0
    assert default_dataloader_workers(on_gpu=False) == 0
    assert RegularizedTrainingArguments(output_dir="/tmp/unused", report_to="none").dataloader_num_workers == 0
    given = RegularizedTrainingArguments(output_dir="/tmp/unused", report_to="none", dataloader_num_workers=3)
    assert given.dataloader_num_workers == 3
    rows = list(range(12))
    order = [batch.tolist() for batch in DataLoader(rows, batch_size=4, num_workers=2)]
    assert order == [batch.tolist() for batch in DataLoader(rows, batch_size=4)]


@pytest.mark.parametrize(("device", "expected"), [("cuda", "bfloat16"), ("cpu", "auto")])
def test_lm_eval_loads_in_bf16_on_a_gpu(tmp_path, monkeypatch, device, expected):
    """D4: the harness loads a model (an ensemble of K members above all) in bf16 on a GPU, in its saved dtype
    elsewhere; a dtype given is kept."""
    import lm_eval

    from hf_infcompute.evaluation.harness import evaluate_model

    (tmp_path / "config.json").write_text("{}")
    seen = []

    class Captured(Exception):
        pass

    def capture(**kwargs):
        seen.append(kwargs)
        raise Captured

    monkeypatch.setattr(lm_eval, "simple_evaluate", capture)
    monkeypatch.setattr("hf_infcompute.evaluation.harness.TaskManager", lambda: None)  # indexes every task: slow
    for dtype, wanted in ((None, expected), ("float32", "float32")):
        with pytest.raises(Captured):
            evaluate_model(tmp_path, "piqa", device=device, dtype=dtype)
        assert seen[-1]["model_args"]["dtype"] == wanted and seen[-1]["device"] == device
