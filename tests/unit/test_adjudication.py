"""Adjudication over a real SQLite store: the review queue, decisions as their own append-only
records, the labels rule they feed (data/votes.py) and the item statuses exports carry."""

from __future__ import annotations

import json
import random

import pytest

from data import adjudication, labeling, store
from data.rankings import validate_submission
from data.votes import LABEL_RANKINGS, labels, read_rankings
from tests.labeling_fixtures import make_labeling_db

USERS = (("ann", "annotator"), ("bob", "annotator"), ("cat", "annotator"),
         ("rev", "annotator"), ("root", "admin"))


def rank_all(db, name, wanted, *, active=None):
    """``name`` ranks every item it is handed; ``wanted[item_id]`` gives ranks by candidate
    idx (default: idx order). Returns {item_id: ranking id}."""
    user = labeling.get_user(db, name)
    policy = labeling.QueuePolicy(overlap=3)
    out = {}
    while (task := labeling.next_assignment(db, user.id, policy,
                                            rng=random.Random(name))) is not None:
        idx = dict(db.execute("SELECT id, idx FROM candidates"))
        by_idx = wanted.get(task.item_id, [1, 2, 3])
        ranks = [by_idx[idx[c]] for c in task.candidate_ids]
        stored = labeling.submit_assignment(db, task.id, user.id,
                                            validate_submission(task.candidate_ids, ranks))
        out[task.item_id] = stored.ranking_id
    return out


@pytest.fixture
def db(tmp_path):
    db = store.open_store(make_labeling_db(tmp_path / "adj.db", n_prompts=3, k=3, users=USERS))
    yield db
    db.close()


def label_ids(db):
    python = sorted(r.ranking_id for r in labels(read_rankings(db)))
    sql = sorted(r[0] for r in db.execute(f"SELECT id FROM {LABEL_RANKINGS}"))
    assert python == sql  # the rule is the same in Python and SQL
    return python


def test_queue_lowest_agreement_first_with_each_vote_in_its_letters(db):
    items = [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]
    one, two, three = items
    # Item one: ann and bob reverse each other; item two: cat swaps only the bottom pair.
    votes = {"ann": rank_all(db, "ann", {}),
             "bob": rank_all(db, "bob", {one: [3, 2, 1]}),
             "cat": rank_all(db, "cat", {one: [3, 2, 1], two: [1, 3, 2]})}
    queue = adjudication.review_queue(db)
    assert [q.item_id for q in queue] == [one, two]
    assert queue[0].agreement < queue[1].agreement < 1.0
    assert adjudication.queue_size(db) == 2
    first = queue[0]
    assert [c.number for c in first.candidates] == [1, 2, 3]
    by_name = {v.annotator: v for v in first.votes}
    assert set(by_name) == {"ann", "bob", "cat"}
    shown = db.execute("SELECT candidate_ids FROM rankings WHERE id = ?",
                       [votes["bob"][one]]).fetchone()[0]
    bob = by_name["bob"]
    # Letters follow the order bob saw; his order reads best first in those letters.
    assert bob.letters == {cid: "ABC"[i] for i, cid in enumerate(json.loads(shown))}
    best = [c.id for c in first.candidates][2]
    assert bob.order.startswith(bob.letters[best] + " > ")
    assert bob.wall_seconds is not None and bob.wall_seconds >= 0
    assert bob.active_seconds is None  # not measured by this path
    assert bob.too_fast  # ranked in no time at all: its wall time says so


def test_decisions_settle_labels_and_statuses(db):
    one, two, three = [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]
    votes = {"ann": rank_all(db, "ann", {}), "bob": rank_all(db, "bob", {one: [3, 2, 1]})}
    everything = label_ids(db)
    assert len(everything) == 6
    statuses = adjudication.item_statuses(read_rankings(db))
    assert statuses == {one: "unresolved", two: "unanimous", three: "unanimous"}

    root = labeling.get_user(db, "root")
    rev = labeling.get_user(db, "rev")
    ann = labeling.get_user(db, "ann")
    # Only admins and named reviewers decide; refusals store nothing.
    with pytest.raises(adjudication.AdjudicationError, match="reviewers"):
        adjudication.record_decision(db, item_id=one, reviewer_id=rev.id, outcome="discard")
    with pytest.raises(adjudication.AdjudicationError, match="not a current ranked vote"):
        adjudication.record_decision(db, item_id=one, reviewer_id=root.id, outcome="vote",
                                     ranking_id=votes["ann"][two])
    with pytest.raises(adjudication.AdjudicationError, match="one of"):
        adjudication.record_decision(db, item_id=one, reviewer_id=root.id, outcome="maybe")
    assert adjudication.decisions(db) == []

    adjudication.set_reviewer(db, "rev", True)
    assert adjudication.reviewers(db) == ["rev"]
    assert adjudication.can_review(db, rev.id) and not adjudication.can_review(db, ann.id)
    first = adjudication.record_decision(db, item_id=one, reviewer_id=rev.id, outcome="vote",
                                         ranking_id=votes["bob"][one], note="bob is right")
    # The decision names bob's vote: ann's vote on item one is overruled, nothing else moves.
    assert label_ids(db) == sorted(set(everything) - {votes["ann"][one]})
    records = read_rankings(db)
    overruled = [r.ranking_id for r in records if r.overruled]
    assert overruled == [votes["ann"][one]]
    assert adjudication.item_statuses(records)[one] == "adjudicated"
    assert adjudication.review_queue(db) == []  # decided items leave the queue

    # Append-only: a later decision replaces the earlier one for labels; both stay.
    adjudication.record_decision(db, item_id=one, reviewer_id=root.id, outcome="discard")
    assert label_ids(db) == sorted(set(everything) - {votes["ann"][one], votes["bob"][one]})
    adjudication.record_decision(db, item_id=one, reviewer_id=root.id, outcome="votes_stand")
    assert label_ids(db) == everything
    history = adjudication.decisions(db, one)
    assert [(d.id, d.reviewer, d.outcome) for d in history][0] == (first, "rev", "vote")
    assert [d.outcome for d in history] == ["vote", "discard", "votes_stand"]
    assert history[0].note == "bob is right" and history[0].ranking_id == votes["bob"][one]


