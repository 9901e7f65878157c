"""Rankings: validating an annotator's submission and expanding it into pairwise comparisons.

Pure functions; ``data/store.py`` persists their results. Ranks are 1 = best; equal ranks are
ties. A submission is one of:
- a full ranking: every shown candidate has a rank in 1..k;
- "all candidates are bad": ranks optional (if given they must be complete);
- a skip: no ranks, no pairs.
Any of the first two may carry a demonstration (the annotator's own answer), which ranks above
every candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from data.errors import ConfigError


MAX_TEXT_CHARS = 20_000
"""The longest rationale, and the longest written answer, an annotator may store (about 3,000
words each); drafts and the app's routes refuse longer ones with the same limit."""


class RankingError(ConfigError):
    """A submission that cannot be stored, with a message meant for the annotator."""


@dataclass(frozen=True)
class Submission:
    candidate_ids: tuple[int, ...]
    """Candidates in the order they were shown."""
    ranks: tuple[int, ...] | None
    """Aligned with candidate_ids; None for skips and unranked all-bad submissions."""
    all_bad: bool = False
    skipped: bool = False
    rationale: str = ""
    demonstration: str = ""
    """The annotator's own answer, stored as a candidate ranked above all others."""

    @property
    def has_tie(self) -> bool:
        return self.ranks is not None and len(set(self.ranks)) < len(self.ranks)


@dataclass(frozen=True)
class RankedPair:
    """Two candidates of one ranking by their ids, chosen ranked above rejected: the pairs the
    vote log's ``comparisons`` rows store (``ranking_to_pairs``), before any text is read."""

    chosen: int
    rejected: int
    tie: bool = False
    """Equal ranks: the order of chosen/rejected is the shown order and carries no preference."""


def validate_submission(
    candidate_ids: Sequence[int],
    ranks: Sequence[int | None] | None,
    *,
    all_bad: bool = False,
    skipped: bool = False,
    rationale: str = "",
    demonstration: str = "",
    max_text_chars: int = MAX_TEXT_CHARS,
) -> Submission:
    """Checks a submission and returns it normalised; raises RankingError when it is invalid."""
    ids = tuple(int(c) for c in candidate_ids)
    if not ids:
        raise RankingError("there are no candidates to rank")
    if len(set(ids)) != len(ids):
        raise RankingError("a candidate appears twice in the shown order")
    rationale = (rationale or "").strip()
    demonstration = (demonstration or "").strip()
    for name, text in (("rationale", rationale), ("your answer", demonstration)):
        if len(text) > max_text_chars:
            raise RankingError(f"{name} is too long ({len(text)} characters; at most "
                               f"{max_text_chars})")
    if skipped:
        if all_bad:
            raise RankingError("a skip cannot also mark the candidates as bad")
        return Submission(ids, None, skipped=True, rationale=rationale)

    given = None if ranks is None else [r for r in ranks]
    if given is not None and all(r is None for r in given):
        given = None
    if given is None:
        if not all_bad:
            raise RankingError("rank every candidate, or mark all candidates as bad, or skip")
        return Submission(ids, None, all_bad=True, rationale=rationale,
                          demonstration=demonstration)
    if len(given) != len(ids):
        raise RankingError(f"expected {len(ids)} ranks, got {len(given)}")
    missing = [i for i, r in enumerate(given) if r is None]
    if missing:
        letters = ", ".join(candidate_letter(i) for i in missing)
        raise RankingError(f"rank every candidate: {letters} has no rank")
    k = len(ids)
    # Text ranks are ASCII digits: int() would also read "１" or "٢" as ranks.
    if any(isinstance(r, str) and not (r.isascii() and r.isdigit()) for r in given):
        raise RankingError("ranks must be whole numbers")
    try:
        clean = tuple(int(r) for r in given)
    except (TypeError, ValueError):
        raise RankingError("ranks must be whole numbers") from None
    if any(not 1 <= r <= k for r in clean):
        raise RankingError(f"ranks must be between 1 and {k}")
    return Submission(ids, clean, all_bad=all_bad, rationale=rationale,
                      demonstration=demonstration)


def candidate_letter(index: int) -> str:
    """A, B, C, ... as candidates are labelled in the app."""
    return chr(ord("A") + index)


def ranking_to_pairs(
    candidate_ids: Sequence[int], ranks: Sequence[int] | None, demonstration_id: int | None = None
) -> list[RankedPair]:
    """Pairwise comparisons implied by a ranking.

    k fully ranked candidates give k(k-1)/2 pairs in shown order, ties marked; a demonstration
    adds k pairs in which it is chosen. No ranks (skip, unranked all-bad) gives only the
    demonstration's pairs.
    """
    pairs: list[RankedPair] = []
    if demonstration_id is not None:
        pairs.extend(RankedPair(demonstration_id, c) for c in candidate_ids)
    if ranks is None:
        return pairs
    for i in range(len(candidate_ids)):
        for j in range(i + 1, len(candidate_ids)):
            a, b = candidate_ids[i], candidate_ids[j]
            if ranks[i] == ranks[j]:
                pairs.append(RankedPair(a, b, tie=True))
            elif ranks[i] < ranks[j]:
                pairs.append(RankedPair(a, b))
            else:
                pairs.append(RankedPair(b, a))
    return pairs
