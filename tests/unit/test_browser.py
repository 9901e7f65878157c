"""The admin's item browser on a real SQLite file with an explicit clock: statuses, filters,
paging, one item's detail, tags, and the per-item stats the triggers keep."""

import json

import pytest

from data import agreement, browser, labeling, revisions, store
from data.browser import ItemFilter
from data.labeling import LabelingError
from data.rankings import validate_submission

A, B, C = 0, 1, 2
NOW = 100.0


def _assign(db, item_id, user_id, now=0.0, timeout=60.0):
    """Hands an item to a user with candidates in idx order (the queue's own bookkeeping)."""
    ids = [c["id"] for c in labeling.item_candidates(db, item_id)]
    db.execute("INSERT INTO assignments (item_id, user_id, candidate_ids, shown_at, expires_at) "
               "VALUES (?, ?, ?, ?, ?)", [item_id, user_id, json.dumps(ids), now, now + timeout])
    return db.execute("SELECT last_insert_rowid()").fetchone()[0], ids


def _rank(db, item_id, user_id, ranks, **kw):
    assignment_id, ids = _assign(db, item_id, user_id)
    sub = validate_submission(ids, ranks, **kw)
    return labeling.submit_assignment(db, assignment_id, user_id, sub, now=10.0)


@pytest.fixture
def world(tmp_path):
    db = store.open_store(tmp_path / "r.db")
    run_id = store.get_or_create_run(db, store.RunSettings("m", "vllm", 3, 0.8, 0.9, 8, 0))
    other_run = store.get_or_create_run(db, store.RunSettings("m2", "vllm", 3, 0.8, 0.9, 8, 0))
    for p in range(6):
        [prompt_id] = store.upsert_prompts(
            db, [([{"role": "system", "content": "sys"},
                   {"role": "user", "content": f"Question {p}: " + "long " * 60}], "t", str(p))])
        store.add_candidates(db, prompt_id, run_id if p < 5 else other_run,
                             [store.CandidateIn(f"answer {p}.{j}", 2, "length" if j == 2 else
                                                "stop") for j in range(3)])
    labeling.sync_items(db)
    users = {n: labeling.add_user(db, n, "annotator", "x").id for n in ("ann", "bob", "cat")}
    items = [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]
    i1, i2, i3, i4, i5, i6 = items
    for name, ranks in (("ann", [1, 2, 3]), ("bob", [1, 2, 3]), ("cat", [2, 1, 3])):
        _rank(db, i1, users[name], ranks)  # A/B disputed by cat
    _rank(db, i2, users["ann"], [1, 2, 3])
    _rank(db, i2, users["bob"], [3, 2, 1])  # every pair disputed
    _rank(db, i3, users["ann"], [1, 1, 3])  # one label
    _assign(db, i4, users["cat"], now=NOW - 10)  # held right now
    _rank(db, i5, users["bob"], None, skipped=True)  # skips are not labels
    _assign(db, i5, users["cat"], now=NOW - 100)  # ...and this one timed out
    gold = labeling.add_gold_item(db, [{"role": "user", "content": "2+2?"}], ["4", "5", "3"],
                                  [1, 3, 2])
    return db, users, (i1, i2, i3, i4, i5, i6, gold), other_run


def _ids(db, **kw):
    page = browser.browse_items(db, ItemFilter(**kw), page_size=100, now=NOW)
    assert page.total == len(page.rows)
    return [r.item_id for r in page.rows]


def test_statuses(world):
    db, _, (i1, i2, i3, i4, i5, i6, gold), _ = world
    assert _ids(db, status="unassigned") == [i5, i6, gold]
    assert _ids(db, status="in_progress") == [i4]
    assert _ids(db, status="done") == [i1, i2, i3]
    assert _ids(db, status="overlap_reached", overlap=2) == [i1, i2]
    assert _ids(db, status="overlap_reached", overlap=3) == [i1]
    assert _ids(db, status="disagreement") == [i1, i2]
    assert _ids(db, status="disagreement", min_disagreement=0.5) == [i2]
    assert _ids(db, status="disagreement", order="disagreement") == [i2, i1]


def test_filters_compose_and_pages_count(world):
    db, users, (i1, i2, i3, i4, i5, i6, gold), other_run = world
    assert _ids(db, annotator="bob") == [i1, i2, i5]
    assert _ids(db, annotator="bob", status="done") == [i1, i2]
    assert _ids(db, annotator="nobody") == []
    assert _ids(db, run_id=other_run) == [i6]
    assert _ids(db, gold=True) == [gold] and gold not in _ids(db, gold=False)
    assert browser.tag_items(db, [i2, i3], "code") == 2
    assert browser.tag_items(db, [i2], "code") == 0
    browser.tag_items(db, [i2], "tables")
    assert _ids(db, tag="code") == [i2, i3]
    assert _ids(db, tag="code", status="disagreement") == [i2]
    assert browser.untag_items(db, [i3], "code") == 1
    assert browser.tag_counts(db) == [("code", 1), ("tables", 1)]
    with pytest.raises(LabelingError, match="no item 999"):
        browser.tag_items(db, [999], "x")
    with pytest.raises(LabelingError, match="printable"):
        browser.tag_items(db, [i1], "  ")

    first = browser.browse_items(db, page=0, page_size=3, now=NOW)
    last = browser.browse_items(db, page=2, page_size=3, now=NOW)
    assert (first.total, first.pages, [r.item_id for r in last.rows]) == (7, 3, [gold])
    row = first.rows[1]
    assert (row.item_id, row.labels, row.annotators, row.tags, row.disagreement) == (
        i2, 2, ("ann", "bob"), ("code", "tables"), 1.0)
    assert row.prompt_preview.startswith("Question 1: long") and len(row.prompt_preview) == 160
    assert browser.browse_items(db, page=0, page_size=7, now=NOW).rows[3].holders == 1  # i4
    with pytest.raises(LabelingError, match="status must be one of"):
        ItemFilter(status="finished")


