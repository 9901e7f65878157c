"""The cost of "Show the differences": the app's word diff against difflib, by text length.

    python3 bench/diff_cost.py [--words 250 1000 5000] [--difflib-max-words 1000] [--rounds 3]

Each size compares two pairs of texts made of English-like words with punctuation: two
unrelated texts (on different topics: they share only common words, spaces and punctuation,
the case whose cost grew with the cube of the length under difflib) and a near copy (one word
in fifty changed). The last row is the longest text the view compares
(``labeler.render.MAX_DIFF_CHARS``). Times are the best of ``--rounds`` of
``labeler.render.word_diff`` (tokenizing and run merging included) and of the
``difflib.SequenceMatcher(autojunk=False)`` opcodes on the same tokens, as the app used before;
difflib is skipped above ``--difflib-max-words`` (at 5,000 words it would take hours).
"""

from __future__ import annotations

import argparse
import difflib
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labeler.render import _TOKEN, MAX_DIFF_CHARS, word_diff  # noqa: E402

_SYLLABLES = ["ta", "ri", "mo", "en", "sa", "lo", "ku", "ve", "di", "an", "or", "pe", "th", "st"]
_PUNCT = [".", ",", ";", ":", "!", "?"]


def vocabulary(size: int = 3000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4)))
            for _ in range(size)]


_COMMON = ["the", "a", "of", "and", "to", "is", "in", "it", "that", "for"]


def text(words: int, seed: int, vocab: list[str]) -> str:
    """``words`` words like prose on one topic: a third are common words shared by every
    text, the rest Zipf-distributed words of the topic (``seed``), with punctuation and
    paragraphs."""
    rng = random.Random(seed)
    topic = rng.sample(vocab, len(vocab) // 3)
    weights = [1 / (rank + 1) for rank in range(len(topic))]
    out = []
    for word in rng.choices(topic, weights, k=words):
        word = rng.choice(_COMMON) if rng.random() < 0.33 else word
        out.append(word + (rng.choice(_PUNCT) if rng.random() < 0.12 else "")
                   + ("\n\n" if rng.random() < 0.02 else " "))
    return "".join(out)


def punctuated(words: int, seed: int) -> str:
    """Words from a small vocabulary of their own, each followed by punctuation: two such
    texts share only spaces and punctuation marks, each repeated hundreds of times."""
    rng = random.Random(seed)
    own = [f"{letter}{seed}" for letter in "abcdefghij"]
    return " ".join(rng.choice(own) + rng.choice(_PUNCT) for _ in range(words))


def near_copy(source: str, seed: int, vocab: list[str]) -> str:
    rng = random.Random(seed)
    words = source.split(" ")
    for n in range(0, len(words), 50):
        words[n] = rng.choice(vocab)
    return " ".join(words)


def best_time(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def difflib_opcodes(a: str, b: str):
    ta, tb = _TOKEN.findall(a), _TOKEN.findall(b)
    return difflib.SequenceMatcher(None, ta, tb, autojunk=False).get_opcodes()


def fit(text: str, chars: int) -> str:
    """``text`` cut at its last space within ``chars`` characters."""
    return text if len(text) <= chars else text[:text.rindex(" ", 0, chars)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=int, nargs="+", default=[250, 1000, 5000])
    parser.add_argument("--difflib-max-words", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    vocab = vocabulary()
    print(f"{'pair':<12} {'words':>7} {'chars':>8} {'word_diff':>11} {'difflib':>11} "
          f"{'difflib / word_diff':>20}")
    for words in [*args.words, None]:  # None: the longest text the view compares
        n = words or MAX_DIFF_CHARS // 3
        pairs = {"unrelated": (text(n, 1, vocab), text(n, 2, vocab)),
                 "punctuated": (punctuated(n, 1), punctuated(n, 2))}
        pairs["near copy"] = (pairs["unrelated"][0], near_copy(pairs["unrelated"][0], 3, vocab))
        for name, (x, y) in pairs.items():
            if words is None:
                x, y = fit(x, MAX_DIFF_CHARS), fit(y, MAX_DIFF_CHARS)
            count = len(x.split())
            ours = best_time(lambda: word_diff(x, y), args.rounds)
            if count <= args.difflib_max_words:
                theirs = best_time(lambda: difflib_opcodes(x, y), 1)
                cells = f"{theirs * 1000:>9.1f}ms {theirs / ours:>19.0f}x"
            else:
                cells = f"{'skipped':>11} {'—':>20}"
            print(f"{name:<12} {count:>7,} {len(x):>8,} {ours * 1000:>9.1f}ms {cells}",
                  flush=True)


if __name__ == "__main__":
    main()
