"""Revisions on a real SQLite file: a new row supersedes the old one, the log stays
append-only, and every reader (export, agreement, training pairs, counts, queue) sees only the
latest version."""

import json
import sqlite3

import pytest

from data import agreement, browser, export, labeling, revisions, store
from data.export import ExportConfig
from data.labeling import LabelingError, QueuePolicy
from data.scored_pairs import groups_from_rankings
from data.preferences import load_db_pairs
from data.rankings import validate_submission


@pytest.fixture
def db(tmp_path):
    return store.open_store(tmp_path / "r.db")


def _items(db, n_prompts=2, k=3):
    run_id = store.get_or_create_run(db, store.RunSettings("m", "vllm", k, 0.8, 0.9, 8, 0))
    for p in range(n_prompts):
        [prompt_id] = store.upsert_prompts(db, [([{"role": "user", "content": f"q{p}"}], "t",
                                                 str(p))])
        store.add_candidates(db, prompt_id, run_id,
                             [store.CandidateIn(f"answer {p}.{j}", 2, "stop") for j in range(k)])
    labeling.sync_items(db)
    return run_id


def _by_idx(db, assignment, ranks_by_idx):
    """Ranks in the assignment's shown order, from ranks given per candidate idx."""
    order = [c["id"] for c in labeling.item_candidates(db, assignment.item_id)]
    return [ranks_by_idx[order.index(c)] for c in assignment.candidate_ids]


def _label(db, user, ranks_by_idx, policy, now, **kw):
    a = labeling.next_assignment(db, user, policy, now=now)
    sub = validate_submission(a.candidate_ids, _by_idx(db, a, ranks_by_idx), **kw)
    return a, labeling.submit_assignment(db, a.id, user, sub, now=now + 1)


def _users(db, *names):
    return [labeling.add_user(db, n, "annotator", "x").id for n in names]


def test_a_revision_supersedes_the_vote_everywhere(db):
    _items(db, n_prompts=1)
    ann, bob = _users(db, "ann", "bob")
    policy = QueuePolicy(overlap=2)
    a, first = _label(db, ann, [1, 2, 3], policy, now=0)
    _label(db, bob, [3, 2, 1], policy, now=0)
    # Before: ann and bob disagree on every pair.
    assert browser.item_detail(db, a.item_id).disagreement == 1.0

    revised = revisions.revise_submission(
        db, first.ranking_id, ann, validate_submission(a.candidate_ids, _by_idx(db, a, [3, 2, 1]),
                                                       rationale="changed my mind"), now=10)
    assert revised.created and revised.pairs == 3

    # The old row is untouched and still append-only.
    old = db["rankings"].get(first.ranking_id)
    assert json.loads(old["ranks"]) == _by_idx(db, a, [1, 2, 3])
    assert db["rankings"].get(revised.ranking_id)["supersedes"] == first.ranking_id
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE rankings SET ranks = NULL WHERE id = ?", [first.ranking_id])
    assert db["rankings"].count == 3 and db["comparisons"].count == 9

    # Agreement: now both order the candidates alike.
    rows = labeling.rankings_for_agreement(db)
    assert sorted(r["annotator"] for r in rows) == ["ann", "bob"]
    assert agreement.pairwise_agreement(rows) == {("ann", "bob"): (3, 3)}
    assert db["item_stats"].get(a.item_id)["disagreement"] == 0.0
    assert browser.item_detail(db, a.item_id).disagreement == 0.0

    # Training pairs: the reward trainer's comparisons and REBEL's ranked groups.
    pairs = load_db_pairs(db).pairs
    assert len(pairs) == 6
    assert {p.source_id for p in pairs}.isdisjoint(
        {f"comparison:{r[0]}" for r in db.execute(
            "SELECT id FROM comparisons WHERE ranking_id = ?", [first.ranking_id])})
    [group] = groups_from_rankings(db)
    by_text = {c.text: c.reward for c in group.candidates}
    assert by_text == {"answer 0.0": 0.0, "answer 0.1": 0.5, "answer 0.2": 1.0}

    # Export: pairs only from the latest; the raw configuration keeps the history.
    records = export.read_rankings(db)
    assert [(r.ranking_id, r.superseded_by, r.supersedes) for r in records] == [
        (first.ranking_id, revised.ranking_id, None), (2, None, None),
        (revised.ranking_id, None, first.ranking_id)]
    selection = export.select_pairs(records, ExportConfig())
    assert {row.record.ranking_id for row in selection.rows} == {2, revised.ranking_id}
    assert all(row.agreement == 1.0 for row in selection.rows)
    built = export.build_export(db, ExportConfig(test_fraction=0))
    raw = built.rankings["train"]
    assert raw["superseded_by"] == [revised.ranking_id, None, None]
    assert built.preferences["train"].num_rows == 6
    assert built.stats["rankings"] == 2 and built.stats["revised"] == 1
    assert export.rankings_from_rows(raw) == records

    # Admin counts.
    assert {r["annotator"]: r["ranked"] for r in labeling.per_annotator_counts(db)} == {
        "ann": 1, "bob": 1}
    assert browser.vote_counts(db) == {"votes": 2, "labels": 2, "skips": 0, "comparisons": 6,
                                       "revisions": 1, "items": 1, "labeled_items": 1}
    assert len(labeling.submission_times(db)) == 2


