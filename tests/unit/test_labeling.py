"""The labeling queue on a real SQLite file, with an explicit clock."""

import random

import pytest

from data import labeling, store
from data.labeling import LabelingError, QueuePolicy
from data.rankings import validate_submission


@pytest.fixture
def db(tmp_path):
    return store.open_store(tmp_path / "r.db")


def _generated_items(db, n_prompts=3, k=3):
    run_id = store.get_or_create_run(db, store.RunSettings("m", "vllm", k, 0.8, 0.9, 8, 0))
    for p in range(n_prompts):
        [prompt_id] = store.upsert_prompts(db, [([{"role": "user", "content": f"q{p}"}], "t",
                                                 str(p))])
        store.add_candidates(db, prompt_id, run_id,
                             [store.CandidateIn(f"answer {p}.{j}", 2, "stop") for j in range(k)])
    return labeling.sync_items(db)


def _users(db, *names):
    return [labeling.add_user(db, name, "annotator", "x").id for name in names]


def _rank_in_order(assignment):
    return validate_submission(assignment.candidate_ids, list(range(1, len(assignment.texts) + 1)))


def test_items_appear_once_all_k_candidates_exist(db):
    run_id = store.get_or_create_run(db, store.RunSettings("m", "vllm", 2, 0.8, 0.9, 8, 0))
    [p] = store.upsert_prompts(db, [([{"role": "user", "content": "q"}], "t", None)])
    assert labeling.sync_items(db) == 0 and db["items"].count == 0
    store.add_candidates(db, p, run_id, [store.CandidateIn("a", 1, "stop"),
                                         store.CandidateIn("b", 1, "stop")])
    # The item exists as soon as its candidates do, before anyone asks for a task.
    assert db.execute("SELECT prompt_id, run_id FROM items").fetchall() == [(p, run_id)]
    assert labeling.sync_items(db) == 0


def test_overlap_one_hands_each_item_to_one_annotator(db):
    _generated_items(db, n_prompts=2)
    ann, bob, cat = _users(db, "ann", "bob", "cat")
    policy = QueuePolicy(overlap=1)
    a = labeling.next_assignment(db, ann, policy, now=0)
    b = labeling.next_assignment(db, bob, policy, now=0)
    assert a.item_id != b.item_id
    assert labeling.next_assignment(db, cat, policy, now=0) is None  # both in progress
    # A refresh resumes the same assignment, same shown order.
    assert labeling.next_assignment(db, ann, policy, now=10) == a


def test_shown_order_is_shuffled_and_stored(db):
    _generated_items(db, n_prompts=1, k=6)
    [ann] = _users(db, "ann")
    a = labeling.next_assignment(db, ann, QueuePolicy(), now=0, rng=random.Random(3))
    by_idx = [c["id"] for c in labeling.item_candidates(db, a.item_id)]
    assert sorted(a.candidate_ids) == sorted(by_idx) and a.candidate_ids != by_idx
    assert [a.texts[a.candidate_ids.index(c)] for c in by_idx] == [
        f"answer 0.{j}" for j in range(6)]


def test_overlap_two_never_repeats_an_item_for_one_annotator(db):
    _generated_items(db, n_prompts=2)
    ann, bob, cat = _users(db, "ann", "bob", "cat")
    policy = QueuePolicy(overlap=2)
    seen = {ann: [], bob: [], cat: []}
    for _ in range(3):
        for user in (ann, bob, cat):
            a = labeling.next_assignment(db, user, policy, now=0)
            if a:
                seen[user].append(a.item_id)
                labeling.submit_assignment(db, a.id, user, _rank_in_order(a), now=1)
    assert all(len(items) == len(set(items)) for items in seen.values())
    per_item = [sum(item in items for items in seen.values()) for item in (1, 2)]
    assert per_item == [2, 2]
    assert labeling.progress(db, cat, policy, now=2)[1] == 0


def test_abandoned_items_return_after_the_timeout(db):
    _generated_items(db, n_prompts=1)
    ann, bob = _users(db, "ann", "bob")
    policy = QueuePolicy(overlap=1, timeout_s=60)
    first = labeling.next_assignment(db, ann, policy, now=0)
    assert labeling.next_assignment(db, bob, policy, now=59) is None
    taken = labeling.next_assignment(db, bob, policy, now=61)
    assert taken.item_id == first.item_id
    # ann's stale assignment is not resumed while bob holds the item.
    assert labeling.next_assignment(db, ann, policy, now=62) is None


