"""The admin's item browser: items filtered and paged, one item in detail, item tags.

Statuses, over the latest version of each vote (``data.revisions``):

- ``unassigned``: no label yet and nobody holds the item now;
- ``in_progress``: an annotator holds it now (an open assignment that has not timed out);
- ``done``: at least one label (a submission that is not a skip);
- ``overlap_reached``: at least ``overlap`` labels;
- ``disagreement``: annotators order some pair of its candidates differently (disagreement
  above ``min_disagreement``).

An item's *disagreement* is 1 − agreement, where agreement counts, over the item's candidate
pairs, the pairs of judgments that order the pair alike (same winner, or both a tie) out of
all pairs of judgments: 0 when everyone agrees, None until two annotators ranked it. It is
the per-item form of ``data.agreement.pairwise_agreement``. Label counts and disagreement are
kept per item in ``item_stats`` by triggers on the vote log, so filters stay index lookups at
100k items (``bench/item_browser.py`` measures them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import combinations

import sqlite_utils

from data import agreement, store
from data.labeling import LabelingError
from data.suggestions import ranks_from_scores

STATUSES = ("unassigned", "in_progress", "done", "overlap_reached", "disagreement")
ORDERS = ("id", "recent", "disagreement")
MAX_PAGE_SIZE = 500
MAX_TAG_CHARS = 64
PREVIEW_CHARS = 160


@dataclass(frozen=True)
class ItemFilter:
    status: str | None = None
    """One of ``STATUSES``, or None for every item."""
    annotator: str | None = None
    """Items this user (by name) has submitted (ranked or skipped)."""
    run_id: int | None = None
    """Items of this generation run."""
    tag: str | None = None
    gold: bool | None = None
    """True: only gold items; False: no gold items; None: both."""
    overlap: int = 1
    """Labels an item needs (the app's ``--overlap``), for ``overlap_reached``."""
    min_disagreement: float = 0.0
    """``disagreement`` keeps items whose disagreement is above this."""
    order: str = "id"
    """``id`` (oldest item first), ``recent`` (latest submission first), ``disagreement``
    (most disputed first)."""

    def __post_init__(self):
        if self.status is not None and self.status not in STATUSES:
            raise LabelingError(f"status must be one of {', '.join(STATUSES)}, "
                                f"not {self.status!r}")
        if self.order not in ORDERS:
            raise LabelingError(f"order must be one of {', '.join(ORDERS)}, not {self.order!r}")
        if self.overlap < 1:
            raise LabelingError("overlap must be at least 1")
        if not 0 <= self.min_disagreement < 1:
            raise LabelingError("the disagreement threshold must be in [0, 1)")


@dataclass(frozen=True)
class ItemRow:
    item_id: int
    prompt_id: int
    run_id: int
    is_gold: bool
    prompt_preview: str
    """The last user turn, cut to ``PREVIEW_CHARS`` characters (untrusted text: show, never
    render as HTML)."""
    labels: int
    skips: int
    holders: int
    """Annotators holding the item right now."""
    disagreement: float | None
    last_submitted_at: float | None
    annotators: tuple[str, ...]
    """Who submitted it (ranked or skipped), by user name."""
    tags: tuple[str, ...]
    holder_names: tuple[str, ...] = ()
    """Who holds it right now, by user name."""


@dataclass(frozen=True)
class ItemPage:
    rows: list[ItemRow]
    total: int
    """Items matching the filter, over all pages."""
    page: int
    """0-based."""
    page_size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.page_size))


