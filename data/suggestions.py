"""Model suggestions: a ranking pre-filled from a reward model's stored scores.

When the project setting ``suggestions`` is on and one scorer has scored every candidate of an
item (``model_scores``), the task opens with the candidates ranked by that scorer. The
suggestion is pinned on the assignment the first time it is shown, so the stored vote records
exactly what the annotator started from: ``rankings.suggested_ranks`` / ``suggestion_scorer``,
and ``suggestion_accepted`` = 1 when the submitted ranks order the candidates as the
suggestion did, 0 when the annotator changed the order (or skipped, or gave no ranks), NULL
when no suggestion was shown. Exports carry the flag, so accepted suggestions can be told from
independent judgments.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import sqlite_utils

from data import settings, store


@dataclass(frozen=True)
class Suggestion:
    scorer: str
    """The scorer whose scores the ranks come from (``bt:<dir>``, ``armorm:<dir>``)."""
    ranks: tuple[int, ...]
    """Aligned with the candidate ids asked about; 1 = best, equal scores share a rank."""
    scores: tuple[float, ...]
    """The scores behind the ranks, aligned the same way."""


def ranks_from_scores(scores: Sequence[float]) -> list[int]:
    """Higher score = better rank; equal scores tie at the better rank (1, 2, 2, 4).

    >>> ranks_from_scores([0.1, 2.0, 0.1, -1.0])
    [2, 1, 2, 4]
    """
    return [1 + sum(other > s for other in scores) for s in scores]


def _weak_order(ranks: Sequence[int]) -> tuple[int, ...]:
    """Ranks renumbered 1, 2, 3, ... over their distinct values: [1, 3, 3] and [1, 2, 2] are
    the same judgment."""
    levels = {r: i + 1 for i, r in enumerate(sorted(set(ranks)))}
    return tuple(levels[r] for r in ranks)


def accepted_flag(suggested_ranks: Sequence[int] | None, submission) -> int | None:
    """``rankings.suggestion_accepted`` for a submission: None without a suggestion, 1 when its
    ranks order the candidates exactly as the suggestion did, else 0."""
    if suggested_ranks is None:
        return None
    if submission.skipped or submission.ranks is None:
        return 0
    return int(_weak_order(submission.ranks) == _weak_order(suggested_ranks))


def suggest_ranks(db: sqlite_utils.Database, candidate_ids: Sequence[int], *,
                  scorer: str | None = None) -> Suggestion | None:
    """Ranks for ``candidate_ids`` (in that order) from ``scorer``'s stored scores; with no
    scorer named, from the scorer that scored all of them most recently. None when no scorer
    (or not the one named) has scored every one of them."""
    ids = [int(c) for c in candidate_ids]
    if len(ids) < 2:
        return None
    marks = ",".join("?" * len(ids))
    if scorer is None:
        row = db.execute(
            f"SELECT scorer FROM model_scores WHERE candidate_id IN ({marks}) GROUP BY scorer "
            "HAVING COUNT(*) = ? ORDER BY MAX(created_at) DESC, scorer LIMIT 1",
            [*ids, len(set(ids))]).fetchone()
        if row is None:
            return None
        scorer = row[0]
    found = store.model_scores(db, scorer, ids)
    if len(found) < len(set(ids)):
        return None
    scores = [found[c].score for c in ids]
    return Suggestion(scorer, tuple(ranks_from_scores(scores)), tuple(scores))


def suggestion_for_assignment(db: sqlite_utils.Database, assignment_id: int
                              ) -> Suggestion | None:
    """The suggestion to pre-fill this task with, aligned with its shown candidate order.

    The first call with suggestions on pins the suggestion on the assignment (later calls, a
    reload, and the submission see the same one, even if the setting or the scores change
    meanwhile). None when suggestions are off and none was pinned, when the task was submitted
    without one, or when no scorer has scored every candidate.
    """
    row = db.execute("SELECT candidate_ids, suggestion, submitted_at FROM assignments "
                     "WHERE id = ?", [assignment_id]).fetchone()
    if row is None:
        return None
    ids_json, pinned, submitted_at = row
    if not pinned:
        if submitted_at is not None:  # its vote is stored: nothing is pre-filled from now on
            return None
        # Reads first: the write lock is taken only to pin a new suggestion.
        project = settings.project_settings(db)
        if not project.suggestions:
            return None
        suggestion = suggest_ranks(db, json.loads(ids_json), scorer=project.suggestion_scorer)
        if suggestion is None:
            return None
        with store.transaction(db):
            # Two tabs opening the task at once: the first pin wins, both show it.
            db.execute("UPDATE assignments SET suggestion = ? WHERE id = ? AND suggestion IS NULL",
                       [json.dumps({"scorer": suggestion.scorer, "ranks": list(suggestion.ranks),
                                    "scores": list(suggestion.scores)}), assignment_id])
            pinned = db.execute("SELECT suggestion FROM assignments WHERE id = ?",
                                [assignment_id]).fetchone()[0]
    value = json.loads(pinned)
    return Suggestion(value["scorer"], tuple(value["ranks"]), tuple(value["scores"]))
