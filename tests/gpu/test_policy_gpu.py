"""GPU twins of the CPU policy tests (tests/integration/test_policy_rebel.py,
test_policy_dpo.py and test_policy_ppo.py): the same recipes on CUDA in bf16 mixed precision."""

import pytest

from training.metrics import read_metrics
from tests.integration.test_policy_rebel import (  # noqa: F401
    prompts,
    rebel_config,
    scored_pairs_file,
    word_model,
)


@pytest.mark.gpu
def test_rebel_trains_on_cuda_in_bf16(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from policy.rebel import train_rebel

    data = scored_pairs_file(tmp_path / "pairs.jsonl", 16)
    summary = train_rebel(rebel_config(tmp_path / "rebel", tiny_model_dir, data=data,
                                       max_steps=3, per_device_batch_size=4, bf16=True,
                                       eval_fraction=0.25), progress=False)
    losses = [m["train/loss"] for m in read_metrics(tmp_path / "rebel" / "metrics.jsonl")
              if "train/loss" in m]
    assert len(losses) == 3 and all(loss == loss for loss in losses)  # finite, not NaN
    assert summary.tokens_per_second > 0
    AutoModelForCausalLM.from_pretrained(tmp_path / "rebel")


@pytest.mark.gpu
def test_dpo_trains_on_cuda_in_bf16(tiny_model_dir, tmp_path):
    from data.scored_pairs import pairs_from_file
    from policy.dpo import train_dpo
    from tests.integration.test_policy_dpo import dpo_config, good_bad_pairs_file

    pairs = pairs_from_file(good_bad_pairs_file(tmp_path / "train.jsonl", 24))
    held = pairs_from_file(good_bad_pairs_file(tmp_path / "held.jsonl", 8, start=500))
    summary = train_dpo(dpo_config(tmp_path / "dpo", tiny_model_dir, epochs=3,
                                   per_device_batch_size=8, bf16=True),
                        pairs=pairs, eval_pairs=held, progress=False)
    assert summary.eval_metrics["eval/reward_accuracy"] > 0.75
    assert summary.eval_metrics["eval/loss"] == summary.eval_metrics["eval/loss"]  # not NaN


@pytest.mark.gpu
def test_ppo_raises_a_synthetic_reward_on_cuda(word_model, tmp_path):
    from policy.ppo import PPOConfig, train_ppo
    from tests.integration.ppo_rewards import good_word_share

    model_dir, _ = word_model
    config = PPOConfig(output=str(tmp_path / "ppo"), model=model_dir, total_steps=6,
                       rollout_batch_size=12, minibatch_size=6, ppo_epochs=2, max_new_tokens=6,
                       temperature=1.0, learning_rate=3e-4, bf16=True)
    train_ppo(config, reward_fn=good_word_share, prompts=prompts(24))
    rewards = [m["objective/reward"] for m in read_metrics(tmp_path / "ppo" / "metrics.jsonl")]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.3, rewards
