"""PPO with vLLM rollouts on CPU: the engine receives the policy's weights after every update,
so at the end it decodes exactly what the saved policy decodes."""

import pytest

from training.metrics import read_metrics
from tests.integration.test_policy_rebel import make_word_model, prompts, word_model  # noqa: F401


@pytest.fixture(scope="module")
def wide_word_model(smol_tokenizer, tmp_path_factory):
    """The word model with 64-wide attention heads: vLLM's CPU attention has no kernel for
    the 16-wide heads of the smaller one."""
    return make_word_model(smol_tokenizer, tmp_path_factory.mktemp("wide-word-llama"),
                           hidden_size=128, num_attention_heads=2, num_key_value_heads=1)


def test_ppo_keeps_a_vllm_engine_in_step_with_the_policy(wide_word_model, tmp_path):
    from data.chat import format_chat
    from policy.ppo import PPOConfig, train_ppo
    from policy.sampling import SamplingConfig, TransformersSampler, VLLMSampler
    from tests.integration.ppo_rewards import avoid_good_words

    model_dir, _ = wide_word_model
    config = PPOConfig(output=str(tmp_path / "ppo"), model=model_dir, total_steps=3,
                       rollout_batch_size=8, minibatch_size=4, ppo_epochs=2, max_new_tokens=6,
                       temperature=1.0, learning_rate=1e-2, backend="vllm")
    engine = VLLMSampler(model_dir, gpu_memory_utilization=0.05, max_model_len=256)
    try:
        train_ppo(config, reward_fn=avoid_good_words, prompts=prompts(16), sampler=engine)
        metrics = read_metrics(tmp_path / "ppo" / "metrics.jsonl")
        assert [m["step"] for m in metrics] == [1, 2, 3], metrics
        kls = [m["objective/kl"] for m in metrics]
        assert abs(kls[0]) < 1e-3, f"the first rollout is not from the reference: KL {kls}"
        # Rollouts after the first came from updated weights: the policy moved off the
        # reference, which a stale engine's samples would show only by chance.
        assert kls[-1] != pytest.approx(0, abs=1e-4), f"the policy never moved: KL {kls}"

        greedy = SamplingConfig(k=1, temperature=0, max_new_tokens=8)
        trained = TransformersSampler(str(tmp_path / "ppo"), batch_size=4)
        texts = [format_chat(trained.tokenizer, m) for m in prompts(4, start=100)]
        start = TransformersSampler(model_dir, batch_size=4).generate(texts, greedy)
        synced = engine.generate(texts, greedy)
        saved = trained.generate(texts, greedy)
        assert synced == saved, "the engine decodes other text than the saved policy: " \
            f"engine {synced}, saved policy {saved}"
        assert saved != start, f"training changed no greedy answer: {saved}"
    finally:
        engine.close()
    # The saved folder is what the next iteration's vLLM engine starts from.
    fresh = VLLMSampler(str(tmp_path / "ppo"), gpu_memory_utilization=0.05, max_model_len=256)
    try:
        restarted = fresh.generate(texts, greedy)
        assert restarted == synced, "an engine started from the saved folder decodes other " \
            f"text than the synced one: {restarted} vs {synced}"
    finally:
        fresh.close()


def test_vllm_rollouts_refuse_several_processes_before_training(word_model, tmp_path):
    """The single-process rule is checked up front, not after the models load."""
    from tests.integration.conftest import zero3_cpu2

    model_dir, _ = word_model
    result = zero3_cpu2(
        "train", "ppo", "--reward-fn", "tests.integration.ppo_rewards:good_word_share",
        "--model", model_dir, "--output", str(tmp_path / "p"), "--backend", "vllm",
        "--steps", "1", timeout=300)
    assert result.returncode != 0
    assert "vLLM rollouts run in one process" in result.stderr