def test_revising_is_idempotent_and_only_for_the_latest_own_recent_vote(db):
    _items(db, n_prompts=3)
    ann, bob = _users(db, "ann", "bob")
    policy = QueuePolicy()
    a, first = _label(db, ann, [1, 2, 3], policy, now=0)
    sub = validate_submission(a.candidate_ids, [1, 1, 1])
    with pytest.raises(LabelingError, match="not one of your submissions"):
        revisions.revise_submission(db, first.ranking_id, bob, sub)
    with pytest.raises(LabelingError, match="candidates differ"):
        revisions.revise_submission(
            db, first.ranking_id, ann,
            validate_submission(list(reversed(a.candidate_ids)), [1, 1, 1]))
    once = revisions.revise_submission(db, first.ranking_id, ann, sub, now=5)
    twice = revisions.revise_submission(db, first.ranking_id, ann, sub, now=5.1)  # double click
    assert (once.created, twice.created, twice.ranking_id) == (True, False, once.ranking_id)
    assert db["rankings"].count == 2
    # A revision of the revision chains on; the first row cannot be revised a second way.
    again = revisions.revise_submission(db, once.ranking_id, ann,
                                        validate_submission(a.candidate_ids, [3, 2, 1]), now=6)
    assert revisions.history(db, first.ranking_id) == [first.ranking_id, once.ranking_id,
                                                       again.ranking_id]
    [recent] = revisions.recent_submissions(db, ann)
    assert (recent.ranking_id, recent.revisions, recent.ranks) == (again.ranking_id, 2, [3, 2, 1])
    # Only the last `recent` submissions reopen.
    _label(db, ann, [1, 2, 3], policy, now=20)
    with pytest.raises(LabelingError, match="last 1 submissions"):
        revisions.revise_submission(db, again.ranking_id, ann, sub, recent=1)


def test_a_revised_skip_counts_towards_overlap_and_a_revised_label_frees_the_item(db):
    _items(db, n_prompts=1)
    ann, bob, cat = _users(db, "ann", "bob", "cat")
    policy = QueuePolicy(overlap=1)
    a = labeling.next_assignment(db, ann, policy, now=0)
    skip = labeling.submit_assignment(db, a.id, ann, validate_submission(
        a.candidate_ids, None, skipped=True), now=1)
    # Skipped: the item is open to bob.
    assert labeling.next_assignment(db, bob, policy, now=2) is not None
    b = labeling.next_assignment(db, bob, policy, now=2)
    labeling.submit_assignment(db, b.id, bob, validate_submission(b.candidate_ids, None,
                                                                  skipped=True), now=3)
    ranked = revisions.revise_submission(db, skip.ranking_id, ann, validate_submission(
        a.candidate_ids, [1, 2, 3]), now=4)
    assert labeling.next_assignment(db, cat, policy, now=5) is None  # ann's label fills it
    assert browser.vote_counts(db)["labels"] == 1
    revisions.revise_submission(db, ranked.ranking_id, ann, validate_submission(
        a.candidate_ids, None, skipped=True), now=6)
    assert labeling.next_assignment(db, cat, policy, now=7).item_id == a.item_id
    assert db["item_stats"].get(a.item_id)["labels"] == 0


def test_demonstrations_follow_the_latest_version(db):
    _items(db, n_prompts=1)
    [ann] = _users(db, "ann")
    a, first = _label(db, ann, [1, 2, 3], QueuePolicy(), now=0, demonstration="My answer.")
    same = revisions.revise_submission(db, first.ranking_id, ann, validate_submission(
        a.candidate_ids, _by_idx(db, a, [2, 1, 3]), demonstration="My answer."), now=2)
    assert (db["rankings"].get(same.ranking_id)["demonstration_id"]
            == db["rankings"].get(first.ranking_id)["demonstration_id"])
    new = revisions.revise_submission(db, same.ranking_id, ann, validate_submission(
        a.candidate_ids, _by_idx(db, a, [2, 1, 3]), demonstration="A better answer."), now=3)
    assert new.pairs == 3 + 3
    answers = [c[-1]["content"] for c in export.sft_conversations(db, "demonstrations")]
    assert answers == ["A better answer."]
    chosen = [c[-1]["content"] for c in export.sft_conversations(db, "chosen")]
    assert chosen == ["A better answer."]
