"""Run arguments: the model preset and `RegularizedTrainingArguments`, the paper's optimisation defaults."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from hf_infcompute.errors import InputError
from hf_infcompute.method import RECIPES, STANDARD_WEIGHT_DECAY
from hf_infcompute.planning import gradient_accumulation
from hf_infcompute.planning.memory import DEFAULT_LOSS_CHUNK_TOKENS
from hf_infcompute.workers import cpu_share

# Data-loading processes per GPU by default: collating 64 x 4,096-token batches off the step's critical path needs
# few; more only take cores from the other processes on the machine.
MAX_DEFAULT_DATALOADER_WORKERS = 4


def default_dataloader_workers(on_gpu: bool) -> int:
    """Data-loading worker processes for this training process: on a GPU, the cores of its share of the machine (the
    launch's processes per node, `LOCAL_WORLD_SIZE`) but the one the training loop runs on, at most
    MAX_DEFAULT_DATALOADER_WORKERS; on the CPU none, as every core computes."""
    cores = cpu_share(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return min(MAX_DEFAULT_DATALOADER_WORKERS, cores - 1) if on_gpu else 0


WEIGHT_DECAY_MASKS = ("levanter", "matrices")
DATA_ORDERS = ("reshuffle", "fixed")


@dataclass
class ModelArguments:
    """Which model to train: a fresh one of a size preset, or an existing checkpoint to continue pre-training."""

    preset: str = field(default="tiny-1m", metadata={"help": "Size preset (see `hf_infcompute.models.PRESETS`)."})
    base_model: str | None = field(
        default=None,
        metadata={"help": "Continue pre-training this causal LM (path or hub id) instead of a fresh preset model."},
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank for continued pre-training (0: train all weights)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "Attention kernel: 'sdpa' or 'eager'."})

    def __post_init__(self) -> None:
        if self.lora_r < 0:
            raise InputError(f"`lora_r` must be >= 0 (0 trains all weights), got {self.lora_r}")
        if self.lora_r and not self.base_model:
            raise InputError("LoRA adapts an existing model: set `base_model` (or lora_r=0 to train from scratch)")

    @property
    def name(self) -> str:
        """The model's name in records: the base checkpoint, or the preset."""
        return self.base_model or self.preset


def bf16_available() -> bool:
    """True where bf16 compute is native: a CUDA GPU with bf16, or a CPU with AVX512-BF16/AMX."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


@dataclass
class RegularizedTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the paper's defaults: AdamW (beta2 0.95), cosine schedule with 1% warmup, grad clip 1.0.

    The knobs of the study are `learning_rate`, `num_train_epochs` (E passes over the D tokens) and `weight_decay`
    (decoupled, as in `torch.optim.AdamW`). `seed` sets the initial weights and `data_seed` the order of sequences in
    each epoch (defaults to `seed`, as in the paper).
    """

    recipe: str = field(
        default="regularized",
        metadata={"help": "'standard' (weight decay fixed at 0.1) or 'regularized' (weight decay is tuned too)."},
    )
    precision: str = field(
        default="auto", metadata={"help": "'auto' (bf16 where the hardware has it), 'bf16' or 'fp32'."}
    )
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs E over the D training tokens."})
    weight_decay: float = field(default=STANDARD_WEIGHT_DECAY, metadata={"help": "Decoupled AdamW weight decay."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule (cosine to 0)."})
    warmup_steps: float = field(default=0.01, metadata={"help": "Warmup: a fraction of all steps if below 1."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient-norm clipping."})
    weight_decay_mask: str = field(
        default="levanter",
        metadata={
            "help": "Which parameters weight decay applies to. 'levanter' (the paper's runs): all but the input "
            "embedding, norm gains and biases (the untied output head is decayed). 'matrices': every matrix, input "
            "embedding included."
        },
    )
    data_order: str = field(
        default="reshuffle",
        metadata={
            "help": "'reshuffle': a fresh seeded order of the training sequences each epoch (default). 'fixed': one "
            "seeded order repeated every epoch, as Levanter runs the paper's experiments (marin issue 2869); "
            "reshuffling is at least as good."
        },
    )
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2."})
    per_device_train_batch_size: int = field(
        default=16, metadata={"help": "Sequences per device per forward pass (the micro-batch)."}
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Sequences per optimizer step over all processes; gradient_accumulation_steps is then derived "
            "as global / (per_device_train_batch_size x world size). None: set by those two keys instead."
        },
    )
    auto_micro_batch: bool = field(
        default=False,
        metadata={
            "help": "On a GPU, replace per_device_train_batch_size by the largest micro-batch that fits the device's "
            "free memory (the memory model of `hf-infcompute plan`) and divides the device's share of "
            "global_batch_size (required). Elsewhere per_device_train_batch_size is kept."
        },
    )
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Sequences per device in evaluation."})
    seed: int = field(default=0, metadata={"help": "Seed of the initial weights."})
    logging_steps: float = field(default=10, metadata={"help": "Log every this many steps."})
    save_steps: float = field(default=0.25, metadata={"help": "Checkpoint every this many steps (a fraction if < 1)."})
    save_total_limit: int | None = field(default=1, metadata={"help": "Checkpoints kept on disk."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the packed `length` column."})
    loss_implementation: str = field(
        default="auto",
        metadata={
            "help": "How the LM head's loss is computed: 'chunked' (head and cross-entropy over `loss_chunk_tokens` "
            "tokens at a time, never all logits at once), 'full' (all logits, as transformers does), 'liger' "
            "(Liger's fused linear cross-entropy; needs liger-kernel and a GPU) or 'auto' (chunked when a "
            "micro-batch's fp32 logits exceed 1 GiB, where chunks save memory; full below, where it measured "
            "faster). Results agree to float noise."
        },
    )
    loss_chunk_tokens: int = field(
        default=DEFAULT_LOSS_CHUNK_TOKENS,
        metadata={"help": "Tokens per chunk of the chunked loss (its memory: chunk x vocabulary logits)."},
    )
    dataloader_num_workers: int | None = field(
        default=None,
        metadata={
            "help": "Processes that collate batches ahead of the training step. None: on a GPU, the cores of this "
            "process's share of the machine (its launch's processes per node) but one, at most "
            f"{MAX_DEFAULT_DATALOADER_WORKERS}; on the CPU 0 (the step uses every core)."
        },
    )

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise InputError(f"unknown recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}")
        for name, lowest in (("learning_rate", 0.0), ("num_train_epochs", 0.0)):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= lowest:
                raise InputError(f"`{name}` must be a positive finite number, got {value!r}")
        for name in ("seed", "data_seed"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 2**32:
                raise InputError(f"`{name}` must be an integer from 0 to 2**32 - 1 (numpy's seeds), got {value!r}")
        if not math.isfinite(self.weight_decay) or self.weight_decay < 0:
            raise InputError(f"`weight_decay` must be a non-negative finite number, got {self.weight_decay!r}")
        if self.recipe == "standard" and self.weight_decay != STANDARD_WEIGHT_DECAY:
            raise InputError(
                f"the standard recipe fixes weight_decay at {STANDARD_WEIGHT_DECAY} (got {self.weight_decay}); "
                "use recipe=regularized to tune weight decay"
            )
        if self.push_to_hub:
            raise InputError(
                "`push_to_hub` is not a run setting here: the Trainer would create one Hub repository per run (each "
                "sweep point), named after its run folder. Remove it from the recipe and upload the model you choose "
                "with `hf-infcompute push OUTPUT/runs/<run_id>/model REPO_ID` (a study: `hf-infcompute push OUTPUT "
                "REPO_ID`)"
            )
        if self.data_seed is None:
            self.data_seed = self.seed
        if self.weight_decay_mask not in WEIGHT_DECAY_MASKS:
            raise InputError(
                f"`weight_decay_mask` must be one of {list(WEIGHT_DECAY_MASKS)}, got {self.weight_decay_mask!r}"
            )
        if self.data_order not in DATA_ORDERS:
            raise InputError(f"`data_order` must be one of {list(DATA_ORDERS)}, got {self.data_order!r}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise InputError(f"`precision` must be 'auto', 'bf16' or 'fp32', got {self.precision!r}")
        self.bf16 = self.precision == "bf16" or (self.precision == "auto" and bf16_available())
        if not torch.cuda.is_available():
            # Trainer runs bf16, and data parallelism over gloo, without a GPU only when told it is on the CPU.
            self.use_cpu = True
        if self.dataloader_num_workers is None:
            self.dataloader_num_workers = default_dataloader_workers(on_gpu=not self.use_cpu)
        super().__post_init__()
        if self.auto_micro_batch and self.global_batch_size is None:
            raise InputError("`auto_micro_batch` keeps the global batch: set `global_batch_size` too")
        if self.global_batch_size is not None:
            self._derive_accumulation()

    def set_micro_batch(self, micro_batch: int) -> None:
        """Use `micro_batch` sequences per device, the accumulation keeping `global_batch_size`."""
        self.per_device_train_batch_size = micro_batch
        self.gradient_accumulation_steps = 1
        self._derive_accumulation()

    def _derive_accumulation(self) -> None:
        """Accumulation steps keeping `global_batch_size` (the paper: 64 sequences) on any number of processes."""
        steps = gradient_accumulation(self.global_batch_size, self.per_device_train_batch_size, self.world_size)
        if self.gradient_accumulation_steps not in (1, steps):
            raise InputError(
                f"gradient_accumulation_steps={self.gradient_accumulation_steps} contradicts global_batch_size="
                f"{self.global_batch_size} (which needs {steps} with {self.per_device_train_batch_size} sequences per "
                f"device on {self.world_size} process(es)); set only one of them"
            )
        self.gradient_accumulation_steps = steps

    @property
    def n_gpu(self) -> int:
        """At most one GPU per process: without a launcher, `Trainer` would wrap the model in `nn.DataParallel` over
        every visible GPU, multiplying the batch the record states. One worker per GPU: `accelerate launch`."""
        return min(super().n_gpu, 1)