def _where(f: ItemFilter, users: dict[str, int], now: float) -> tuple[str, str, list]:
    """(join, where, params) for a filter."""
    # Held items, listed once per query (a correlated lookup per item would be planned
    # on the submitted_at index and scan every open assignment for each item).
    live = ("i.id IN (SELECT a.item_id FROM assignments a WHERE a.submitted_at IS NULL "
            "AND a.expires_at > ?)")
    clauses, params = [], []
    # Statuses that need a label drive the query from item_stats' indexes.
    join = ("JOIN" if f.status in ("done", "overlap_reached", "disagreement") else
            "LEFT JOIN") + " item_stats st ON st.item_id = i.id"
    if f.status == "unassigned":
        clauses.append(f"COALESCE(st.labels, 0) = 0 AND NOT {live}")
        params.append(now)
    elif f.status == "in_progress":
        clauses.append(live)
        params.append(now)
    elif f.status == "done":
        clauses.append("st.labels >= 1")
    elif f.status == "overlap_reached":
        clauses.append("st.labels >= ?")
        params.append(f.overlap)
    elif f.status == "disagreement":
        clauses.append("st.disagreement > ?")
        params.append(f.min_disagreement)
    if f.annotator is not None:
        clauses.append("i.id IN (SELECT r.item_id FROM rankings r WHERE r.user_id = ?)")
        params.append(users.get(f.annotator, -1))
    if f.run_id is not None:
        clauses.append("i.run_id = ?")
        params.append(int(f.run_id))
    if f.tag is not None:
        clauses.append("i.id IN (SELECT t.item_id FROM item_tags t WHERE t.tag = ?)")
        params.append(f.tag)
    if f.gold is not None:
        clauses.append("i.is_gold = ?")
        params.append(int(f.gold))
    return join, (" WHERE " + " AND ".join(clauses)) if clauses else "", params


_ORDER_BY = {
    "id": "i.id",
    "recent": "st.last_submitted_at DESC NULLS LAST, i.id",
    "disagreement": "st.disagreement DESC NULLS LAST, i.id",
}


def browse_items(db: sqlite_utils.Database, item_filter: ItemFilter = ItemFilter(), *,
                 page: int = 0, page_size: int = 50, now: float | None = None) -> ItemPage:
    """One page of the items matching ``item_filter``."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise LabelingError(f"page size must be between 1 and {MAX_PAGE_SIZE}")
    page = max(0, int(page))
    now = time.time() if now is None else now
    users = {name: uid for uid, name in db.execute("SELECT id, name FROM users")}
    join, where, params = _where(item_filter, users, now)
    total = db.execute(f"SELECT COUNT(*) FROM items i {join}{where}", params).fetchone()[0]
    rows = db.execute(
        "SELECT i.id, i.prompt_id, i.run_id, i.is_gold, COALESCE(st.labels, 0), "
        "COALESCE(st.skips, 0), st.disagreement, st.last_submitted_at "
        f"FROM items i {join}{where} ORDER BY {_ORDER_BY[item_filter.order]} LIMIT ? OFFSET ?",
        [*params, page_size, page * page_size]).fetchall()
    if not rows:
        return ItemPage([], total, page, page_size)
    previews, holders, annotators, tags = _page_details(db, rows, now)
    return ItemPage([ItemRow(
        item_id=r[0], prompt_id=r[1], run_id=r[2], is_gold=bool(r[3]),
        prompt_preview=previews.get(r[1], ""), labels=r[4], skips=r[5],
        holders=len(holders.get(r[0], ())), disagreement=r[6], last_submitted_at=r[7],
        annotators=tuple(annotators.get(r[0], ())), tags=tuple(tags.get(r[0], ())),
        holder_names=tuple(holders.get(r[0], ())),
    ) for r in rows], total, page, page_size)


def _page_details(db, rows: list[tuple], now: float):
    """Previews, holders, annotators and tags of one page's items, one query each."""
    ids = [r[0] for r in rows]
    marks = ",".join("?" * len(ids))
    prompt_ids = sorted({r[1] for r in rows})
    previews = {pid: (text or "")[:PREVIEW_CHARS] for pid, text in db.execute(
        "SELECT id, json_extract(messages, '$[#-1].content') FROM prompts "
        f"WHERE id IN ({','.join('?' * len(prompt_ids))})", prompt_ids)}
    holders: dict[int, list[str]] = {}
    for item_id, name in db.execute(
            f"SELECT a.item_id, u.name FROM assignments a JOIN users u ON u.id = a.user_id "
            f"WHERE a.item_id IN ({marks}) AND a.submitted_at IS NULL AND a.expires_at > ? "
            "ORDER BY a.item_id, u.name", [*ids, now]):
        holders.setdefault(item_id, []).append(name)
    annotators: dict[int, list[str]] = {}
    for item_id, name in db.execute(
            "SELECT DISTINCT r.item_id, u.name FROM rankings r JOIN users u ON u.id = r.user_id "
            f"WHERE r.item_id IN ({marks}) ORDER BY r.item_id, u.name", ids):
        annotators.setdefault(item_id, []).append(name)
    tags: dict[int, list[str]] = {}
    for item_id, tag in db.execute(
            f"SELECT item_id, tag FROM item_tags WHERE item_id IN ({marks}) ORDER BY tag", ids):
        tags.setdefault(item_id, []).append(tag)
    return previews, holders, annotators, tags


