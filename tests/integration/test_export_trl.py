"""The exported preferences train unchanged in TRL's RewardTrainer and DPOTrainer (two steps
each on a tiny random Llama) and in `rankloop train reward --data <export>`."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import load_dataset

from launch.cli import main
from training.metrics import read_metrics
from tests.unit.test_export import make_export_db


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("trl-export")
    db = make_export_db(root / "votes.db")
    assert main(["export", "--db", db, "--to", str(root / "export"), "--test-fraction",
                 "0.25"]) == 0
    return str(root / "export")


def trl_args(cls, output, **extra):
    return cls(output_dir=str(output), max_steps=2, per_device_train_batch_size=2,
               learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[],
               use_cpu=True, bf16=False, dataloader_num_workers=0, seed=0, **extra)


def logged_losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_trl_reward_trainer_on_the_export(exported, tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    data = load_dataset(exported)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    trainer = RewardTrainer(model=model, args=trl_args(RewardConfig, tmp_path / "rm",
                                                       max_length=256),
                            train_dataset=data["train"], processing_class=tokenizer)
    trainer.train()
    losses = logged_losses(trainer)
    assert trainer.state.global_step == 2 and len(losses) == 2
    assert all(math.isfinite(x) for x in losses)
    assert "margin" in trainer.train_dataset.column_names  # the export's margin reaches the loss


def test_trl_dpo_trainer_on_the_export(exported, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    data = load_dataset(exported)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = DPOTrainer(model=model, args=trl_args(DPOConfig, tmp_path / "dpo", max_length=256),
                         train_dataset=data["train"], processing_class=tokenizer)
    trainer.train()
    losses = logged_losses(trainer)
    assert trainer.state.global_step == 2 and len(losses) == 2
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference at start
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_rankloop_reward_trainer_on_the_export(exported, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "bt"
    assert main(["train", "reward", "--data", f"{exported}/preferences", "--model",
                 tiny_model_dir, "--max-steps", "2", "--batch-size", "4", "--log-every", "1",
                 "--no-progress", "--output", str(out)]) == 0
    assert "reward model saved to" in capsys.readouterr().out
    assert len([m for m in read_metrics(out / "metrics.jsonl") if "train/loss" in m]) == 2