def test_item_detail_puts_scores_beside_ranks_and_shows_disagreement(world):
    db, users, (i1, *_), _ = world
    ids = [c["id"] for c in labeling.item_candidates(db, i1)]
    store.put_model_scores(db, [store.ModelScore(c, "bt:/rm", s)
                                for c, s in zip(ids, [0.1, 0.9, -2.0])])
    detail = browser.item_detail(db, i1, now=NOW)
    assert [c.human_ranks for c in detail.candidates] == [
        {"ann": 1, "bob": 1, "cat": 2}, {"ann": 2, "bob": 2, "cat": 1}, {"ann": 3, "bob": 3,
                                                                         "cat": 3}]
    assert [c.rank_spread for c in detail.candidates] == [1, 1, 0]
    assert [c.model_ranks for c in detail.candidates] == [{"bt:/rm": 2}, {"bt:/rm": 1},
                                                          {"bt:/rm": 3}]
    assert detail.candidates[2].finish_reason == "length"
    # (A, B): of the 3 pairs of judgments only ann/bob agree; (A, C) and (B, C): all 3 agree.
    assert (detail.judged_pairs, detail.agreeing_pairs) == (9, 7)
    assert detail.disagreement == pytest.approx(2 / 9)
    assert detail.disputed_pairs == [(ids[A], ids[B])]
    assert db["item_stats"].get(i1)["disagreement"] == pytest.approx(2 / 9)
    # The same measure as the annotator-pair agreement over this item.
    rows = [r for r in labeling.rankings_for_agreement(db) if r["item_id"] == i1]
    per_pair = agreement.pairwise_agreement(rows)
    assert sum(a for a, _ in per_pair.values()) == 7 and sum(t for _, t in per_pair.values()) == 9
    assert detail.scorers == ["bt:/rm"] and detail.messages[-1]["role"] == "user"
    assert browser.item_detail(db, 12345) is None


def test_item_detail_lists_every_version_with_rationale_and_answer(world):
    db, users, (_, _, i3, *_), _ = world
    [first] = [r for r in revisions.recent_submissions(db, users["ann"]) if r.item_id == i3]
    revised = revisions.revise_submission(db, first.ranking_id, users["ann"], validate_submission(
        first.candidate_ids, [1, 2, 3], rationale="A is exact", demonstration="Mine."), now=20)
    detail = browser.item_detail(db, i3, now=NOW)
    assert [(r.ranking_id, r.superseded_by, r.rationale, r.demonstration)
            for r in detail.rankings] == [(first.ranking_id, revised.ranking_id, None, None),
                                          (revised.ranking_id, None, "A is exact", "Mine.")]
    assert [c.human_ranks for c in detail.candidates] == [{"ann": 1}, {"ann": 2}, {"ann": 3}]
    assert detail.disagreement is None


def test_item_stats_are_backfilled_when_an_old_store_is_migrated(tmp_path):
    path = tmp_path / "old.db"
    old = store.open_store(path, migrate_to=20)  # before the item stats
    run_id = store.get_or_create_run(old, store.RunSettings("m", "vllm", 2, 0.8, 0.9, 8, 0))
    [prompt_id] = store.upsert_prompts(old, [([{"role": "user", "content": "q"}], "t", None)])
    a, b = store.add_candidates(old, prompt_id, run_id, [store.CandidateIn("x", 1, "stop"),
                                                         store.CandidateIn("y", 1, "stop")])
    labeling.sync_items(old)
    for name, (chosen, rejected) in (("ann", (a, b)), ("bob", (b, a))):
        user = labeling.add_user(old, name, "annotator", "x").id
        ranking = old.execute(
            "INSERT INTO rankings (user_id, prompt_id, item_id, candidate_ids, ranks, "
            "submitted_at) VALUES (?, ?, 1, ?, ?, 0)",
            [user, prompt_id, json.dumps([a, b]), json.dumps([1, 2] if chosen == a else [2, 1])]
        ).lastrowid
        old.execute("INSERT INTO comparisons (ranking_id, prompt_id, chosen_id, rejected_id, tie)"
                    " VALUES (?, ?, ?, ?, 0)", [ranking, prompt_id, chosen, rejected])
    old.close()
    db = store.open_store(path)
    stats = db["item_stats"].get(1)
    assert (stats["labels"], stats["judged_pairs"], stats["agreeing_pairs"],
            stats["disagreement"]) == (2, 1, 0, 1.0)