# --- one item ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CandidateDetail:
    id: int
    idx: int
    text: str
    token_count: int | None
    finish_reason: str | None
    """``stop``, or ``length`` when the token limit cut it off."""
    duplicate_of: int | None
    human_ranks: dict[str, int]
    """Annotator name → the rank they gave it (latest versions, ranked votes only)."""
    mean_rank: float | None
    rank_spread: int | None
    """Worst minus best human rank: 0 when all annotators agree on its place."""
    model_scores: dict[str, float]
    """Scorer → score."""
    model_ranks: dict[str, int]
    """Scorer → rank among this item's candidates by that scorer's scores (1 = best)."""


@dataclass(frozen=True)
class RankingDetail:
    ranking_id: int
    annotator: str
    user_id: int
    ranks: dict[int, int] | None
    """Candidate id → rank; None for skips and unranked "all bad" votes."""
    all_bad: bool
    skipped: bool
    rationale: str | None
    demonstration: str | None
    shown_at: float | None
    submitted_at: float
    supersedes: int | None
    superseded_by: int | None
    """Set when a revision replaced this version (it is then history, not a label)."""
    suggestion_scorer: str | None
    suggested_ranks: dict[int, int] | None
    suggestion_accepted: bool | None
    shown: tuple[int, ...] = ()
    """Candidate ids in the order the annotator saw them (their A, B, C…)."""

    @property
    def is_latest(self) -> bool:
        return self.superseded_by is None


@dataclass(frozen=True)
class ItemDetail:
    item_id: int
    prompt_id: int
    run_id: int
    is_gold: bool
    gold_ranks: dict[int, int] | None
    """Candidate id → known rank, for gold items."""
    messages: list[dict]
    tags: list[str]
    candidates: list[CandidateDetail]
    """In idx order (the order the run generated them), not any annotator's shown order."""
    rankings: list[RankingDetail]
    """Every version of every vote, oldest first."""
    holders: list[str]
    """Who holds the item right now."""
    scorers: list[str]
    judged_pairs: int
    agreeing_pairs: int
    disputed_pairs: list[tuple[int, int]] = field(default_factory=list)
    """Candidate id pairs (lower id first) that annotators ordered differently."""

    @property
    def disagreement(self) -> float | None:
        if not self.judged_pairs:
            return None
        return 1.0 - self.agreeing_pairs / self.judged_pairs


def _json(value):
    return None if value is None else json.loads(value)


