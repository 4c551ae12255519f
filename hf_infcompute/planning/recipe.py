"""What a recipe costs before anything trains.

Per preset: parameters, the largest micro-batch that fits a device (and its memory), FLOPs per token. For the whole
recipe: the trainings, the tokens trained and generated, FLOPs, and device-hours at a utilisation.

Both recipes are searched at every budget of the study for every preset (`hf_infcompute.study.search_plan`). Bounds
on coordinate descent: a search evaluates its start and the start's neighbours, then after each move the new point's
unseen neighbours (2 x free axes - 1 of them). `expected` assumes `EXPECTED_MOVES` moves (the paper's optima lie one or
two grid steps from its starts), each new point costing the mean of the start's neighbourhood; `upper` is the whole
grid the search may reach, which no search exceeds: its grid, or where it extends its edges (`extend_edges`) its grid
extended along every axis out to the hard bounds (`hf_infcompute.study.search_counts.fully_extended`); expected, no
extension. A search starting from several points (`search_plan.start_sources`: a regularized one also from the
standard optimum) counts each further start's expected runs on a row of its own with upper bound 0: every start walks
the same grid, whose size bounds them together (expected: the grid before extension). A start that is another search's
optimum, unknown beforehand, is stood in for by that search's configured start. Each search's tie-break re-trains
its best point and, expected, the runner-up neighbour (at most every neighbour) at `tie_break_seeds` fresh seeds; at
the regularized optimum of the main budget those seeds are the ensemble's members 1..s, counted once, with the
tie-break. Trainings after the searches (members, students) take the start point's epochs and weight decay, the
searches' results being unknown beforehand.

Counted FLOPs are model FLOPs (`hf_infcompute.models.flops`): training 3 x forward per token trained, sampling one
forward per member per token generated. Evaluation is not counted (each run scores its `val_sequences` validation rows,
its `test_sequences` test rows and a sample of training rows forward only, about 1% of its training at the paper's
settings); gradient checkpointing's recomputed forward is not counted as FLOPs but lengthens the device-hours by 4/3
for the presets that need it.

Training is priced by its FLOPs at a utilisation; sampling by the teacher's decode throughput on the device
(`hf_infcompute.generation.budget.decode_throughput`, or a measured tokens/s), since decoding is bound by memory
bandwidth, not FLOPs. Wall-clock time on `workers` devices: the searches, members and sampling are shared by every
worker; the students are trained by the lead alone afterwards (the serial tail), the other devices idle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers import AutoTokenizer, PretrainedConfig

from hf_infcompute.data.arguments import DataArguments
from hf_infcompute.errors import InputError
from hf_infcompute.generation.budget import DecodeEstimate, decode_throughput, kv_bytes_per_token
from hf_infcompute.models.checkpoint import load_base_config
from hf_infcompute.models.flops import FlopsPerToken, flops_per_token
from hf_infcompute.models.presets import ParameterCounts, count_parameters, get_preset
from hf_infcompute.planning.memory import (
    DEFAULT_LOSS_CHUNK_TOKENS,
    GIB,
    StepMemory,
    gradient_accumulation,
    largest_micro_batch,
    step_memory,
)
from hf_infcompute.search.grid import NUM_TRAIN_EPOCHS, WEIGHT_DECAY, SearchGrid
from hf_infcompute.study.pipeline import search_grid, search_spec
from hf_infcompute.study.search_counts import (
    continuation_upper,
    free_axes,
    reachable_grid,
    tie_break_epochs_upper,
    tie_break_members,
    tie_break_runs,
)
from hf_infcompute.study.search_plan import SearchNode, search_nodes, start_sources
from hf_infcompute.study.spec import OPTIMUM, StudySpec
from hf_infcompute.training.arguments import RegularizedTrainingArguments

EXPECTED_MOVES = 2
HOURS = 3600.0
RECOMPUTE_TIME_FACTOR = 4 / 3  # gradient checkpointing runs each layer's forward twice: 4 forwards' time, not 3


@dataclass(frozen=True)
class RunSettings:
    """The settings of a recipe that decide memory and cost."""

    seq_len: int
    vocab_size: int | None  # None: a base model's own
    global_batch: int
    world_size: int
    bf16: bool
    gradient_checkpointing: bool
    loss_implementation: str
    loss_chunk_tokens: int
    configured_micro_batch: int


def _default(cls: type, name: str) -> Any:
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def _setting(run: dict[str, Any], name: str, cls: type | None = None, fallback: Any = None) -> Any:
    """`run[name]`, else the run argument's default (or `fallback` for keys of other modules)."""
    if name in run:
        return run[name]
    return _default(cls, name) if cls is not None else fallback


