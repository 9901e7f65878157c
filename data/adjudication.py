"""Adjudication: the items annotators disagree on most, and a reviewer's decision on each.

Who reviews. Admins, and any user an admin names a reviewer (``users.reviewer``, a flag beside
the role, so a trusted annotator can settle disputes without running the project).

The queue. Items ranked by at least two annotators whose votes order some candidate pair
differently, and gold items where some vote orders a pair against gold; lowest agreement first
(agreement: the share of pairs of judgments of a candidate pair that order it alike, as the
item browser counts it; for a gold item, the share of its votes' strict gold pairs ordered as
gold orders them). An item leaves the queue once decided. Each vote is shown as its annotator
saw it: the candidates lettered A, B, C ... in the order shown to them (votes store it), their
order in those letters, and the time they spent (active seconds when the page measured them,
and wall time from showing to submitting).

The decision is its own append-only record (``adjudications``): "vote" names the vote that is
the item's label, "discard" keeps no vote, "votes_stand" keeps them all (the disagreement is
real, not an error). A later decision on the same item replaces the earlier one for labels;
both stay. How a decision changes the labels is ``data.votes``' rule (its docstring).

Exports mark each item (``item_statuses``): ``adjudicated`` when a reviewer decided it,
``unanimous`` when no two of its ranked votes order any candidate pair differently (an item
with one ranked vote is unanimous), else ``unresolved``.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from itertools import combinations

import sqlite_utils

from data import store
from data.agreement import min_plausible_seconds
from data.errors import ConfigError
from data.rankings import MAX_TEXT_CHARS, candidate_letter
from data.votes import RankingRecord, latest

OUTCOMES = ("vote", "votes_stand", "discard")
STATUSES = ("unanimous", "adjudicated", "unresolved")


class AdjudicationError(ConfigError):
    """A decision that cannot be stored, with a message meant for the reviewer."""


# --- reviewers ----------------------------------------------------------------------------------

def can_review(db: sqlite_utils.Database, user_id: int) -> bool:
    """Admins and named reviewers, while their account is enabled."""
    row = db.execute("SELECT role = 'admin' OR reviewer = 1 FROM users WHERE id = ? "
                     "AND disabled_at IS NULL", [user_id]).fetchone()
    return bool(row and row[0])


def reviewers(db: sqlite_utils.Database) -> list[str]:
    """Users named reviewers (admins review without being named)."""
    return [r[0] for r in db.execute("SELECT name FROM users WHERE reviewer = 1 ORDER BY name")]


def set_reviewer(db: sqlite_utils.Database, name: str, reviewer: bool) -> None:
    with store.transaction(db):
        cursor = db.execute("UPDATE users SET reviewer = ? WHERE name = ?",
                            [int(bool(reviewer)), name])
        if cursor.rowcount == 0:
            raise AdjudicationError(f"there is no user called {name!r}")


# --- the queue ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReviewVote:
    ranking_id: int
    annotator: str
    letters: dict[int, str]
    """Candidate id -> the letter this annotator saw it under."""
    order: str
    """Best first in the annotator's letters: "B > A = C"; "all bad" or "skipped" as such."""
    ranks: dict[int, int] | None
    rationale: str | None
    active_seconds: float | None
    wall_seconds: float | None
    too_fast: bool = False
    """Made faster than ``data.agreement.min_plausible_seconds`` of the candidates' length."""


@dataclass(frozen=True)
class ReviewCandidate:
    id: int
    number: int
    """1-based, in the run's order: how the reviewer refers to it across votes."""
    text: str
    gold_rank: int | None


@dataclass(frozen=True)
class ReviewItem:
    item_id: int
    is_gold: bool
    agreement: float
    messages: list[dict]
    candidates: list[ReviewCandidate]
    votes: list[ReviewVote] = field(default_factory=list)
    """The latest ranked version of each annotator's vote, oldest first."""


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def order_text(ranks: dict[int, int], letters: dict[int, str]) -> str:
    by_rank: dict[int, list[str]] = defaultdict(list)
    for cid, rank in ranks.items():
        by_rank[rank].append(letters[cid])
    return " > ".join(" = ".join(sorted(group)) for _, group in sorted(by_rank.items()))


