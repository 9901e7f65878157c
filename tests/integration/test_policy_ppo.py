"""PPO on tiny models with a synthetic reward: reward rises with bounded KL in one process and
on 2 ZeRO-3 CPU ranks, resume is exact, a corrupt checkpoint is one clear error."""

import pytest
import torch

from training.metrics import read_metrics
from tests.integration.test_policy_rebel import good_word_reward, prompts, word_model  # noqa: F401


def test_ppo_raises_a_synthetic_reward_with_bounded_kl(word_model, smol_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    from policy.ppo import PPOConfig, train_ppo

    model_dir, words = word_model
    share = good_word_reward(smol_tokenizer, set(words[: len(words) // 2]))
    config = PPOConfig(output=str(tmp_path / "ppo"), model=model_dir, total_steps=6,
                       rollout_batch_size=12, minibatch_size=6, ppo_epochs=2,
                       max_new_tokens=6, temperature=1.0, learning_rate=3e-4, kl_coef=0.05,
                       missing_eos_penalty=0.0)
    summary = train_ppo(config, reward_fn=lambda _p, texts: [10 * share(t) for t in texts],
                        prompts=prompts(24))
    metrics = read_metrics(tmp_path / "ppo" / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 7))
    rewards = [m["objective/reward"] for m in metrics]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.3, rewards
    kls = [m["objective/kl"] for m in metrics]
    assert abs(kls[0]) < 1e-3  # the first rollout comes from the reference policy itself
    assert max(kls) < 20, kls
    for key in ("policy/entropy", "policy/clipfrac", "policy/approx_kl", "loss/value_loss",
                "response/length"):
        assert key in metrics[-1]
    assert 1 <= metrics[-1]["response/length"] <= 10  # re-tokenized text can differ by a token
    assert "mean reward" in summary.line()
    AutoModelForCausalLM.from_pretrained(tmp_path / "ppo")  # a plain, loadable folder
    assert (tmp_path / "ppo" / "value_head.pt").is_file()


def ppo_command(model_dir, output, *extra):
    return ["train", "ppo", "--reward-fn", "tests.integration.ppo_rewards:good_word_share",
            "--model", model_dir, "--output", str(output), "--rollout-batch", "12",
            "--minibatch", "6", "--ppo-epochs", "2", "--max-new-tokens", "6",
            "--temperature", "1.0", "--lr", "3e-4", "--kl-coef", "0.05",
            "--missing-eos-penalty", "0", "--no-progress", *extra]


def test_zero3_on_two_cpu_ranks_raises_the_reward_and_saves_a_plain_model(word_model, tmp_path):
    """Each rank rolls out 6 of the 12 prompts through ZeRO-3-partitioned weights (generation
    kept in step across ranks); the whole reference on each rank must agree with them."""
    from transformers import AutoModelForCausalLM

    from tests.integration.conftest import zero3_cpu2

    model_dir, _ = word_model
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("".join(f'{{"prompt": "Tell me about thing {i}"}}\n'
                                    for i in range(24)))
    result = zero3_cpu2(*ppo_command(model_dir, tmp_path / "zero3", "--prompts",
                                     str(prompts_file), "--steps", "6"), timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "(2 processes × 6)" in result.stdout and "(2 processes × 3)" in result.stdout
    assert result.stdout.count("policy saved to") == 1

    metrics = read_metrics(tmp_path / "zero3" / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 7))
    assert abs(metrics[0]["objective/kl"]) < 1e-3  # sampled and scored by the same weights
    rewards = [m["objective/reward"] for m in metrics]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.3, rewards
    start = AutoModelForCausalLM.from_pretrained(model_dir)
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "zero3")
    moved = [(a - b).abs().max().item() for a, b in
             zip(start.state_dict().values(), trained.state_dict().values())]
    assert max(moved) > 1e-4
    head = torch.load(tmp_path / "zero3" / "value_head.pt")
    assert set(head) == {"weight", "bias"} and head["weight"].abs().sum() > 0


def test_resume_continues_exactly_from_a_middle_checkpoint(word_model, tmp_path):
    """Checkpoints keep model, optimizer, RNG, KL coefficient and the data position: a run
    resumed at step 2 logs the same steps 3–4 as the uninterrupted run."""
    import shutil

    from policy.ppo import PPOConfig, train_ppo
    from tests.integration.ppo_rewards import good_word_share

    model_dir, _ = word_model
    config = PPOConfig(output=str(tmp_path / "ppo"), model=model_dir, total_steps=4,
                       rollout_batch_size=6, minibatch_size=3, ppo_epochs=2, max_new_tokens=6,
                       temperature=1.0, learning_rate=3e-4, target_kl=0.1, save_every=2,
                       keep_checkpoints=2)
    train_ppo(config, reward_fn=good_word_share, prompts=prompts(9))
    full = read_metrics(tmp_path / "ppo" / "metrics.jsonl")
    checkpoints = tmp_path / "ppo" / "checkpoints"
    assert [p.name for p in sorted(checkpoints.iterdir())] == ["step-0000002", "step-0000004"]
    assert full[2]["objective/kl_coef"] != full[0]["objective/kl_coef"]  # adaptive β moved

    shutil.rmtree(checkpoints / "step-0000004")  # as if stopped after step 2
    summary = train_ppo(config, reward_fn=good_word_share, prompts=prompts(9))
    assert summary.resumed_from_step == 2 and "resumed at step 2" in summary.line()
    resumed = read_metrics(tmp_path / "ppo" / "metrics.jsonl")
    assert [m["step"] for m in resumed] == [1, 2, 3, 4]
    for key in ("objective/reward", "objective/kl", "objective/kl_coef", "loss/policy_loss",
                "response/length"):
        assert [m[key] for m in resumed] == pytest.approx([m[key] for m in full], abs=1e-5), key


def test_resume_from_a_corrupt_checkpoint_is_one_clear_error(word_model, tmp_path):
    from policy.ppo import PPOConfig, train_ppo
    from tests.integration.ppo_rewards import good_word_share

    model_dir, _ = word_model
    config = PPOConfig(output=str(tmp_path / "ppo"), model=model_dir, total_steps=1,
                       rollout_batch_size=2, minibatch_size=2, ppo_epochs=1, max_new_tokens=3)
    train_ppo(config, reward_fn=good_word_share, prompts=prompts(2))
    [checkpoint] = (tmp_path / "ppo" / "checkpoints").iterdir()
    for weights in checkpoint.glob("*.safetensors"):
        weights.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be loaded.*--no-resume"):
        train_ppo(config, reward_fn=good_word_share, prompts=prompts(2))