def run_settings(run: dict[str, Any], *, vocab_size: int | None, world_size: int = 1) -> RunSettings:
    """Settings of a flat run mapping (a recipe or a study's `run`), with the run arguments' defaults."""
    train = RegularizedTrainingArguments
    micro_batch = int(_setting(run, "per_device_train_batch_size", train))
    global_batch = _setting(run, "global_batch_size", train)
    if global_batch is None:
        global_batch = micro_batch * int(_setting(run, "gradient_accumulation_steps", fallback=1)) * world_size
    precision = _setting(run, "precision", train)
    return RunSettings(
        seq_len=int(_setting(run, "seq_len", DataArguments)),
        vocab_size=vocab_size,
        global_batch=int(global_batch),
        world_size=world_size,
        bf16=precision != "fp32",  # 'auto' is bf16 on every GPU with bf16
        gradient_checkpointing=bool(_setting(run, "gradient_checkpointing", fallback=False)),
        loss_implementation=str(_setting(run, "loss_implementation", fallback="chunked")),
        loss_chunk_tokens=int(_setting(run, "loss_chunk_tokens", fallback=DEFAULT_LOSS_CHUNK_TOKENS)),
        configured_micro_batch=micro_batch,
    )


def resolve_vocab_size(run: dict[str, Any], given: int | None = None) -> int | None:
    """The vocabulary a run's fresh models get: `given`, a trained BPE's `vocab_size`, or the length of the named
    tokenizer (read from the local cache or the Hub); None for a base model, which has its own."""
    if given is not None:
        return given
    if run.get("base_model"):
        return None
    tokenizer = _setting(run, "tokenizer", DataArguments)
    if tokenizer == "bpe":
        return int(_setting(run, "vocab_size", DataArguments))
    try:
        return len(AutoTokenizer.from_pretrained(tokenizer))
    except (OSError, ValueError) as error:
        raise InputError(
            f"cannot read the vocabulary of tokenizer {tokenizer!r} ({error}); pass --vocab-size N (the Llama 3 "
            "tokenizer of the paper's recipes has 128256)"
        ) from error


@dataclass(frozen=True)
class PresetPlan:
    """One model on one device: the chosen micro-batch (0 when not one sequence fits) and its step's memory."""

    name: str
    parameters: ParameterCounts
    flops: FlopsPerToken
    micro_batch: int
    grad_accum: int
    global_batch: int
    memory: StepMemory
    configured_memory: StepMemory

    @property
    def fits(self) -> bool:
        return self.micro_batch > 0

    @property
    def time_factor(self) -> float:
        return RECOMPUTE_TIME_FACTOR if self.memory.gradient_checkpointing else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "parameters": self.parameters.total,
            "embedding_parameters": self.parameters.total - self.parameters.non_embedding,
            "non_embedding_parameters": self.parameters.non_embedding,
            "micro_batch": self.micro_batch,
            "grad_accum": self.grad_accum,
            "global_batch": self.global_batch,
            "gradient_checkpointing": self.memory.gradient_checkpointing,
            "fits": self.fits,
            "memory_gib": round(self.memory.total / GIB, 2),
            "memory": self.memory.to_gib(),
            "configured_micro_batch_memory_gib": round(self.configured_memory.total / GIB, 2),
            "flops_per_token": self.flops.training,
            "forward_flops_per_token": {
                "non_embedding": self.flops.non_embedding,
                "lm_head": self.flops.lm_head,
                "attention": self.flops.attention,
            },
        }


