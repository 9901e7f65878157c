"""The vote log: its one write path and its one read model.

Writing. A vote is appended, never edited: a first submission
(``data.labeling.submit_assignment``) and a revision (``data.revisions.revise_submission``, a
new row whose ``supersedes`` points at the one it replaces) both go through ``append_vote``,
as do the simulated annotators and the benchmarks, which submit through those two. Each vote
carries a ``submission_key`` that makes it idempotent: the same key sent twice (a double
click, a retried request) stores one row. Its pairwise ``comparisons`` are derived once, here
(``data.rankings.ranking_to_pairs``).

Reading. ``read_rankings`` gives every stored vote as a ``RankingRecord`` (the raw export
shows them all). What counts as a *label*, for every trainer (reward model, REBEL, DPO, PPO's
reward model, SFT) and for the exported preference pairs alike, is decided once:

- *Latest version*: a revised vote counts only in its latest version (``latest``, and the
  ``latest_rankings`` / ``latest_comparisons`` views).
- *Gold*: votes on gold items are checks of the annotator against a known ranking, not labels:
  no trainer and no preference export reads them (they would count the check's answer key as
  a judgment, and a gold item is often made up for the check); gold accuracy and the raw
  export do.
- *Skips* judge nothing.
- *Ties* are pairs with ``tie`` set: the reward model trains on them only with its tie loss,
  exports keep them only with ``ties="include"``; a rank-derived score gives both the same.
- *All bad*: the ranks given (if any) still order the candidates among themselves; an "all
  bad" vote without ranks gives no pairs, and SFT takes no "chosen" answer from any "all
  bad" vote.
- *Demonstrations*: the annotator's own answer, ranked above every candidate.
- *Adjudication*: a reviewer's latest decision on an item (``data.adjudication``) settles
  which of its votes are labels: "vote" keeps only the vote it names (the others are
  *overruled*), "discard" keeps none, "votes_stand" keeps them all. The decision picks among
  the annotators' votes rather than adding a judgment of its own, so every label is still a
  vote in the log, with its annotator, order shown and time, and the SQL below can apply the
  rule too. A decision names one version of a vote: if that vote is revised afterwards, the
  item has no label until it is adjudicated again.

``labels`` applies these rules to records; ``LABEL_RANKINGS`` and ``LABEL_COMPARISONS`` are the
same rules for readers that query SQLite directly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import sqlite_utils

from data import settings
from data.rankings import Submission, ranking_to_pairs
from data.suggestions import accepted_flag


@dataclass(frozen=True)
class Stored:
    ranking_id: int
    pairs: int
    created: bool
    """False when a vote with the same submission key was already stored: nothing new."""


@dataclass(frozen=True)
class Vote:
    """One version of one annotator's judgment of one item, as the log stores it."""

    submission_key: str
    """``assignment:<id>`` for a first submission, ``revision:<ranking id>`` for a revision."""
    user_id: int
    prompt_id: int
    item_id: int | None
    assignment_id: int | None
    submission: Submission
    demonstration_id: int | None
    """The annotator's own answer, stored as a candidate ranked above every other."""
    shown_at: float
    submitted_at: float
    supersedes: int | None = None
    """The row this version replaces (a revision), else None."""
    suggested_ranks: list[int] | None = None
    """The model suggestion the task opened with, if any (``data.suggestions``)."""
    suggestion_scorer: str | None = None
    guidelines_version: str | None = None
    """The guidelines it was made under (``data.settings.guidelines_version``); None takes
    the version in force when it is appended."""
    active_seconds: float | None = None
    """Seconds the task was visible and in use, as the page measured them; None if unknown."""


def stored_vote(db: sqlite_utils.Database, submission_key: str) -> Stored | None:
    """The vote already stored under ``submission_key``, if any."""
    row = db.execute("SELECT id FROM rankings WHERE submission_key = ?",
                     [submission_key]).fetchone()
    if row is None:
        return None
    pairs = db.execute("SELECT COUNT(*) FROM comparisons WHERE ranking_id = ?",
                       [row[0]]).fetchone()[0]
    return Stored(row[0], pairs, created=False)


