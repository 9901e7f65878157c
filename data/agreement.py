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