def _gold_agreement(db: sqlite_utils.Database) -> dict[int, float]:
    """Gold items with a vote against gold: the share of strict gold pairs ordered as gold."""
    out = {}
    rows = db.execute(
        "SELECT i.id, i.gold_ranks, r.candidate_ids, r.ranks FROM items i "
        "JOIN latest_rankings r ON r.item_id = i.id WHERE i.is_gold = 1 AND r.skipped = 0 "
        "AND r.ranks IS NOT NULL AND NOT EXISTS (SELECT 1 FROM adjudications a "
        "WHERE a.item_id = i.id) ORDER BY i.id").fetchall()
    order: dict[int, list[int]] = {}
    totals: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for item_id, gold_json, ids_json, ranks_json in rows:
        if item_id not in order:
            order[item_id] = [c["id"] for c in db.query(
                "SELECT c.id FROM candidates c JOIN items i ON c.prompt_id = i.prompt_id "
                "AND c.run_id = i.run_id WHERE i.id = ? ORDER BY c.idx", [item_id])]
        gold = dict(zip(order[item_id], json.loads(gold_json)))
        mine = dict(zip(json.loads(ids_json), json.loads(ranks_json)))
        for a, b in combinations(sorted(gold), 2):
            if gold[a] != gold[b] and a in mine and b in mine:
                totals[item_id][0] += _sign(mine[a] - mine[b]) == _sign(gold[a] - gold[b])
                totals[item_id][1] += 1
    for item_id, (right, total) in totals.items():
        if total and right < total:
            out[item_id] = right / total
    return out


def queue_entries(db: sqlite_utils.Database, *, limit: int = 20) -> list[tuple[int, float]]:
    """(item id, agreement) of undecided disputed items, lowest agreement first (ties: lower
    item id first)."""
    disputed = {item_id: 1.0 - disagreement for item_id, disagreement in db.execute(
        "SELECT s.item_id, s.disagreement FROM item_stats s JOIN items i ON i.id = s.item_id "
        "WHERE s.disagreement > 0 AND i.is_gold = 0 AND NOT EXISTS (SELECT 1 FROM "
        "adjudications a WHERE a.item_id = s.item_id) ORDER BY s.disagreement DESC, s.item_id "
        "LIMIT ?", [limit])}
    disputed.update(_gold_agreement(db))
    return sorted(disputed.items(), key=lambda kv: (kv[1], kv[0]))[:limit]


def review_queue(db: sqlite_utils.Database, *, limit: int = 20) -> list[ReviewItem]:
    """The queue's first ``limit`` items with their candidates and votes."""
    return [review_item(db, item_id, agreement)
            for item_id, agreement in queue_entries(db, limit=limit)]


def queued_item(db: sqlite_utils.Database, item_id: int) -> ReviewItem | None:
    """One item of the queue, or None when it is not in it (decided, or its votes agree)."""
    if db.execute("SELECT 1 FROM adjudications WHERE item_id = ?", [item_id]).fetchone():
        return None
    row = db.execute("SELECT s.disagreement, i.is_gold FROM items i LEFT JOIN item_stats s "
                     "ON s.item_id = i.id WHERE i.id = ?", [item_id]).fetchone()
    if row is None:
        return None
    disagreement, is_gold = row
    if is_gold:
        agreement = _gold_agreement(db).get(item_id)
    else:
        agreement = 1.0 - disagreement if disagreement else None
    return None if agreement is None else review_item(db, item_id, agreement)


def queue_size(db: sqlite_utils.Database) -> int:
    regular = db.execute(
        "SELECT COUNT(*) FROM item_stats s JOIN items i ON i.id = s.item_id "
        "WHERE s.disagreement > 0 AND i.is_gold = 0 AND NOT EXISTS (SELECT 1 FROM "
        "adjudications a WHERE a.item_id = s.item_id)").fetchone()[0]
    return regular + len(_gold_agreement(db))


def review_item(db: sqlite_utils.Database, item_id: int, agreement: float) -> ReviewItem:
    prompt_id, run_id, is_gold, gold_json, messages = db.execute(
        "SELECT i.prompt_id, i.run_id, i.is_gold, i.gold_ranks, p.messages FROM items i "
        "JOIN prompts p ON p.id = i.prompt_id WHERE i.id = ?", [item_id]).fetchone()
    rows = db.execute("SELECT id, text FROM candidates WHERE prompt_id = ? AND run_id = ? "
                      "ORDER BY idx", [prompt_id, run_id]).fetchall()
    gold = json.loads(gold_json) if gold_json else [None] * len(rows)
    chars = sum(len(text) for _, text in rows)
    candidates = [ReviewCandidate(cid, n + 1, text, g)
                  for n, ((cid, text), g) in enumerate(zip(rows, gold))]
    votes = []
    for (ranking_id, name, ids_json, ranks_json, all_bad, skipped, rationale, active,
         shown_at, submitted_at) in db.execute(
            "SELECT r.id, u.name, r.candidate_ids, r.ranks, r.all_bad, r.skipped, r.rationale, "
            "r.active_seconds, r.shown_at, r.submitted_at FROM latest_rankings r "
            "JOIN users u ON u.id = r.user_id WHERE r.item_id = ? AND r.skipped = 0 "
            "ORDER BY r.id", [item_id]):
        ids = json.loads(ids_json)
        letters = {cid: candidate_letter(i) for i, cid in enumerate(ids)}
        ranks = dict(zip(ids, json.loads(ranks_json))) if ranks_json else None
        order = order_text(ranks, letters) if ranks else ("all bad" if all_bad else "")
        wall = None if shown_at is None else max(0.0, submitted_at - shown_at)
        spent = active if active is not None else wall
        votes.append(ReviewVote(
            ranking_id, name, letters, order, ranks, rationale, active, wall,
            spent is not None and spent < min_plausible_seconds(chars)))
    return ReviewItem(item_id, bool(is_gold), agreement, json.loads(messages), candidates,
                      votes)


