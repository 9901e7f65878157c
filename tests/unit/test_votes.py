"""The vote log's one write path (data/votes.py)."""

import re
from pathlib import Path

from data import labeling, store, votes
from data.rankings import Submission
from tests.labeling_fixtures import make_labeling_db

ROOT = Path(__file__).resolve().parents[2]


def test_only_the_vote_module_writes_votes():
    """Submissions, revisions, simulated annotators and benchmarks all append through
    data.votes; copying whole databases (data.merge) moves rows that already exist."""
    writers = set()
    for path in ROOT.glob("**/*.py"):
        parts = path.relative_to(ROOT).parts
        if parts[0] in ("tests", "build") or ".git" in parts:
            continue
        if re.search(r"INSERT\s+(OR\s+\w+\s+)?INTO\s+(rankings|comparisons)\b",
                     path.read_text(), re.IGNORECASE):
            writers.add(str(path.relative_to(ROOT)))
    assert writers == {"data/votes.py"}


def test_a_vote_appends_its_pairs_closes_its_assignment_and_is_stored_once(tmp_path):
    db = store.open_store(make_labeling_db(tmp_path / "r.db", n_prompts=1, k=3))
    ann = labeling.get_user(db, "ann")
    task = labeling.next_assignment(db, ann.id, labeling.QueuePolicy())
    db.execute("INSERT INTO drafts (assignment_id, user_id, ranks, updated_at) "
               "VALUES (?, ?, '[1, 2, 3]', 0)", [task.id, ann.id])
    ids = tuple(task.candidate_ids)
    vote = votes.Vote(submission_key=f"assignment:{task.id}", user_id=ann.id,
                      prompt_id=task.prompt_id, item_id=task.item_id, assignment_id=task.id,
                      submission=Submission(ids, (2, 1, 2)), demonstration_id=None,
                      shown_at=10.0, submitted_at=20.0)
    assert votes.stored_vote(db, vote.submission_key) is None
    with store.transaction(db):
        stored = votes.append_vote(db, vote)
    assert stored.created and stored.pairs == 3
    pairs = db.execute("SELECT chosen_id, rejected_id, tie FROM comparisons WHERE ranking_id = ? "
                       "ORDER BY chosen_id, rejected_id", [stored.ranking_id]).fetchall()
    best, tied_a, tied_b = ids[1], ids[0], ids[2]
    decided = sorted((c, r) for c, r, tie in pairs if not tie)
    assert decided == sorted([(best, tied_a), (best, tied_b)])
    assert [{c, r} for c, r, tie in pairs if tie] == [{tied_a, tied_b}]  # a tie has no side
    row = db.execute("SELECT has_tie, submitted_at, supersedes FROM rankings WHERE id = ?",
                     [stored.ranking_id]).fetchone()
    assert row == (1, 20.0, None)
    assert db.execute("SELECT submitted_at, skipped FROM assignments WHERE id = ?",
                      [task.id]).fetchone() == (20.0, 0)
    assert db.execute("SELECT COUNT(*) FROM drafts WHERE assignment_id = ?",
                      [task.id]).fetchone()[0] == 0
    again = votes.stored_vote(db, vote.submission_key)
    assert again == votes.Stored(stored.ranking_id, 3, created=False)