def test_gold_items_with_votes_against_gold_are_queued(db):
    gold = labeling.add_gold_item(db, [{"role": "user", "content": "2 + 2?"}],
                                  ["4", "5", "22"], [1, 2, 3])
    ann = labeling.get_user(db, "ann")
    policy = labeling.QueuePolicy(overlap=1, gold_rate=1.0)
    task = labeling.next_assignment(db, ann.id, policy)
    assert task.item_id == gold
    idx = dict(db.execute("SELECT id, idx FROM candidates"))
    ranks = [[3, 1, 2][idx[c]] for c in task.candidate_ids]  # "5" best: against gold
    labeling.submit_assignment(db, task.id, ann.id, validate_submission(task.candidate_ids, ranks))
    [queued] = adjudication.review_queue(db)
    assert queued.item_id == gold and queued.is_gold
    assert queued.agreement == pytest.approx(1 / 3)  # of 3 gold pairs, only "22" < "5"
    assert [c.gold_rank for c in queued.candidates] == [1, 2, 3]


def test_note_limit_and_unknown_item(db):
    root = labeling.get_user(db, "root")
    with pytest.raises(adjudication.AdjudicationError, match="no item"):
        adjudication.record_decision(db, item_id=999, reviewer_id=root.id, outcome="discard")
    with pytest.raises(adjudication.AdjudicationError, match="limit"):
        adjudication.record_decision(db, item_id=1, reviewer_id=root.id, outcome="discard",
                                     note="x" * 20_001)
    with pytest.raises(adjudication.AdjudicationError, match="no user"):
        adjudication.set_reviewer(db, "nobody", True)


def test_exports_mark_each_item_and_carry_weights(db):
    from data import export

    one, two, three = [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]
    votes = {"ann": rank_all(db, "ann", {}), "bob": rank_all(db, "bob", {one: [3, 2, 1]}),
             "cat": rank_all(db, "cat", {two: [2, 1, 3]})}
    root = labeling.get_user(db, "root")
    adjudication.record_decision(db, item_id=one, reviewer_id=root.id, outcome="vote",
                                 ranking_id=votes["ann"][one])
    built = export.build_export(db, export.ExportConfig(test_fraction=0.0))
    raw = built.rankings["train"]
    status = dict(zip(raw["item_id"], raw["item_status"]))
    assert status == {one: "adjudicated", two: "unresolved", three: "unanimous"}
    overruled = {rid for rid, o in zip(raw["ranking_id"], raw["overruled"]) if o}
    assert overruled == {votes["bob"][one], votes["cat"][one]}  # all but the one named
    assert all(0.0 <= w <= 1.0 for w in raw["annotator_weight"])
    pairs = built.preferences["train"]
    # bob's overruled vote gives no pairs; every pair row says its item's status.
    assert votes["bob"][one] not in set(pairs["ranking_id"])
    assert set(pairs["item_status"]) == {"adjudicated", "unresolved", "unanimous"}
    assert export.rankings_from_rows(raw.to_list()) == read_rankings(db)
    assert built.stats["item_statuses"] == {"unanimous": 1, "adjudicated": 1, "unresolved": 1}
    assert "1 unanimous, 1\n  adjudicated by a reviewer, 1 unresolved" in built.card


def test_one_queued_item_is_found_alone(db):
    one, two, _ = [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]
    rank_all(db, "ann", {})
    rank_all(db, "bob", {one: [3, 2, 1]})
    assert adjudication.queued_item(db, two) is None  # its votes agree
    found = adjudication.queued_item(db, one)
    assert found == adjudication.review_queue(db)[0]
    root = labeling.get_user(db, "root")
    adjudication.record_decision(db, item_id=one, reviewer_id=root.id, outcome="votes_stand")
    assert adjudication.queued_item(db, one) is None and adjudication.queued_item(db, 99) is None


def test_review_functions_are_for_admins_and_named_reviewers(tmp_path):
    from labeler import review_tab
    from labeler.handlers import BadRequest, LabelerService, PermissionDenied

    path = make_labeling_db(tmp_path / "svc.db", n_prompts=2, k=3, users=USERS)
    svc = LabelerService(path, policy=labeling.QueuePolicy(overlap=2), autogenerate=False)
    for call in (lambda: review_tab.queue_choices(svc, "ann"),
                 lambda: review_tab.item_view(svc, "ann", 1),
                 lambda: review_tab.decide(svc, "ann", 1, "discard", None, "")):
        with pytest.raises(PermissionDenied, match="admins and named reviewers"):
            call()
    with pytest.raises(PermissionDenied, match="admins only"):
        review_tab.set_reviewer(svc, "rev", "ann", True)
    assert review_tab.set_reviewer(svc, "root", "rev", True) == "rev is now a reviewer."
    assert review_tab.queue_choices(svc, "rev")[1] == []  # nothing disputed yet
    assert review_tab.decide(svc, "rev", 1, "vote", None, "") == (
        "Not recorded: choose the vote to keep.")
    with pytest.raises(BadRequest, match="item is one from the list"):
        review_tab.item_view(svc, "rev", "1; DROP TABLE items")
    assert review_tab.set_reviewer(svc, "root", "nobody", True).startswith("Not changed")