def append_vote(db: sqlite_utils.Database, vote: Vote) -> Stored:
    """Appends ``vote`` and the pairwise comparisons its ranking implies, marks its assignment
    submitted (a skip flag that follows the latest version, so the queue's overlap count does
    too) and drops the assignment's draft. Call inside ``store.transaction``; the caller has
    checked the vote is allowed."""
    submission = vote.submission
    ranking_id = db.execute(
        "INSERT INTO rankings (submission_key, user_id, prompt_id, item_id, assignment_id, "
        "candidate_ids, ranks, has_tie, all_bad, skipped, rationale, demonstration_id, "
        "shown_at, submitted_at, supersedes, suggested_ranks, suggestion_scorer, "
        "suggestion_accepted, active_seconds, guidelines_version) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [vote.submission_key, vote.user_id, vote.prompt_id, vote.item_id, vote.assignment_id,
         json.dumps(list(submission.candidate_ids)),
         None if submission.ranks is None else json.dumps(list(submission.ranks)),
         int(submission.has_tie), int(submission.all_bad), int(submission.skipped),
         submission.rationale or None, vote.demonstration_id, vote.shown_at,
         vote.submitted_at, vote.supersedes,
         None if vote.suggested_ranks is None else json.dumps(list(vote.suggested_ranks)),
         vote.suggestion_scorer, accepted_flag(vote.suggested_ranks, submission),
         vote.active_seconds,
         vote.guidelines_version or settings.current_guidelines(db)[1]],
    ).lastrowid
    pairs = [] if submission.skipped else ranking_to_pairs(
        submission.candidate_ids, submission.ranks, vote.demonstration_id)
    db.conn.executemany(
        "INSERT INTO comparisons (ranking_id, prompt_id, chosen_id, rejected_id, tie) "
        "VALUES (?, ?, ?, ?, ?)",
        [(ranking_id, vote.prompt_id, p.chosen, p.rejected, int(p.tie)) for p in pairs])
    if vote.assignment_id is not None:
        db.execute("UPDATE assignments SET submitted_at = COALESCE(submitted_at, ?), "
                   "skipped = ? WHERE id = ?",
                   [vote.submitted_at, int(submission.skipped), vote.assignment_id])
        db.execute("DELETE FROM drafts WHERE assignment_id = ?", [vote.assignment_id])
    return Stored(ranking_id, len(pairs), created=True)


# --- the read model -----------------------------------------------------------------------------

# The label votes as SQL, for readers that query directly (the rules in the module docstring).
LABEL_RANKINGS = (
    "(SELECT lr.* FROM latest_rankings lr LEFT JOIN items li ON li.id = lr.item_id "
    "WHERE lr.skipped = 0 AND COALESCE(li.is_gold, 0) = 0 AND NOT EXISTS (SELECT 1 FROM "
    "latest_adjudications la WHERE la.item_id = lr.item_id AND (la.outcome = 'discard' OR "
    "(la.outcome = 'vote' AND la.ranking_id != lr.id))))")
LABEL_COMPARISONS = (
    "(SELECT lc.* FROM latest_comparisons lc WHERE lc.ranking_id IN "
    f"(SELECT id FROM {LABEL_RANKINGS}))")


@dataclass(frozen=True)
class RankingRecord:
    """One submission as stored in ``rankings``, with the texts it refers to."""

    ranking_id: int
    annotator: str
    """Pseudonym or name, as the export shows it."""
    prompt_id: int
    prompt: list[dict]
    item_id: int | None
    source_run: int | None
    """Generation run of the ranked candidates."""
    is_gold: bool
    gold_ranks: list[int] | None
    """The gold item's known ranks, aligned with candidate_ids (shown order)."""
    candidate_ids: list[int]
    """In the order shown to the annotator."""
    candidates: list[str]
    ranks: list[int] | None
    """Aligned with candidate_ids; 1 = best; None for skips and unranked all-bad votes."""
    has_tie: bool
    all_bad: bool
    skipped: bool
    rationale: str | None
    demonstration_id: int | None
    demonstration: str | None
    shown_at: float | None
    submitted_at: float
    supersedes: int | None = None
    """The ranking this one revises, if it is a revision."""
    superseded_by: int | None = None
    """The revision that replaced this ranking; None for the latest version of a vote."""
    suggested_ranks: list[int] | None = None
    """The model suggestion it was pre-filled with, aligned with candidate_ids."""
    suggestion_scorer: str | None = None
    suggestion_accepted: bool | None = None
    """True: the suggestion submitted unchanged; False: changed; None: no suggestion shown."""
    user_id: int | None = None
    """The annotator's account (for per-annotator weights); exports show ``annotator``."""
    active_seconds: float | None = None
    """Seconds the task was visible and in use before submitting; None if not measured."""
    adjudication_id: int | None = None
    """The latest reviewer's decision on this vote's item, if any (``data.adjudication``)."""
    overruled: bool = False
    """That decision takes this vote out of the labels (it named another vote, or none)."""
    guidelines_version: str | None = None
    """The guidelines in force when it was stored (``data.settings.guidelines_version``)."""

    @property
    def is_latest(self) -> bool:
        return self.superseded_by is None