# --- decisions ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    id: int
    item_id: int
    reviewer: str
    outcome: str
    ranking_id: int | None
    note: str | None
    created_at: float


def record_decision(db: sqlite_utils.Database, *, item_id: int, reviewer_id: int, outcome: str,
                    ranking_id: int | None = None, note: str = "",
                    now: float | None = None) -> int:
    """Appends a reviewer's decision on ``item_id``; returns its id. Refuses (with a sentence,
    storing nothing) a user who may not review, an unknown item or outcome, a "vote" that
    names no current ranked vote of this item, and a note over the rationale's limit."""
    now = time.time() if now is None else now
    if outcome not in OUTCOMES:
        raise AdjudicationError(f"the decision must be one of {', '.join(OUTCOMES)}, "
                                f"not {outcome!r}")
    note = (note or "").strip()
    if len(note) > MAX_TEXT_CHARS:
        raise AdjudicationError(f"the note is {len(note):,} characters; the limit is "
                                f"{MAX_TEXT_CHARS:,}")
    if outcome != "vote":
        ranking_id = None
    with store.transaction(db):
        if not can_review(db, reviewer_id):
            raise AdjudicationError("only admins and named reviewers may decide disputed items")
        if db.execute("SELECT 1 FROM items WHERE id = ?", [item_id]).fetchone() is None:
            raise AdjudicationError(f"there is no item {item_id}")
        if outcome == "vote":
            ok = ranking_id is not None and db.execute(
                "SELECT 1 FROM latest_rankings WHERE id = ? AND item_id = ? AND skipped = 0 "
                "AND ranks IS NOT NULL", [ranking_id, item_id]).fetchone()
            if not ok:
                raise AdjudicationError(
                    f"vote {ranking_id} is not a current ranked vote of item {item_id}; "
                    "reload the queue")
        return db.execute(
            "INSERT INTO adjudications (item_id, reviewer_id, outcome, ranking_id, note, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [item_id, reviewer_id, outcome, ranking_id, note or None, now]).lastrowid


def decisions(db: sqlite_utils.Database, item_id: int | None = None) -> list[Decision]:
    """Every decision (of one item, or all), oldest first."""
    where, params = ("WHERE a.item_id = ?", [item_id]) if item_id is not None else ("", [])
    return [Decision(*row) for row in db.execute(
        "SELECT a.id, a.item_id, u.name, a.outcome, a.ranking_id, a.note, a.created_at "
        f"FROM adjudications a JOIN users u ON u.id = a.reviewer_id {where} ORDER BY a.id",
        params)]


# --- item status --------------------------------------------------------------------------------

def _disagree(first: dict[int, int], second: dict[int, int]) -> bool:
    shared = sorted(set(first) & set(second))
    return any(_sign(first[a] - first[b]) != _sign(second[a] - second[b])
               for a, b in combinations(shared, 2))


def item_statuses(records: Iterable[RankingRecord]) -> dict[Hashable, str]:
    """Item id -> ``unanimous``, ``adjudicated`` or ``unresolved`` for every item with a
    ranked latest vote (votes stored before items existed are keyed by (prompt, run))."""
    ranked: dict[Hashable, list[dict[int, int]]] = defaultdict(list)
    decided: set[Hashable] = set()
    for r in latest(records):
        key = r.item_id if r.item_id is not None else (r.prompt_id, r.source_run)
        if r.adjudication_id is not None:
            decided.add(key)
        if not r.skipped and r.ranks is not None:
            ranked[key].append(dict(zip(r.candidate_ids, r.ranks)))
    out = {}
    for key, votes in ranked.items():
        if key in decided:
            out[key] = "adjudicated"
        elif any(_disagree(a, b) for a, b in combinations(votes, 2)):
            out[key] = "unresolved"
        else:
            out[key] = "unanimous"
    return out
