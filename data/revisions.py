"""Revisions: an annotator reopens one of their last few submissions and changes it.

The vote log stays append-only. A revision is a new ``rankings`` row whose ``supersedes``
points at the row it replaces, with its own comparisons derived from it; the earlier row and
its comparisons stay as they were. A row that nothing supersedes is the latest version of its
vote: the ``latest_rankings`` and ``latest_comparisons`` views (``data.store``) are what every
reader of votes uses (exports' pairs, agreement, training pairs, admin counts). The
assignment's ``skipped`` flag follows the latest version, so the queue's overlap count does too.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import sqlite_utils

from data import store, votes
from data.labeling import LabelingError, _add_demonstration, active_time
from data.rankings import Submission
from data.votes import Stored

RECENT = 5
"""How many of their latest submissions an annotator may reopen."""


@dataclass(frozen=True)
class RecentSubmission:
    """The latest version of one of the annotator's submissions, as it can be reopened."""

    ranking_id: int
    """The row to pass to ``revise_submission``."""
    assignment_id: int
    item_id: int
    prompt_id: int
    messages: list[dict]
    candidate_ids: list[int]
    """In the order the annotator was shown."""
    texts: list[str]
    ranks: list[int] | None
    all_bad: bool
    skipped: bool
    rationale: str
    demonstration: str
    first_submitted_at: float
    submitted_at: float
    """When this version was stored (later than first_submitted_at once revised)."""
    revisions: int
    """How many times it has been revised."""
    suggested_ranks: list[int] | None


_RECENT = """
    SELECT r.id, r.assignment_id, r.item_id, r.prompt_id, p.messages, r.candidate_ids, r.ranks,
           r.all_bad, r.skipped, r.rationale, d.text, a.submitted_at, r.submitted_at,
           r.suggested_ranks
    FROM latest_rankings r JOIN assignments a ON a.id = r.assignment_id
    JOIN prompts p ON p.id = r.prompt_id LEFT JOIN candidates d ON d.id = r.demonstration_id
    WHERE r.user_id = ? ORDER BY a.submitted_at DESC, r.assignment_id DESC LIMIT ?
"""


def recent_submissions(db: sqlite_utils.Database, user_id: int, limit: int = RECENT
                       ) -> list[RecentSubmission]:
    """The annotator's last ``limit`` submissions (by first submission), newest first."""
    out = []
    for (ranking_id, assignment_id, item_id, prompt_id, messages, ids_json, ranks_json, all_bad,
         skipped, rationale, demonstration, first_at, at, suggested) in db.execute(
            _RECENT, [user_id, limit]).fetchall():
        ids = json.loads(ids_json)
        texts = dict(db.execute(
            f"SELECT id, text FROM candidates WHERE id IN ({','.join('?' * len(ids))})", ids))
        revisions = db.execute(
            "SELECT COUNT(*) FROM rankings WHERE assignment_id = ? AND supersedes IS NOT NULL",
            [assignment_id]).fetchone()[0]
        out.append(RecentSubmission(
            ranking_id, assignment_id, item_id, prompt_id, json.loads(messages), ids,
            [texts[c] for c in ids], None if ranks_json is None else json.loads(ranks_json),
            bool(all_bad), bool(skipped), rationale or "", demonstration or "", first_at, at,
            revisions, None if suggested is None else json.loads(suggested)))
    return out


def revise_submission(db: sqlite_utils.Database, ranking_id: int, user_id: int,
                      submission: Submission, *, now: float | None = None,
                      recent: int = RECENT, active_seconds: float | None = None) -> Stored:
    """Stores ``submission`` as the new version of the vote ``ranking_id``.

    Only the annotator's own latest version of one of their last ``recent`` submissions can be
    revised, with the candidates in the order they were shown. Idempotent: the same revision
    sent twice (a double click) stores one row, and the second call returns it with
    ``created=False``.

    ``active_seconds``, the time the page measured while revising, adds to the earlier
    version's: a vote's active time is all the time spent on it (unknown if either is).
    """
    now = time.time() if now is None else now
    mine = active_time(active_seconds, None, now)  # checked before anything is read
    key = f"revision:{ranking_id}"
    with store.transaction(db):
        old = db.execute(
            "SELECT user_id, prompt_id, item_id, assignment_id, candidate_ids, demonstration_id, "
            "shown_at, suggested_ranks, suggestion_scorer, active_seconds FROM rankings "
            "WHERE id = ?",
            [ranking_id]).fetchone()
        if old is None or old[0] != user_id:
            raise LabelingError("this is not one of your submissions; reload the page")
        (_, prompt_id, item_id, assignment_id, ids_json, old_demo, shown_at, suggested_json,
         scorer, old_active) = old
        done = votes.stored_vote(db, key)
        if done:
            return done
        if db.execute("SELECT 1 FROM rankings WHERE supersedes = ?", [ranking_id]).fetchone():
            raise LabelingError("this submission was revised since; reopen its latest version")
        if assignment_id is None:
            raise LabelingError("this vote was stored before revisions existed; it cannot be "
                                "revised")
        reopenable = {r[0] for r in db.execute(_RECENT, [user_id, recent])}
        if ranking_id not in reopenable:
            raise LabelingError(f"only your last {recent} submissions can be revised")
        if list(submission.candidate_ids) != json.loads(ids_json):
            raise LabelingError("the candidates differ from the ones you ranked; reload")

        demonstration_id = None
        if submission.demonstration:
            old_text = None if old_demo is None else db.execute(
                "SELECT text FROM candidates WHERE id = ?", [old_demo]).fetchone()[0]
            # An unchanged answer stays one candidate; a new one is a new demonstration.
            demonstration_id = (old_demo if old_text == submission.demonstration else
                                _add_demonstration(db, prompt_id, user_id,
                                                   submission.demonstration, now))
        return votes.append_vote(db, votes.Vote(
            submission_key=key, user_id=user_id, prompt_id=prompt_id, item_id=item_id,
            assignment_id=assignment_id, submission=submission,
            demonstration_id=demonstration_id, shown_at=shown_at, submitted_at=now,
            supersedes=ranking_id,
            suggested_ranks=None if suggested_json is None else json.loads(suggested_json),
            suggestion_scorer=scorer,
            active_seconds=None if mine is None or old_active is None else
            active_time(old_active + mine, shown_at, now)))


def history(db: sqlite_utils.Database, ranking_id: int) -> list[int]:
    """Every version of the vote that ``ranking_id`` belongs to, oldest first."""
    row = db.execute("SELECT assignment_id FROM rankings WHERE id = ?", [ranking_id]).fetchone()
    if row is None:
        return []
    if row[0] is None:
        return [ranking_id]
    return [r[0] for r in db.execute(
        "SELECT id FROM rankings WHERE assignment_id = ? ORDER BY id", [row[0]])]
