"""Rule-based rewards that `rankloop train ppo --reward-fn` imports in the PPO tests."""

from tests.integration.test_policy_rebel import WORDS

GOOD = frozenset(WORDS[: len(WORDS) // 2])


def good_word_share(prompts, responses):
    """10 × the share of a response's words that are "good" words."""
    rewards = []
    for text in responses:
        words = text.split()
        rewards.append(10 * sum(w in GOOD for w in words) / max(len(words), 1))
    return rewards