def test_skips_do_not_count_towards_overlap(db):
    _generated_items(db, n_prompts=1)
    ann, bob = _users(db, "ann", "bob")
    policy = QueuePolicy(overlap=1)
    a = labeling.next_assignment(db, ann, policy, now=0)
    labeling.submit_assignment(db, a.id, ann, validate_submission(a.candidate_ids, None,
                                                                  skipped=True), now=1)
    assert labeling.next_assignment(db, ann, policy, now=2) is None  # never twice to ann
    assert labeling.next_assignment(db, bob, policy, now=2).item_id == a.item_id


def test_submission_stores_vote_and_pairs_once(db):
    _generated_items(db, n_prompts=1, k=4)
    [ann] = _users(db, "ann")
    a = labeling.next_assignment(db, ann, QueuePolicy(), now=5)
    sub = validate_submission(a.candidate_ids, [2, 1, 1, 4], rationale="B and C equally good",
                              demonstration="My own, better answer.")
    first = labeling.submit_assignment(db, a.id, ann, sub, now=9)
    again = labeling.submit_assignment(db, a.id, ann, sub, now=9.1)  # double click
    assert (first.created, again.created, again.ranking_id) == (True, False, first.ranking_id)
    assert first.pairs == 6 + 4
    assert db["rankings"].count == 1 and db["comparisons"].count == 10
    ranking = db["rankings"].get(first.ranking_id)
    assert (ranking["has_tie"], ranking["shown_at"], ranking["submitted_at"]) == (1, 5, 9)
    demo = db["candidates"].get(ranking["demonstration_id"])
    assert (demo["text"], demo["author_id"], demo["finish_reason"]) == (
        "My own, better answer.", ann, "human")
    ties = db.execute("SELECT chosen_id, rejected_id FROM comparisons WHERE tie = 1").fetchall()
    assert ties == [(a.candidate_ids[1], a.candidate_ids[2])]
    assert labeling.sync_items(db) == 0  # a demonstration is not an item to rank


def test_submissions_are_checked_against_the_assignment(db):
    _generated_items(db, n_prompts=1)
    ann, bob = _users(db, "ann", "bob")
    a = labeling.next_assignment(db, ann, QueuePolicy(), now=0)
    with pytest.raises(LabelingError, match="not assigned to you"):
        labeling.submit_assignment(db, a.id, bob, _rank_in_order(a))
    reordered = validate_submission(list(reversed(a.candidate_ids)), [1, 2, 3])
    with pytest.raises(LabelingError, match="candidates changed"):
        labeling.submit_assignment(db, a.id, ann, reordered)
    assert db["rankings"].count == 0


def test_gold_items_are_mixed_in_and_shown_beyond_the_overlap(db):
    _generated_items(db, n_prompts=2)
    gold_id = labeling.add_gold_item(db, [{"role": "user", "content": "2+2?"}],
                                     ["4", "5", "22"], [1, 2, 3])
    ann, bob = _users(db, "ann", "bob")
    always_gold = QueuePolicy(overlap=1, gold_rate=1.0)
    for user in (ann, bob):
        a = labeling.next_assignment(db, user, always_gold, now=0)
        assert (a.item_id, a.is_gold) == (gold_id, True)
        labeling.submit_assignment(db, a.id, user, _rank_in_order(a), now=1)
    # Gold used up for ann: the next one is a regular item.
    assert not labeling.next_assignment(db, ann, always_gold, now=2).is_gold
    rows = [r for r in labeling.rankings_for_agreement(db) if r["gold_ranks"]]
    assert [r["annotator"] for r in rows] == ["ann", "bob"]
    with pytest.raises(LabelingError, match="already has a gold item"):
        labeling.add_gold_item(db, [{"role": "user", "content": "2+2?"}], ["4", "5"], [1, 2])


