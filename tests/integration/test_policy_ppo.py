"""A PPO smoke run on a tiny model with a synthetic reward: reward rises, KL stays bounded."""

from reward.metrics import read_metrics
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