def latest(records: Iterable[RankingRecord]) -> list[RankingRecord]:
    """The latest version of each vote (what pairs, agreement and training read)."""
    return [r for r in records if r.superseded_by is None]


def pseudonym(user_id: int) -> str:
    """Stable across exports of one database, and says nothing about the person."""
    return f"annotator-{user_id}"


def read_rankings(db, *, keep_annotator_names: bool = False) -> list[RankingRecord]:
    """Every submission in ``rankings`` (skips and superseded versions included), oldest
    first; ``latest`` keeps the current version of each vote."""
    texts = dict(db.execute(
        "SELECT id, text FROM candidates WHERE id IN (SELECT value FROM rankings, "
        "json_each(rankings.candidate_ids)) OR id IN (SELECT demonstration_id FROM rankings)"))
    rows = db.execute(
        "SELECT r.id, r.user_id, u.name, r.prompt_id, p.messages, r.item_id, i.run_id, "
        "i.is_gold, i.gold_ranks, r.candidate_ids, r.ranks, r.has_tie, r.all_bad, r.skipped, "
        "r.rationale, r.demonstration_id, r.shown_at, r.submitted_at, r.supersedes, s.id, "
        "r.suggested_ranks, r.suggestion_scorer, r.suggestion_accepted, r.active_seconds, "
        "la.id, la.outcome, la.ranking_id, r.guidelines_version "
        "FROM rankings r JOIN users u ON u.id = r.user_id JOIN prompts p ON p.id = r.prompt_id "
        "LEFT JOIN items i ON i.id = r.item_id LEFT JOIN rankings s ON s.supersedes = r.id "
        "LEFT JOIN latest_adjudications la ON la.item_id = r.item_id "
        "ORDER BY r.id").fetchall()
    gold_order: dict[int, list[int]] = {}
    records = []
    for (ranking_id, user_id, name, prompt_id, messages, item_id, run_id, is_gold, gold_json,
         ids_json, ranks_json, has_tie, all_bad, skipped, rationale, demo_id, shown_at,
         submitted_at, supersedes, superseded_by, suggested_json, scorer, accepted,
         active_seconds, adjudication_id, outcome, chosen,
         guidelines_version) in rows:
        candidate_ids = json.loads(ids_json)
        if run_id is None and candidate_ids:  # a vote stored before items existed
            run_id = db.execute("SELECT run_id FROM candidates WHERE id = ?",
                                [candidate_ids[0]]).fetchone()[0]
        gold_ranks = None
        if gold_json:
            if item_id not in gold_order:
                gold_order[item_id] = [r[0] for r in db.execute(
                    "SELECT c.id FROM candidates c JOIN items i ON c.prompt_id = i.prompt_id "
                    "AND c.run_id = i.run_id WHERE i.id = ? ORDER BY c.idx", [item_id])]
            by_id = dict(zip(gold_order[item_id], json.loads(gold_json)))
            gold_ranks = [by_id[c] for c in candidate_ids]
        records.append(RankingRecord(
            ranking_id=ranking_id, annotator=name if keep_annotator_names else pseudonym(user_id),
            prompt_id=prompt_id, prompt=json.loads(messages), item_id=item_id, source_run=run_id,
            is_gold=bool(is_gold), gold_ranks=gold_ranks, candidate_ids=candidate_ids,
            candidates=[texts[c] for c in candidate_ids],
            ranks=None if ranks_json is None else json.loads(ranks_json),
            has_tie=bool(has_tie), all_bad=bool(all_bad), skipped=bool(skipped),
            rationale=rationale, demonstration_id=demo_id,
            demonstration=None if demo_id is None else texts[demo_id],
            shown_at=shown_at, submitted_at=submitted_at, supersedes=supersedes,
            superseded_by=superseded_by,
            suggested_ranks=None if suggested_json is None else json.loads(suggested_json),
            suggestion_scorer=scorer, suggestion_accepted=None if accepted is None else
            bool(accepted), user_id=user_id, active_seconds=active_seconds,
            adjudication_id=adjudication_id, overruled=outcome == "discard" or (
                outcome == "vote" and chosen != ranking_id),
            guidelines_version=guidelines_version,
        ))
    return records


def labels(records: Iterable[RankingRecord]) -> list[RankingRecord]:
    """The records that are labels: latest versions, not skipped, not on gold items, not
    overruled by an adjudication."""
    return [r for r in latest(records) if not r.skipped and not r.is_gold and not r.overruled]