def plan_model(name: str, config: PretrainedConfig, settings: RunSettings, device_bytes: float) -> PresetPlan:
    """The largest micro-batch of `config` that fits `device_bytes` at the global batch; gradient checkpointing is
    turned on only when the run asks for it or when nothing fits without it."""
    parameters = count_parameters(config)
    options = {
        "bf16": settings.bf16,
        "loss_implementation": settings.loss_implementation,
        "loss_chunk_tokens": settings.loss_chunk_tokens,
    }

    def largest(checkpointing: bool) -> int:
        return largest_micro_batch(
            config,
            parameters.total,
            settings.seq_len,
            settings.global_batch,
            settings.world_size,
            device_bytes,
            gradient_checkpointing=checkpointing,
            **options,
        )

    checkpointing = settings.gradient_checkpointing
    micro_batch = largest(checkpointing)
    if micro_batch == 0 and not checkpointing:
        checkpointing = True
        micro_batch = largest(checkpointing)

    def memory(batch: int) -> StepMemory:
        return step_memory(
            config, parameters.total, max(batch, 1), settings.seq_len, gradient_checkpointing=checkpointing, **options
        )

    return PresetPlan(
        name=name,
        parameters=parameters,
        flops=flops_per_token(config, settings.seq_len),
        micro_batch=micro_batch,
        grad_accum=gradient_accumulation(settings.global_batch, micro_batch, settings.world_size) if micro_batch else 0,
        global_batch=settings.global_batch,
        memory=memory(micro_batch),
        configured_memory=memory(settings.configured_micro_batch),
    )


def model_config(run: dict[str, Any], preset: str | None, settings: RunSettings) -> tuple[str, PretrainedConfig]:
    """The name and config of a run's model: `base_model`'s config, or `preset` (else the run's) at the vocabulary."""
    if run.get("base_model"):
        return str(run["base_model"]), load_base_config(run["base_model"])
    name = preset or _setting(run, "preset", fallback=None)
    if name is None:
        raise InputError("the recipe names no model: set `preset` or `base_model`")
    if settings.vocab_size is None:
        raise InputError(f"no vocabulary size known for preset {name}: pass --vocab-size")
    return name, get_preset(name).build_config(vocab_size=settings.vocab_size)


@dataclass(frozen=True)
class Work:
    """Trainings (or sampling) of one kind for one model: expected count and tokens, and their upper bounds."""

    what: str
    model: str
    count: int
    tokens: float
    count_upper: int
    tokens_upper: float
    flops_per_token: float  # training FLOPs per token trained, or forward FLOPs per token generated x members
    generated: bool = False
    decode: DecodeEstimate | None = None  # how fast the device samples (generated work)
    lead_only: bool = False  # trained by the lead alone after the shared phases (the serial tail)

    def seconds(self, peak_flops: float, mfu: float, time_factor: float = 1.0, upper: bool = False) -> float:
        """Device-seconds: generated tokens at the decode throughput, trained FLOPs at `mfu` of `peak_flops`."""
        if self.generated:
            if self.decode is None:
                raise InputError(f"{self.what}: no decode throughput known to price its sampling")
            return (self.tokens_upper if upper else self.tokens) / self.decode.tokens_per_second
        return (self.flops_upper if upper else self.flops) * time_factor / (peak_flops * mfu)

    @property
    def flops(self) -> float:
        return self.tokens * self.flops_per_token

    @property
    def flops_upper(self) -> float:
        return self.tokens_upper * self.flops_per_token

    def to_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "model": self.model,
            "count": self.count,
            "count_upper": self.count_upper,
            "tokens": self.tokens,
            "tokens_upper": self.tokens_upper,
            "flops": self.flops,
            "flops_upper": self.flops_upper,
            "generated": self.generated,
            "lead_only": self.lead_only,
            **({"decode": self.decode.to_dict()} if self.decode is not None else {}),
        }


