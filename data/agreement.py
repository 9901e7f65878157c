"""Agreement between annotators, and with gold rankings. Pure Python (no numpy needed).

Input rows are ranked submissions: ``{"item_id", "annotator", "candidate_ids", "ranks"}``
(ranks aligned with candidate_ids, 1 = best, equal = tie). Only the latest version of a vote is
a judgment: a row whose ``superseded_by`` is set (a revision replaced it) is ignored, so a
caller may pass the whole vote log.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from itertools import combinations


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def _rank_map(row: dict) -> dict[int, int]:
    return dict(zip(row["candidate_ids"], row["ranks"]))


def current(rows: Iterable[dict]) -> list[dict]:
    """The rows that are the latest version of their vote."""
    return [row for row in rows if row.get("superseded_by") is None]


def pairwise_agreement(rows: Iterable[dict]) -> dict[tuple[str, str], tuple[int, int]]:
    """For each annotator pair with shared items: (candidate pairs ordered alike, pairs compared).

    Two annotators agree on candidates (a, b) when both prefer a, both prefer b, or both tie.
    """
    by_item: dict[int, dict[str, dict[int, int]]] = defaultdict(dict)
    for row in current(rows):
        by_item[row["item_id"]][row["annotator"]] = _rank_map(row)
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for annotations in by_item.values():
        for first, second in combinations(sorted(annotations), 2):
            ranks_1, ranks_2 = annotations[first], annotations[second]
            shared = sorted(set(ranks_1) & set(ranks_2))
            for a, b in combinations(shared, 2):
                same = _sign(ranks_1[a] - ranks_1[b]) == _sign(ranks_2[a] - ranks_2[b])
                totals[(first, second)][0] += same
                totals[(first, second)][1] += 1
    return {pair: (agree, total) for pair, (agree, total) in totals.items()}


def krippendorff_alpha_ordinal(rows: Iterable[dict]) -> float | None:
    """Krippendorff's alpha with the ordinal metric; units are (item, candidate), values ranks.

    None when it is undefined (fewer than two pairable values, or no variation at all).
    """
    units: dict[tuple[int, int], list[int]] = defaultdict(list)
    for row in current(rows):
        for candidate, rank in zip(row["candidate_ids"], row["ranks"]):
            units[(row["item_id"], candidate)].append(int(rank))
    pairable = [values for values in units.values() if len(values) >= 2]
    if not pairable:
        return None
    # Coincidence matrix: each unit's ordered value pairs from different coders, weighted 1/(m-1).
    coincidence: dict[tuple[int, int], float] = defaultdict(float)
    for values in pairable:
        weight = 1.0 / (len(values) - 1)
        for i, c in enumerate(values):
            for j, k in enumerate(values):
                if i != j:
                    coincidence[(c, k)] += weight
    marginals: dict[int, float] = defaultdict(float)
    for (c, _), count in coincidence.items():
        marginals[c] += count
    n = sum(marginals.values())
    levels = sorted(marginals)
    position = {value: i for i, value in enumerate(levels)}

    def delta2(c: int, k: int) -> float:
        lo, hi = sorted((position[c], position[k]))
        between = sum(marginals[levels[g]] for g in range(lo, hi + 1))
        return (between - (marginals[c] + marginals[k]) / 2) ** 2

    observed = sum(count * delta2(c, k) for (c, k), count in coincidence.items())
    expected = sum(marginals[c] * marginals[k] * delta2(c, k) for c in levels for k in levels)
    if expected == 0:
        return None
    return 1.0 - (n - 1) * observed / expected


def gold_accuracy(rows: Iterable[dict]) -> dict[str, tuple[int, int]]:
    """Per annotator on gold items: (strict gold pairs ordered as gold orders them, such pairs).

    Rows carry ``gold_ranks`` aligned with the item's candidates by idx, and ``gold_order``,
    the candidate ids in idx order.
    """
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in current(rows):
        if not row.get("gold_ranks"):
            continue
        gold = dict(zip(row["gold_order"], row["gold_ranks"]))
        mine = _rank_map(row)
        for a, b in combinations(sorted(gold), 2):
            if gold[a] == gold[b]:
                continue
            totals[row["annotator"]][0] += _sign(mine[a] - mine[b]) == _sign(gold[a] - gold[b])
            totals[row["annotator"]][1] += 1
    return {name: (right, total) for name, (right, total) in totals.items()}


def ratio(pair: Sequence[int]) -> float | None:
    right, total = pair
    return right / total if total else None


# --- speed --------------------------------------------------------------------------------------

READING_CHARS_PER_SECOND = 60.0
"""About 600 words a minute: faster than people read to compare, at the edge of skimming."""
BASE_SECONDS = 2.0
"""Time to look at a task and press submit, whatever its length."""


def min_plausible_seconds(chars: int) -> float:
    """The least time a considered ranking of candidates holding ``chars`` characters takes:
    ``BASE_SECONDS`` plus reading them all at ``READING_CHARS_PER_SECOND``. A vote made faster
    is flagged as implausibly fast (not dropped: the reliability model judges its content)."""
    return BASE_SECONDS + max(0, chars) / READING_CHARS_PER_SECOND


def speed(rows: Iterable[dict]) -> dict[str, tuple[float | None, int, int]]:
    """Per annotator: (median active seconds per vote, votes timed, votes implausibly fast).

    Rows carry ``annotator``, ``active_seconds`` (None when the page measured none),
    ``shown_at``, ``submitted_at`` and ``chars`` (the candidates' characters). A vote's time is
    its active seconds, else its wall time (showing to submitting, which is never less), so a
    vote fast by the wall clock is fast; the median is over active seconds only, since wall
    time counts breaks."""
    active: dict[str, list[float]] = defaultdict(list)
    fast: dict[str, int] = defaultdict(int)
    names: list[str] = []
    for row in current(rows):
        name = row["annotator"]
        if name not in active:
            names.append(name)
        seconds = row.get("active_seconds")
        if seconds is not None:
            active[name].append(seconds)
        elif row.get("shown_at") is not None:
            seconds = row["submitted_at"] - row["shown_at"]
        if seconds is not None and seconds < min_plausible_seconds(row.get("chars") or 0):
            fast[name] += 1
        active.setdefault(name, [])
    out = {}
    for name in names:
        times = sorted(active[name])
        median = None
        if times:
            mid = len(times) // 2
            median = times[mid] if len(times) % 2 else (times[mid - 1] + times[mid]) / 2
        out[name] = (median, len(times), fast[name])
    return out
