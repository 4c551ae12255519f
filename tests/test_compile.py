"""`torch_compile` in `RegularizedTrainer`: compiled by regions, the same losses as eager."""

from __future__ import annotations

import pytest
from accelerate.utils import is_compiled_module

from hf_infcompute.data import prepare_data
from hf_infcompute.training import parse_run_config
from hf_infcompute.training.pretraining import build_trainer


@pytest.mark.filterwarnings("ignore")
def test_compiled_trainer_compiles_by_regions_and_keeps_the_loss(tiny_run, tmp_path):
    losses = {}
    for compiled in (False, True):
        run = parse_run_config({**tiny_run, "token_budget": 2048, "num_train_epochs": 1, "torch_compile": compiled})
        run.training.output_dir = str(tmp_path / str(compiled))
        trainer = build_trainer(run, prepare_data(run.data))
        trainer.train()
        losses[compiled] = trainer.evaluate()["eval_loss"]
    wrapped = trainer.model_wrapped
    # The decoder blocks are compiled one by one (their code serves every later run), the model's forward is not.
    assert not is_compiled_module(wrapped) and all(is_compiled_module(layer) for layer in wrapped.model.layers)
    assert losses[True] == pytest.approx(losses[False], abs=1e-4)