@dataclass(frozen=True)
class RecipePlan:
    """Every preset's plan and every kind of work of a recipe."""

    presets: dict[str, PresetPlan]
    work: tuple[Work, ...]

    @property
    def tokens_trained(self) -> float:
        return sum(w.tokens for w in self.work if not w.generated)

    @property
    def tokens_generated(self) -> float:
        return sum(w.tokens for w in self.work if w.generated)

    @property
    def trainings(self) -> int:
        return sum(w.count for w in self.work if not w.generated)

    def total_flops(self, upper: bool = False) -> float:
        return sum(w.flops_upper if upper else w.flops for w in self.work)

    def device_hours(
        self, peak_flops: float, mfu: float, upper: bool = False, *, generated: bool | None = None
    ) -> float:
        """Device-hours: training at `mfu` of `peak_flops` (checkpointed presets taking `RECOMPUTE_TIME_FACTOR`
        longer), sampling at its decode throughput; only sampling or only training where `generated` says."""
        if not (peak_flops > 0 and 0 < mfu <= 1):
            raise InputError(f"device-hours need a peak above 0 and a utilisation in (0, 1], got {peak_flops}, {mfu}")
        chosen = [w for w in self.work if generated is None or w.generated == generated]
        return sum(w.seconds(peak_flops, mfu, self._time_factor(w), upper) for w in chosen) / HOURS

    def serial_tail_hours(self, peak_flops: float, mfu: float, upper: bool = False) -> float:
        """Hours the lead trains alone after the shared phases (the students)."""
        tail = [w for w in self.work if w.lead_only]
        return sum(w.seconds(peak_flops, mfu, self._time_factor(w), upper) for w in tail) / HOURS

    def wall_hours(self, peak_flops: float, mfu: float, workers: int, upper: bool = False) -> float:
        """Wall-clock hours on `workers` devices: the shared work spread evenly, then the lead's serial tail."""
        if workers < 1:
            raise InputError(f"workers must be at least 1, got {workers}")
        tail = self.serial_tail_hours(peak_flops, mfu, upper)
        return (self.device_hours(peak_flops, mfu, upper) - tail) / workers + tail

    def _time_factor(self, work: Work) -> float:
        plan = self.presets.get(work.model)
        return plan.time_factor if plan is not None and not work.generated else 1.0


