"""Teachers for synthetic generation: a saved model folder, a hub id or a model in memory, single or ensemble.

A `LogitEnsembleForCausalLM` folder (config `model_type: logit_ensemble`) loads through `AutoModelForCausalLM` once
`hf_infcompute.ensemble` has registered the class, so it samples from the mean of its members' logits like any
causal LM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from hf_infcompute.data.cache import build_once
from hf_infcompute.errors import InputError
from hf_infcompute.readers import check_model_folder
from hf_infcompute.records import RUN_RECORD_FILE
from hf_infcompute.training.checkpoints import model_folder_problem

ENSEMBLE_MODEL_TYPE = "logit_ensemble"
# Written beside every model that `pretrain` saves; it holds the sequence length the model was trained on.
TOKENIZER_DIRNAME = "tokenizer"


@dataclass(frozen=True)
class TeacherSpec:
    """What a teacher is, known before its weights are loaded."""

    name: str  # absolute folder, hub id, or the in-memory model's `name_or_path`
    model_type: str | None
    is_local: bool
    eos_token_id: int | None = None

    @property
    def is_ensemble(self) -> bool:
        return self.model_type == ENSEMBLE_MODEL_TYPE


def _local_path(teacher: str | Path) -> Path | None:
    path = Path(teacher).expanduser()
    return path.resolve() if path.exists() else None


def describe_teacher(teacher: str | Path | PreTrainedModel) -> TeacherSpec:
    """Name and model type of a teacher, reading only its `config.json` (local folder or hub)."""
    local = None
    if isinstance(teacher, PreTrainedModel):
        name = teacher.name_or_path or f"<in-memory {type(teacher).__name__}>"
        config = teacher.config.to_dict()
    else:
        local = _local_path(teacher)
        name = str(local) if local is not None else str(teacher)
        if local is not None and not (local / "config.json").is_file():
            raise InputError(f"teacher folder {local} has no config.json: give a folder saved with `save_pretrained`")
        try:
            config, _ = PreTrainedConfig.get_config_dict(name)
        except OSError as error:
            raise InputError(
                f"teacher {teacher!r} not found ({error}); give a model folder saved with `save_pretrained` or a hub id"
            ) from error
    eos = config.get("eos_token_id")
    if isinstance(eos, list):  # several EOS ids: the first is the document separator
        eos = eos[0] if eos else None
    return TeacherSpec(name=name, model_type=config.get("model_type"), is_local=local is not None, eos_token_id=eos)


def _register_ensemble() -> None:
    try:
        import hf_infcompute.ensemble  # noqa: F401  (registers LogitEnsembleForCausalLM with the Auto classes)
    except ImportError as error:
        raise InputError(
            f"the teacher is a logit ensemble but `hf_infcompute.ensemble` cannot be imported ({error}); "
            "reinstall hf-infcompute"
        ) from error


def load_teacher_model(spec: TeacherSpec, *, device: str, dtype: str = "auto") -> PreTrainedModel:
    """The teacher on `device` in eval mode; ensembles are loaded through the same Auto class."""
    problem = model_folder_problem(spec.name) if Path(spec.name).is_dir() else None
    if problem:
        raise InputError(
            f"teacher {problem}: give a folder written by `save_pretrained` (a finished run's `model/` folder or an "
            "ensemble's folder), or train the teacher again"
        )
    check_model_folder(spec.name, fix="train the teacher again, or give another teacher")
    if spec.is_ensemble:
        _register_ensemble()
    model = AutoModelForCausalLM.from_pretrained(spec.name, dtype=dtype)
    return model.to(device).eval()


def export_members(spec: TeacherSpec, target: Path) -> list[str]:
    """The members of an ensemble teacher as standalone model folders under `target` (written once), each with the
    ensemble's tokenizer, for engines that load one model per folder (vLLM's `pooled` mode)."""
    num_members = len(PreTrainedConfig.get_config_dict(spec.name)[0]["member_configs"])
    folders = [target / f"member-{index}" for index in range(num_members)]
    if not all(folder.is_dir() for folder in folders):
        _register_ensemble()
        ensemble = AutoModelForCausalLM.from_pretrained(spec.name)
        tokenizer = load_tokenizer(spec.name)
        for folder, member in zip(folders, ensemble.members):

            def save(tmp: Path, member: PreTrainedModel = member) -> None:
                member.save_pretrained(tmp)
                if tokenizer is not None:
                    tokenizer.save_pretrained(tmp)

            build_once(folder, save)
    return [str(folder) for folder in folders]


def ensemble_size(model: PreTrainedModel) -> int | None:
    """K for a logit ensemble (its members live in `model.members`), None for a single model."""
    if model.config.model_type != ENSEMBLE_MODEL_TYPE:
        return None
    members = getattr(model, "members", None)
    return len(members) if members is not None else getattr(model.config, "num_members", None)


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved with a model (or in a generation folder's `tokenizer/`), None if there is none."""
    local = _local_path(name_or_path)
    if local is not None and (local / TOKENIZER_DIRNAME).is_dir():
        local = local / TOKENIZER_DIRNAME
    try:
        return AutoTokenizer.from_pretrained(str(local) if local is not None else str(name_or_path))
    except (OSError, ValueError, TypeError):
        return None