def item_detail(db: sqlite_utils.Database, item_id: int, *, now: float | None = None
                ) -> ItemDetail | None:
    """Everything about one item: candidates, every ranking with rationale and written
    answer, reward-model scores beside the human ranks, and where annotators disagree."""
    now = time.time() if now is None else now
    item = db.execute("SELECT prompt_id, run_id, is_gold, gold_ranks FROM items WHERE id = ?",
                      [item_id]).fetchone()
    if item is None:
        return None
    prompt_id, run_id, is_gold, gold_json = item
    candidates = db.execute(
        "SELECT id, idx, text, token_count, finish_reason, duplicate_of FROM candidates "
        "WHERE prompt_id = ? AND run_id = ? ORDER BY idx", [prompt_id, run_id]).fetchall()
    ids = [c[0] for c in candidates]
    marks = ",".join("?" * len(ids))
    scores: dict[int, dict[str, float]] = {c: {} for c in ids}
    for cid, scorer, score in db.execute(
            f"SELECT candidate_id, scorer, score FROM model_scores WHERE candidate_id IN ({marks})"
            " ORDER BY scorer", ids):
        scores[cid][scorer] = score
    scorers = sorted({s for per in scores.values() for s in per})
    model_ranks: dict[int, dict[str, int]] = {c: {} for c in ids}
    for scorer in scorers:
        scored = [c for c in ids if scorer in scores[c]]
        for cid, rank in zip(scored, ranks_from_scores([scores[c][scorer] for c in scored])):
            model_ranks[cid][scorer] = rank

    rankings = []
    for (rid, user_id, name, ids_json, ranks_json, all_bad, skipped, rationale, demo, shown_at,
         submitted_at, supersedes, superseded_by, scorer, suggested, accepted) in db.execute(
            "SELECT r.id, r.user_id, u.name, r.candidate_ids, r.ranks, r.all_bad, r.skipped, "
            "r.rationale, d.text, r.shown_at, r.submitted_at, r.supersedes, s.id, "
            "r.suggestion_scorer, r.suggested_ranks, r.suggestion_accepted FROM rankings r "
            "JOIN users u ON u.id = r.user_id LEFT JOIN candidates d ON d.id = r.demonstration_id "
            "LEFT JOIN rankings s ON s.supersedes = r.id WHERE r.item_id = ? ORDER BY r.id",
            [item_id]):
        shown = json.loads(ids_json)
        ranks, suggested_ranks = _json(ranks_json), _json(suggested)
        rankings.append(RankingDetail(
            rid, name, user_id, None if ranks is None else dict(zip(shown, ranks)),
            bool(all_bad), bool(skipped), rationale, demo, shown_at, submitted_at, supersedes,
            superseded_by, scorer,
            None if suggested_ranks is None else dict(zip(shown, suggested_ranks)),
            None if accepted is None else bool(accepted), tuple(shown)))

    labels = [r for r in rankings if r.is_latest and not r.skipped and r.ranks is not None]
    rows = [{"item_id": item_id, "annotator": r.annotator, "candidate_ids": list(r.ranks),
             "ranks": list(r.ranks.values())} for r in labels]
    per_pair = agreement.pairwise_agreement(rows)
    disputed = sorted({
        (min(a, b), max(a, b))
        for first, second in combinations(labels, 2)
        for a, b in combinations(sorted(set(first.ranks) & set(second.ranks)), 2)
        if _sign(first.ranks[a] - first.ranks[b]) != _sign(second.ranks[a] - second.ranks[b])})

    details = []
    for cid, idx, text, tokens, finish, dup in candidates:
        human = {r.annotator: r.ranks[cid] for r in labels if cid in r.ranks}
        values = list(human.values())
        details.append(CandidateDetail(
            cid, idx, text, tokens, finish, dup, human,
            sum(values) / len(values) if values else None,
            max(values) - min(values) if values else None,
            scores[cid], model_ranks[cid]))
    gold = _json(gold_json)
    return ItemDetail(
        item_id=item_id, prompt_id=prompt_id, run_id=run_id, is_gold=bool(is_gold),
        gold_ranks=None if gold is None else dict(zip(ids, gold)),
        messages=store.prompt_messages(db, prompt_id), tags=item_tags(db, item_id),
        candidates=details, rankings=rankings,
        holders=[r[0] for r in db.execute(
            "SELECT u.name FROM assignments a JOIN users u ON u.id = a.user_id WHERE "
            "a.item_id = ? AND a.submitted_at IS NULL AND a.expires_at > ? ORDER BY u.name",
            [item_id, now])],
        scorers=scorers, judged_pairs=sum(t for _, t in per_pair.values()),
        agreeing_pairs=sum(a for a, _ in per_pair.values()), disputed_pairs=disputed)


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


# --- tags --------------------------------------------------------------------------------------

def _clean_tag(tag: str) -> str:
    tag = (tag or "").strip()
    if not tag or len(tag) > MAX_TAG_CHARS or any(not c.isprintable() for c in tag):
        raise LabelingError(f"a tag is 1-{MAX_TAG_CHARS} printable characters")
    return tag


def tag_items(db: sqlite_utils.Database, item_ids: Iterable[int], tag: str) -> int:
    """Adds ``tag`` to the items; returns how many did not have it yet."""
    tag, ids = _clean_tag(tag), [int(i) for i in item_ids]
    now = time.time()
    with store.transaction(db):
        known = {r[0] for r in db.execute(
            f"SELECT id FROM items WHERE id IN ({','.join('?' * len(ids))})", ids)} if ids else set()
        missing = sorted(set(ids) - known)
        if missing:
            raise LabelingError(f"no item {missing[0]}")
        before = db.execute("SELECT total_changes()").fetchone()[0]
        db.conn.executemany("INSERT OR IGNORE INTO item_tags (item_id, tag, created_at) "
                            "VALUES (?, ?, ?)", [(i, tag, now) for i in ids])
        return db.execute("SELECT total_changes()").fetchone()[0] - before