def test_users_are_unique_and_roles_checked(db):
    labeling.add_user(db, "ann", "admin", "h")
    with pytest.raises(LabelingError, match="already exists"):
        labeling.add_user(db, "ann", "annotator", "h")
    with pytest.raises(LabelingError, match="role must be"):
        labeling.add_user(db, "bob", "owner", "h")
    with pytest.raises(LabelingError, match="without spaces"):
        labeling.add_user(db, "bob smith", "annotator", "h")
    assert labeling.get_user(db, "ann").is_admin


def test_a_late_submission_is_kept_only_while_the_overlap_has_room(db):
    _generated_items(db, n_prompts=2)
    ann, bob = _users(db, "ann", "bob")
    policy = QueuePolicy(overlap=1, timeout_s=10)
    late = labeling.next_assignment(db, ann, policy, now=0)
    # Expired with nobody else on the item: still accepted (the annotator's work is kept).
    stored = labeling.submit_assignment(db, late.id, ann, _rank_in_order(late), overlap=1,
                                        now=50)
    assert stored.created
    # Expired and handed to bob, who ranks it: ann's late vote would be a second ranking.
    mine = labeling.next_assignment(db, ann, policy, now=60)
    taken = labeling.next_assignment(db, bob, policy, now=80)
    assert taken.item_id == mine.item_id
    labeling.submit_assignment(db, taken.id, bob, _rank_in_order(taken), overlap=1, now=81)
    with pytest.raises(labeling.AssignmentExpired, match="expired"):
        labeling.submit_assignment(db, mine.id, ann, _rank_in_order(mine), overlap=1, now=82)
    # Nothing of ann's was stored for that item.
    assert db.execute("SELECT COUNT(*) FROM rankings WHERE item_id = ?",
                      [mine.item_id]).fetchone()[0] == 1
    # A late skip is always kept: skips never count against the overlap.
    skip = validate_submission(mine.candidate_ids, None, skipped=True)
    assert labeling.submit_assignment(db, mine.id, ann, skip, overlap=1, now=83).created


def test_an_item_set_aside_leaves_the_queue_for_everyone(db):
    _generated_items(db, n_prompts=2)
    ann, bob = _users(db, "ann", "bob")
    policy = QueuePolicy(overlap=2)
    a = labeling.next_assignment(db, ann, policy, now=0)
    labeling.set_aside(db, a.id, "cannot be shown", now=1)
    again = labeling.next_assignment(db, ann, policy, now=2)
    assert again.item_id != a.item_id
    assert labeling.next_assignment(db, bob, policy, now=2).item_id == again.item_id
    assert [r["id"] for r in labeling.set_aside_items(db)] == [a.item_id]
    assert labeling.progress(db, bob, policy, now=2)[1] == 1


def test_names_are_normalised_and_look_alikes_refused(db):
    labeling.add_user(db, "Ann", "annotator", "h")
    for twin in ("ann", "ANN", "Ａｎｎ"):  # case and full-width forms are the same name
        with pytest.raises(LabelingError, match="already exists"):
            labeling.add_user(db, twin, "annotator", "h")
    for hidden in ("an\u200bn", "\u202eadmin", "ann\u0007", "a\u2028b"):
        with pytest.raises(LabelingError, match="invisible"):
            labeling.add_user(db, hidden, "annotator", "h")
    assert labeling.get_user(db, "ａｎｎ").name == "Ann"


def test_disabling_a_user_ends_their_sessions(db):
    [ann] = _users(db, "ann")
    labeling.create_session(db, ann, "tok-1", ttl_s=100, now=0)
    assert labeling.session_user(db, "tok-1", now=50).name == "ann"
    assert labeling.session_user(db, "tok-1", now=101) is None  # expired
    labeling.create_session(db, ann, "tok-2", ttl_s=1e9)
    labeling.set_disabled(db, "ann", True)
    assert labeling.session_user(db, "tok-2") is None
    labeling.set_disabled(db, "ann", False)
    assert labeling.session_user(db, "tok-2") is None  # revoked, not merely hidden
    labeling.create_session(db, ann, "tok-3", ttl_s=1e9)
    labeling.set_password_hash(db, "ann", "new-hash")
    assert labeling.session_user(db, "tok-3") is None
    assert db.execute("SELECT COUNT(*) FROM sessions WHERE token_hash LIKE 'tok%'"
                      ).fetchone()[0] == 0  # only hashes are stored
