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


def avoid_good_words(prompts, responses):
    """The opposite of ``good_word_share``: pushes a policy off the words the word model's
    greedy decoding starts from, so its greedy text changes within a few steps."""
    return [-r for r in good_word_share(prompts, responses)]
