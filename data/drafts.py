"""Drafts: an annotator's unfinished work on one assignment, kept server-side.

Ranks, the all-bad flag, the rationale and the written answer are saved as the annotator works
(the page saves on every change), so a reload, a crash or a restart of the app loses nothing.
Submitting the assignment (``data.labeling.submit_assignment``) or revising it
(``data.revisions.revise_submission``) deletes its draft in the same transaction as the vote.
A draft on an assignment that was already submitted is the work on a revision.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import sqlite_utils

from data import store
from data.labeling import LabelingError
from data.rankings import MAX_TEXT_CHARS



@dataclass(frozen=True)
class Draft:
    ranks: tuple[int | None, ...]
    """Aligned with the assignment's shown candidate order; None = not ranked yet."""
    all_bad: bool = False
    rationale: str = ""
    demonstration: str = ""
    """The annotator's own answer, as typed so far."""
    updated_at: float | None = None


def _owned_candidates(db, assignment_id: int, user_id: int) -> list[int]:
    row = db.execute("SELECT user_id, candidate_ids FROM assignments WHERE id = ?",
                     [assignment_id]).fetchone()
    if row is None or row[0] != user_id:
        raise LabelingError("this task is not assigned to you; reload the page")
    return json.loads(row[1])


def _check(draft: Draft, k: int) -> tuple[int | None, ...]:
    ranks = tuple(draft.ranks)
    if len(ranks) != k:
        raise LabelingError(f"a draft has one rank per candidate: expected {k}, got {len(ranks)}")
    for r in ranks:
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= k):
            raise LabelingError(f"draft ranks must be whole numbers between 1 and {k} or empty")
    for name, text in (("rationale", draft.rationale), ("your answer", draft.demonstration)):
        if not isinstance(text, str):
            raise LabelingError(f"{name} must be text")
        if len(text) > MAX_TEXT_CHARS:
            raise LabelingError(f"{name} is too long ({len(text)} characters; at most "
                                f"{MAX_TEXT_CHARS})")
    return ranks


def save_draft(db: sqlite_utils.Database, assignment_id: int, user_id: int, draft: Draft, *,
               now: float | None = None) -> Draft:
    """Replaces the assignment's draft; returns it as stored (with ``updated_at``)."""
    now = time.time() if now is None else now
    with store.transaction(db):
        ranks = _check(draft, len(_owned_candidates(db, assignment_id, user_id)))
        db.execute(
            "INSERT INTO drafts (assignment_id, user_id, ranks, all_bad, rationale, demonstration,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (assignment_id) DO UPDATE SET "
            "ranks = excluded.ranks, all_bad = excluded.all_bad, rationale = excluded.rationale, "
            "demonstration = excluded.demonstration, updated_at = excluded.updated_at",
            [assignment_id, user_id, json.dumps(list(ranks)), int(bool(draft.all_bad)),
             draft.rationale, draft.demonstration, now])
    return Draft(ranks, bool(draft.all_bad), draft.rationale, draft.demonstration, now)


def load_draft(db: sqlite_utils.Database, assignment_id: int, user_id: int) -> Draft | None:
    """The assignment's draft, or None when there is none (or it is someone else's)."""
    row = db.execute(
        "SELECT ranks, all_bad, rationale, demonstration, updated_at FROM drafts "
        "WHERE assignment_id = ? AND user_id = ?", [assignment_id, user_id]).fetchone()
    if row is None:
        return None
    ranks, all_bad, rationale, demonstration, updated_at = row
    return Draft(tuple(json.loads(ranks)), bool(all_bad), rationale or "", demonstration or "",
                 updated_at)


def clear_draft(db: sqlite_utils.Database, assignment_id: int) -> None:
    with store.transaction(db):
        db.execute("DELETE FROM drafts WHERE assignment_id = ?", [assignment_id])


def draft_ranks_for(candidate_ids: Sequence[int], ranks_by_candidate: dict[int, int]
                    ) -> tuple[int | None, ...]:
    """Ranks keyed by candidate id (as a suggestion or an earlier vote gives them) in the
    assignment's shown order, for pre-filling a draft."""
    return tuple(ranks_by_candidate.get(c) for c in candidate_ids)