def _search_work(
    what: str, preset: PresetPlan, grid: SearchGrid, start: dict, budget: int, reachable: SearchGrid
) -> Work:
    """Coordinate descent's trainings at one budget from `start`: expected (start, neighbours, `EXPECTED_MOVES`
    moves) and, as the upper bound, every point of `reachable` (the grid, extended out to the hard bounds where the
    search extends its edges)."""
    around = [start, *grid.neighbours(start)]
    expected = min(grid.size, len(around) + EXPECTED_MOVES * max(2 * free_axes(grid) - 1, 0))
    epochs = sum(p[NUM_TRAIN_EPOCHS] for p in around) + (expected - len(around)) * _mean_epochs(grid, start)
    every_epochs = reachable.axes[NUM_TRAIN_EPOCHS]  # each value once per point of the other axes
    all_epochs = sum(every_epochs) * (reachable.size // len(every_epochs))
    return Work(
        what, preset.name, expected, epochs * budget, reachable.size, all_epochs * budget, preset.flops.training
    )


def _mean_epochs(grid: SearchGrid, start: dict) -> float:
    """The mean epochs of `start` and its neighbours: what a point of a search not yet walked stands for."""
    around = [start, *grid.neighbours(start)]
    return sum(p[NUM_TRAIN_EPOCHS] for p in around) / len(around)


def _tie_break_work(
    what: str, preset: PresetPlan, grid: SearchGrid, start: dict, budget: int, reachable: SearchGrid, seeds: int
) -> Work:
    """A search's tie-break: `seeds` fresh seeds of its best point and of the runner-up neighbour (expected, each
    taking the epochs of a point near the start) or of the best point and every neighbour, and every point a choice on
    the edge goes on to (at most, on `reachable`)."""
    expected, _ = tie_break_runs(grid, seeds)
    _, upper = tie_break_runs(reachable, seeds)
    continued, continued_epochs = continuation_upper(grid, reachable, seeds)
    tokens = expected * _mean_epochs(grid, start) * budget
    tokens_upper = (seeds * tie_break_epochs_upper(reachable) + continued_epochs) * budget
    upper += continued
    return Work(what, preset.name, expected, tokens, upper, tokens_upper, preset.flops.training)


def _stand_in(spec: StudySpec, grid: SearchGrid, source: SearchNode | None, recipe: str) -> dict:
    """The point standing in for a start before anything trains: the configured start of the recipe whose optimum
    it is (the study's start for None), on `grid` (the regularized grid holds every standard point)."""
    return grid.canonical(search_grid(spec, source.recipe if source is not None else recipe)[1])


def study_search_work(spec: StudySpec, presets: dict[str, PresetPlan]) -> list[Work]:
    """Every search of `spec` (`search_plan.search_nodes`): per search its trainings from its first start, those
    from each further start (`search_plan.start_sources`, expected only: every start walks the same grid, whose
    size bounds them together, expected and at most) and its tie-break. A start that is another search's optimum,
    unknown beforehand, is stood in for by that search's configured start; bounds: `_search_work`,
    `_tie_break_work`."""
    grids = {recipe: search_grid(spec, recipe)[0] for recipe in ("standard", "regularized")}
    reachable = {recipe: reachable_grid(grid, search_spec(spec, recipe).extend_edges) for recipe, grid in grids.items()}
    work: list[Work] = []
    for node in search_nodes(spec):
        recipe, budget, preset = node.recipe, node.token_budget, presets[node.preset]
        grid, wider = grids[recipe], reachable[recipe]
        name, left = f"{recipe} D={budget:,}", grid.size  # expected, no start's search leaves its grid
        for position, (label, source) in enumerate(start_sources(spec, node).items()):
            start = _stand_in(spec, grid, source, recipe)
            if position == 0:
                row = _search_work(f"search {name}", preset, grid, start, budget, wider)
            else:
                row = _search_work(f"search {name} (from the {label})", preset, grid, start, budget, wider)
                row = dataclasses.replace(row, count_upper=0, tokens_upper=0.0)
            if row.count > left:  # the starts share the grid's points: together at most the whole grid
                row = dataclasses.replace(row, count=left, tokens=row.tokens * left / row.count)
            left -= row.count
            work.append(row)
        seeds = search_spec(spec, recipe).tie_break_seeds
        if seeds > 0:
            start = _stand_in(spec, grid, None, recipe)
            work.append(_tie_break_work(f"tie-breaks {name}", preset, grid, start, budget, wider, seeds))
    return work


@dataclass(frozen=True)
class DecodeDevice:
    """What prices sampling on a device: the backend, the device's bandwidth and peak, or a measured tokens/s."""

    backend: str
    bandwidth: float  # bytes/s
    peak_flops: float
    measured_tokens_per_second: float | None = None

    def estimate(
        self, config: PretrainedConfig, members: int, parameters: int, forward: float, seq_len: int, device_bytes: float
    ) -> DecodeEstimate:
        """Tokens/s sampling a teacher of `members` copies of `config` in bfloat16 (a measurement where given)."""
        if self.measured_tokens_per_second is not None:
            return DecodeEstimate(self.backend, 0, "measured", self.measured_tokens_per_second)
        return decode_throughput(
            backend=self.backend,
            weight_bytes=2.0 * members * parameters,
            kv_bytes_per_token=kv_bytes_per_token([config] * members, dtype_bytes=2),
            forward_flops_per_token=members * forward,
            seq_len=seq_len,
            memory_bytes=device_bytes,
            bandwidth=self.bandwidth,
            peak_flops=self.peak_flops,
        )


def plan_study(
    spec: StudySpec, settings: RunSettings, device_bytes: float, decode: DecodeDevice | None = None
) -> RecipePlan:
    """Every training and sampling of `spec` (see the module docstring for the bounds); sampling is priced on
    `decode` (without it, its device-hours are unknown)."""
    presets = {
        name: plan_model(name, model_config(spec.run, name, settings)[1], settings, device_bytes)
        for name in spec.presets
    }
    budget = spec.token_budget
    work = study_search_work(spec, presets)
    start = search_grid(spec, "regularized")[1]
    epochs, weight_decay = start[NUM_TRAIN_EPOCHS], start[WEIGHT_DECAY]
    for name in spec.ensemble.presets or spec.presets:
        work.append(_member_work(spec, presets[name], epochs * budget))

    def sampling_speed(members: int) -> DecodeEstimate | None:
        """Tokens/s sampling a teacher of `members` copies of the distillation preset."""
        if decode is None:
            return None
        name = spec.distillation_preset
        preset = presets[name]
        config = model_config(spec.run, name, settings)[1]
        forward, parameters = preset.flops.forward, preset.parameters.total
        return decode.estimate(config, members, parameters, forward, settings.seq_len, device_bytes)

    work += _distillation_work(spec, presets, budget, epochs, weight_decay, sampling_speed)
    return RecipePlan(presets=presets, work=tuple(work))


def _member_work(spec: StudySpec, preset: PresetPlan, tokens_per_member: float) -> Work:
    """Members trained beyond the searches: `k` per candidate rule, the rule chosen by its K -> inf asymptote ('paper'
    members train twice the epochs). The 'optimum' rule's member 0 is the search's run and its members 1..s the
    regularized tie-break's fresh seeds at the chosen optimum (`tie_break_members`), counted with the searches."""
    k = spec.ensemble.k
    cost = {OPTIMUM: 1.0, "paper": 2.0}
    runs = {
        rule: (k - 1 - tie_break_members(spec) if rule == OPTIMUM else k) for rule in spec.ensemble.member_candidates
    }
    tokens, count = sum(runs[r] * cost[r] for r in runs) * tokens_per_member, sum(runs.values())
    return Work("ensemble members", preset.name, count, tokens, count, tokens, preset.flops.training)


def _distillation_work(
    spec: StudySpec,
    presets: dict[str, PresetPlan],
    budget: int,
    epochs: float,
    weight_decay: float,
    sampling_speed: Callable[[int], DecodeEstimate | None],
) -> list[Work]:
    """Sampling by each teacher and the students trained on its text (one per weight decay candidate)."""
    distill = spec.distillation
    name = spec.distillation_preset
    preset = presets.get(name)
    if preset is None:
        raise InputError(f"the distillation preset {name} is not among the study's presets {spec.presets}")
    teachers = {"ensemble": spec.ensemble.k} | ({"self": 1} if distill.self_distillation else {})
    synthetic = distill.synthetic_tokens or 2 * budget
    students = len(distill.student_weight_decays(weight_decay))
    fraction = distill.synthetic_fraction
    # The mixing sampler passes over the real data `epochs` times, `fraction` of every batch synthetic.
    student_tokens = epochs * (budget / (1 - fraction) if fraction < 1 else synthetic)
    forward = preset.flops.forward
    work = []
    for teacher, members in teachers.items():
        speed = sampling_speed(members)
        work.append(
            Work(f"sampling ({teacher} teacher)", name, 1, synthetic, 1, synthetic, members * forward, True, speed)
        )
        work.append(
            Work(
                f"students ({teacher} teacher)",
                name,
                students,
                students * student_tokens,
                students,
                students * student_tokens,
                preset.flops.training,
                lead_only=True,
            )
        )
    if distill.token_level:
        k = spec.ensemble.k
        tokens = students * epochs * budget
        # Each real token also runs the K-member teacher forward.
        work.append(
            Work(
                "students (token-level)",
                name,
                students,
                tokens,
                students,
                tokens,
                preset.flops.training + k * forward,
                lead_only=True,
            )
        )
    return work


def plan_run(run: dict[str, Any], settings: RunSettings, device_bytes: float, members: int = 1) -> RecipePlan:
    """A plain run recipe: `members` trainings (seeds) of its model for `num_train_epochs` x `token_budget`."""
    name, config = model_config(run, None, settings)
    plan = plan_model(name, config, settings, device_bytes)
    budget = _setting(run, "token_budget", DataArguments)
    if budget is None:
        raise InputError("the recipe sets no `token_budget`: add it to plan its cost")
    tokens = members * float(_setting(run, "num_train_epochs", RegularizedTrainingArguments)) * int(budget)
    work = Work(
        "training" if members == 1 else f"{members} members",
        name,
        members,
        tokens,
        members,
        tokens,
        plan.flops.training,
    )
    return RecipePlan(presets={name: plan}, work=(work,))


def fits_message(plans: dict[str, PresetPlan], device_bytes: float) -> str | None:
    """A sentence naming the presets that fit no micro-batch, or None when all fit."""
    misfits = [name for name, plan in plans.items() if not plan.fits]
    if not misfits:
        return None
    return (
        f"{', '.join(misfits)} do(es) not fit {device_bytes / GIB:g} GiB even one sequence per step with gradient "
        "checkpointing: use a larger device, a shorter seq_len, or shard the model (FSDP)"
    )
