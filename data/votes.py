"""The vote log's one write path: every ``rankings`` row and its derived ``comparisons``.

A vote is appended, never edited: a first submission (``data.labeling.submit_assignment``)
and a revision (``data.revisions.revise_submission``, a new row whose ``supersedes`` points at
the one it replaces) both come here, as do the simulated annotators and the benchmarks, which
submit through those two. Each vote carries a ``submission_key`` that makes it idempotent: the
same key sent twice (a double click, a retried request) stores one row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlite_utils

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
        "suggestion_accepted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [vote.submission_key, vote.user_id, vote.prompt_id, vote.item_id, vote.assignment_id,
         json.dumps(list(submission.candidate_ids)),
         None if submission.ranks is None else json.dumps(list(submission.ranks)),
         int(submission.has_tie), int(submission.all_bad), int(submission.skipped),
         submission.rationale or None, vote.demonstration_id, vote.shown_at,
         vote.submitted_at, vote.supersedes,
         None if vote.suggested_ranks is None else json.dumps(list(vote.suggested_ranks)),
         vote.suggestion_scorer, accepted_flag(vote.suggested_ranks, submission)],
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
