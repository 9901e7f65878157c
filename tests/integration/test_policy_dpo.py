"""The DPO/IPO recipe on tiny random Llamas: its loss equals TRL's DPOTrainer on the same
tensors, ZeRO-3 on 2 CPU ranks matches one process, a middle checkpoint resumes exactly, LoRA
saves a plain model, held-out reward accuracy rises, and the app's database trains as for
REBEL."""

import json
import math

import pytest
import torch

from tests.integration.test_policy_rebel import WORDS, losses, scored_pairs_file
from training.metrics import read_metrics


def dpo_config(output, model, **overrides):
    from policy.dpo import DPOConfig

    base = dict(output=str(output), model=model, learning_rate=1e-3, beta=0.5, epochs=1,
                per_device_batch_size=4, warmup_ratio=0.0, lr_schedule="constant",
                log_every=1, eval_fraction=0.25, save_every=1000)
    return DPOConfig(**{**base, **overrides})


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_loss_and_metrics_equal_trls_dpo_trainer_on_the_same_tensors(tiny_model_dir, loss_type,
                                                                      tmp_path):
    """TRL's DPOTrainer computes its loss and reward metrics from the same model, the same
    padded pairs and the same precomputed reference log-probs."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig as TRLConfig
    from trl import DPOTrainer

    from policy.dpo import DPOConfig, batch_loss, batch_stats, stats_to_metrics
    from policy.pair_batches import EncodedScoredPair, collate
    from training.models import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir, padding_side="right")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    trainer = DPOTrainer(
        model=model, processing_class=tokenizer,
        args=TRLConfig(output_dir=str(tmp_path / "trl"), loss_type=[loss_type], beta=0.3,
                       report_to=[], use_cpu=True, bf16=False, save_strategy="no"),
        train_dataset=Dataset.from_dict({"prompt": ["hi"], "chosen": ["a"], "rejected": ["b"]}))
    trainer.precompute_ref_logps = True  # read the reference log-probs from the batch
    g = torch.Generator().manual_seed(1)

    def ids(n):
        return torch.randint(10, 1000, (n,), generator=g).tolist()

    eos = tokenizer.eos_token_id
    pairs = [EncodedScoredPair(ids(p), ids(c) + [eos], ids(r) + [eos], 1.0, 0.0, "g")
             for p, c, r in ((5, 3, 7), (2, 6, 1), (4, 4, 4), (3, 9, 2))]
    ref = torch.randn(4, 2, generator=g) - 30  # far from the policy's: the loss is large
    batch = collate(pairs, ref, tokenizer.pad_token_id)
    inputs = {"input_ids": batch.tokens.input_ids, "attention_mask": batch.tokens.attention_mask,
              "completion_mask": batch.tokens.response_mask,
              "ref_chosen_logps": batch.ref_logp_chosen,
              "ref_rejected_logps": batch.ref_logp_rejected}
    model.eval()
    with torch.no_grad():
        expected = trainer._compute_loss(trainer.model, inputs, return_outputs=False)
        loss, logp_chosen, logp_rejected = batch_loss(
            model, batch, DPOConfig(output=str(tmp_path), loss_type=loss_type, beta=0.3))
    assert expected.item() > 1.0
    assert loss.mean().item() == pytest.approx(expected.item(), rel=1e-6)
    ours = stats_to_metrics(batch_stats(loss, logp_chosen, logp_rejected, batch, 0.3), "eval")
    theirs = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
    for mine, trl_key in (("reward_margin", "rewards/margins"),
                          ("reward_accuracy", "rewards/accuracies"),
                          ("reward_chosen", "rewards/chosen"),
                          ("reward_rejected", "rewards/rejected")):
        assert ours[f"eval/{mine}"] == pytest.approx(theirs[trl_key], rel=1e-5, abs=1e-6), mine


def good_bad_pairs_file(path, n, start=0):
    """Chosen responses use the first half of WORDS, rejected ones the second half."""
    good, bad = WORDS[:15], WORDS[15:30]
    rows = [{"prompt": [{"role": "user", "content": f"Question {i}"}],
             "chosen": [{"role": "assistant",
                         "content": " ".join(good[(i + j) % 15] for j in range(3 + i % 3))}],
             "rejected": [{"role": "assistant",
                           "content": " ".join(bad[(2 * i + j) % 15] for j in range(3 + i % 4))}]}
            for i in range(start, start + n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_held_out_reward_accuracy_and_margin_rise(tiny_model_dir, tmp_path):
    from data.scored_pairs import pairs_from_file
    from policy.dpo import train_dpo

    pairs = pairs_from_file(good_bad_pairs_file(tmp_path / "train.jsonl", 24))
    held = pairs_from_file(good_bad_pairs_file(tmp_path / "held.jsonl", 8, start=500))
    summary = train_dpo(dpo_config(tmp_path / "out", tiny_model_dir, epochs=3,
                                   per_device_batch_size=8), pairs=pairs, eval_pairs=held,
                        progress=False)
    assert (summary.train_pairs, summary.eval_pairs, summary.steps) == (24, 8, 9)
    metrics = read_metrics(tmp_path / "out" / "metrics.jsonl")
    train = [m for m in metrics if "train/loss" in m]
    # Step 1 runs π_θ = π_ref (dropout off): every log-ratio is 0 and the loss is log 2.
    assert train[0]["train/loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert abs(train[0]["train/reward_margin"]) < 1e-5 and abs(train[0]["train/kl"]) < 1e-5
    assert train[-1]["train/loss"] < train[0]["train/loss"] - 0.05
    evals = [m for m in metrics if "eval/loss" in m]
    assert len(evals) == 3
    assert evals[-1]["eval/reward_accuracy"] > 0.75 and evals[-1]["eval/reward_margin"] > 0
    assert evals[-1]["eval/loss"] < math.log(2) and evals[-1]["eval/kl"] != 0
    assert summary.eval_metrics == {k: v for k, v in evals[-1].items() if k != "step"}


def test_resume_continues_exactly_from_a_middle_checkpoint(tiny_model_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file

    from data.scored_pairs import pairs_from_file
    from policy.dpo import train_dpo

    pairs = pairs_from_file(scored_pairs_file(tmp_path / "pairs.jsonl", 12))
    settings = dict(max_steps=4, per_device_batch_size=2, eval_fraction=0.0, save_every=2,
                    keep_checkpoints=2, lr_schedule="cosine", warmup_ratio=0.25)
    train_dpo(dpo_config(tmp_path / "whole", tiny_model_dir, **settings), pairs=pairs,
              progress=False)
    out = tmp_path / "resumed"
    train_dpo(dpo_config(out, tiny_model_dir, **settings), pairs=pairs, progress=False)
    shutil.rmtree(out / "checkpoints" / "step-0000004")
    summary = train_dpo(dpo_config(out, tiny_model_dir, **settings), pairs=pairs,
                        progress=False)
    assert summary.resumed_from_step == 2
    assert losses(out) == pytest.approx(losses(tmp_path / "whole"), abs=1e-6)
    whole = load_file(str(tmp_path / "whole" / "model.safetensors"))
    resumed = load_file(str(out / "model.safetensors"))
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="made with other data or settings"):
        train_dpo(dpo_config(out, tiny_model_dir, **{**settings, "beta": 0.2}), pairs=pairs,
                  progress=False)


def test_lora_with_ipo_saves_a_plain_model_that_moved(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from launch.cli import main

    data = scored_pairs_file(tmp_path / "pairs.jsonl", 8)
    out = tmp_path / "lora"
    assert main(["train", "dpo", "--data", data, "--model", tiny_model_dir, "--lr", "1e-2",
                 "--loss", "ipo", "--lora-r", "4", "--max-steps", "2", "--eval-fraction", "0",
                 "--log-every", "1", "--no-progress", "--output", str(out)]) == 0
    saved = AutoModelForCausalLM.from_pretrained(out).state_dict()
    start = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert not any("lora" in k for k in saved) and saved.keys() == start.keys()
    moved = [k for k in saved if not torch.equal(saved[k], start[k])]
    assert any("q_proj" in k for k in moved) and not any("norm" in k for k in moved)
    # IPO at π_θ = π_ref: (0 − 1/(2β))² with β = 0.1.
    assert losses(out)[0] == pytest.approx(25.0, abs=1e-4)


def test_the_apps_database_trains_on_its_rankings(tiny_model_dir, tmp_path, capsys):
    from data import labeling, store
    from data.rankings import Submission
    from launch.cli import main
    from tests.labeling_fixtures import make_labeling_db

    db_file = make_labeling_db(tmp_path / "app.db", n_prompts=4)
    db = store.open_store(db_file)
    ann = labeling.get_user(db, "ann")
    for _ in range(4):
        task = labeling.next_assignment(db, ann.id, labeling.QueuePolicy())
        labeling.submit_assignment(db, task.id, ann.id,
                                   Submission(tuple(task.candidate_ids), (2, 1, 3)))
    assert main(["train", "dpo", "--db", db_file, "--model", tiny_model_dir, "--output",
                 str(tmp_path / "o"), "--eval-fraction", "0.25", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "3 training pairs, 1 held out" in out and "reward accuracy" in out
