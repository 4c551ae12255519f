"""The package face: a lazy top-level API, and Auto-class registration on plain `import hf_infcompute`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import hf_infcompute


def _python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_every_public_name_resolves():
    missing = [name for name in hf_infcompute.__all__ if getattr(hf_infcompute, name, None) is None]
    assert not missing
    assert set(hf_infcompute.__all__) <= set(dir(hf_infcompute))


def test_import_is_lazy_until_a_name_is_used():
    out = _python(
        """
        import sys
        import hf_infcompute
        before = "hf_infcompute.training.trainer" in sys.modules
        hf_infcompute.RegularizedTrainer
        print(before, "hf_infcompute.training.trainer" in sys.modules)
        """
    )
    assert out == "False True"


def test_plain_import_registers_the_ensemble_with_the_auto_classes(tmp_path: Path):
    """A saved ensemble loads through `AutoModelForCausalLM` in a fresh process that only imported the package."""
    folder = tmp_path / "ensemble"
    _python(
        f"""
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
        from hf_infcompute.ensemble import build_ensemble
        members = []
        for seed in range(2):
            torch.manual_seed(seed)
            config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
            path = {str(tmp_path)!r} + f"/member-{{seed}}"
            LlamaForCausalLM(config).save_pretrained(path)
            members.append(path)
        build_ensemble(members, {str(folder)!r})
        """
    )
    out = _python(
        f"""
        import hf_infcompute
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(folder)!r})
        print(type(model).__module__.split(".")[0], type(model).__name__, len(model.members))
        """
    )
    assert out == "hf_infcompute LogitEnsembleForCausalLM 2"