def trained_seq_len(spec: TeacherSpec) -> int | None:
    """The sequence length a teacher was trained on, from the run record `pretrain` saves beside the model."""
    if not spec.is_local:
        return None
    record = Path(spec.name) / RUN_RECORD_FILE
    if not record.is_file():
        return None
    seq_len = json.loads(record.read_text()).get("seq_len")
    return int(seq_len) if seq_len else None


def check_same_tokenizer(teacher_dir: str | Path, student_tokenizer: PreTrainedTokenizerBase | str | Path) -> None:
    """Raise `InputError` naming the difference unless the student's tokenizer equals the teacher's.

    `teacher_dir` is a teacher model folder or a generation output folder (which keeps the teacher's tokenizer in
    `tokenizer/`). Token ids must mean the same text for the student to learn from the teacher's samples.
    """
    teacher = load_tokenizer(teacher_dir)
    if teacher is None:
        raise InputError(f"no tokenizer found in {teacher_dir}: save the teacher's tokenizer beside its model")
    if not isinstance(student_tokenizer, PreTrainedTokenizerBase):
        loaded = load_tokenizer(student_tokenizer)
        if loaded is None:
            raise InputError(f"cannot load the student tokenizer {student_tokenizer!r}")
        student_tokenizer = loaded
    differences = tokenizer_differences(teacher, student_tokenizer)
    if differences:
        raise InputError(
            f"the student's tokenizer differs from the teacher's ({teacher_dir}): {'; '.join(differences)}. "
            f"Train the student with the teacher's tokenizer (tokenizer={teacher_dir})"
        )


def tokenizer_differences(teacher: PreTrainedTokenizerBase, student: PreTrainedTokenizerBase) -> list[str]:
    """Human-readable differences (teacher vs student) in vocabulary and special tokens; empty when equal."""
    differences = []
    teacher_vocab, student_vocab = teacher.get_vocab(), student.get_vocab()
    if len(teacher_vocab) != len(student_vocab):
        differences.append(f"vocabulary size {len(teacher_vocab)} vs {len(student_vocab)}")
    changed = sorted(t for t in teacher_vocab.keys() & student_vocab.keys() if teacher_vocab[t] != student_vocab[t])
    if changed:
        example = changed[0]
        differences.append(
            f"{len(changed)} tokens have other ids, e.g. {example!r}: {teacher_vocab[example]} vs "
            f"{student_vocab[example]}"
        )
    missing = sorted(teacher_vocab.keys() - student_vocab.keys())
    if missing:
        differences.append(f"{len(missing)} teacher tokens are missing from the student's, e.g. {missing[0]!r}")
    for special in ("bos_token_id", "eos_token_id", "pad_token_id"):
        ours, theirs = getattr(teacher, special), getattr(student, special)
        if ours != theirs:
            differences.append(f"{special} {ours} vs {theirs}")
    return differences