def untag_items(db: sqlite_utils.Database, item_ids: Iterable[int], tag: str) -> int:
    """Removes ``tag`` from the items; returns how many had it."""
    tag, ids = _clean_tag(tag), [int(i) for i in item_ids]
    with store.transaction(db):
        before = db.execute("SELECT total_changes()").fetchone()[0]
        db.conn.executemany("DELETE FROM item_tags WHERE item_id = ? AND tag = ?",
                            [(i, tag) for i in ids])
        return db.execute("SELECT total_changes()").fetchone()[0] - before


def item_tags(db: sqlite_utils.Database, item_id: int) -> list[str]:
    return [r[0] for r in db.execute("SELECT tag FROM item_tags WHERE item_id = ? ORDER BY tag",
                                     [item_id])]


def tag_counts(db: sqlite_utils.Database) -> list[tuple[str, int]]:
    """Every tag in use with its number of items, for the tag filter."""
    return [tuple(r) for r in db.execute(
        "SELECT tag, COUNT(*) FROM item_tags GROUP BY tag ORDER BY tag")]


def run_counts(db: sqlite_utils.Database) -> list[tuple[int, str, int]]:
    """(run id, model, items) for every run with items, for the run filter."""
    return [tuple(r) for r in db.execute(
        "SELECT r.id, r.model, COUNT(i.id) FROM generation_runs r JOIN items i ON i.run_id = r.id "
        "GROUP BY r.id ORDER BY r.id")]


# --- counts for the admin console ---------------------------------------------------------------

def vote_counts(db: sqlite_utils.Database) -> dict[str, int]:
    """Counts over the latest version of each vote: ``votes`` (submissions, skips included),
    ``labels`` (not skips), ``skips``, ``comparisons`` (pairs derived from the latest votes),
    ``revisions`` (rows that revised an earlier one), ``items`` and ``labeled_items``."""
    votes, skips = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(skipped), 0) FROM latest_rankings").fetchone()
    return {
        "votes": votes, "labels": votes - skips, "skips": skips,
        "comparisons": db.execute("SELECT COUNT(*) FROM latest_comparisons").fetchone()[0],
        "revisions": db.execute(
            "SELECT COUNT(*) FROM rankings WHERE supersedes IS NOT NULL").fetchone()[0],
        "items": db.execute("SELECT COUNT(*) FROM items").fetchone()[0],
        "labeled_items": db.execute(
            "SELECT COUNT(*) FROM item_stats WHERE labels > 0").fetchone()[0],
    }


# --- what the console shows beside the items -------------------------------------------------

def label_times(db: sqlite_utils.Database) -> list[float]:
    """When each label was first submitted, oldest first: skips are not labels, and a
    revision does not add one."""
    return [r[0] for r in db.execute(
        "SELECT submitted_at FROM rankings WHERE supersedes IS NULL AND skipped = 0 "
        "ORDER BY submitted_at")]


def release_holds(db: sqlite_utils.Database, *, user_id: int | None = None,
                  item_id: int | None = None, now: float | None = None) -> int:
    """Returns the open assignments of a user, or of an item, to the queue at once (instead of
    when they time out); their drafts stay. How many were released."""
    if (user_id is None) == (item_id is None):
        raise ValueError("release the holds of one user or of one item")
    now = time.time() if now is None else now
    column, value = ("user_id", user_id) if user_id is not None else ("item_id", item_id)
    with store.transaction(db):
        return db.execute(
            f"UPDATE assignments SET expires_at = ? WHERE {column} = ? AND submitted_at IS NULL "
            "AND expires_at > ?", [now, value, now]).rowcount


def scorer_name(spec: str | None) -> str:
    """A reward model's short name for people: ``bt:/srv/x.db.workspace/models/reward-1`` is
    ``reward-1 (bt)``; the full spec stays in the database and in exports."""
    if not spec:
        return ""
    kind, sep, path = spec.partition(":")
    if not sep:
        return spec
    name = path.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] or path
    return f"{name} ({kind})"
