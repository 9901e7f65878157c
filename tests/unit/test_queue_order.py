"""The queue order: fifo, a seeded random permutation, and uncertainty-first from stored
reward-model scores (with the scores used kept)."""

import math

import pytest

from data import labeling, queue_order, store
from data.queue_order import QueueOrder, ensemble_uncertainty, gap_uncertainty
from data.rankings import Submission
from tests.labeling_fixtures import make_labeling_db


def _served_order(db, user_name="ann", n=None, overlap=1):
    """Item ids in the order one annotator is served them (submitting each)."""
    user = labeling.get_user(db, user_name)
    order = []
    while n is None or len(order) < n:
        a = labeling.next_assignment(db, user.id, labeling.QueuePolicy(overlap=overlap))
        if a is None:
            break
        order.append(a.item_id)
        ids = tuple(a.candidate_ids)
        labeling.submit_assignment(db, a.id, user.id, Submission(ids, (1,) + (2,) * (len(ids) - 1)))
    return order


def _score_all(db, scorer, by_item):
    """Stores scores: by_item maps item id → the scores of its candidates (idx order)."""
    rows = []
    for item_id, scores in by_item.items():
        for cand, score in zip(labeling.item_candidates(db, item_id), scores):
            rows.append(store.ModelScore(cand["id"], scorer, score))
    store.put_model_scores(db, rows)


def test_uncertainty_measures_match_hand_computed_values():
    # Smallest gap 0.5 → 1 − tanh(0.25).
    assert gap_uncertainty([2.0, 0.0, 0.5]) == pytest.approx(1 - math.tanh(0.25))
    assert gap_uncertainty([1.0, 1.0]) == 1.0
    # Two members on two candidates: σ(1) and σ(−1); population std = |σ(1) − σ(−1)| / 2.
    s = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert ensemble_uncertainty([[1.0, 0.0], [0.0, 1.0]]) == pytest.approx((s(1) - s(-1)) / 2)
    assert ensemble_uncertainty([[3.0, 1.0, 0.0], [3.0, 1.0, 0.0]]) == 0.0
    with pytest.raises(ValueError):
        gap_uncertainty([1.0])


def test_fifo_is_the_default_and_random_is_a_fixed_permutation(tmp_path):
    path = make_labeling_db(tmp_path / "l.db", n_prompts=8)
    db = store.open_store(path)
    assert queue_order.get_queue_order(db) == QueueOrder("fifo")
    items = [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]
    assert _served_order(db, "ann") == items

    queue_order.set_queue_order(db, QueueOrder("random", seed=7))
    served = _served_order(db, "bob", overlap=2)  # each item ranked once by ann so far
    assert sorted(served) == items and served != items
    expected = sorted(items, key=lambda i: ((i * 2654435761 + 7) % 2**32, i))
    assert served == expected


def test_uncertain_order_serves_small_score_gaps_first_and_keeps_the_scores(tmp_path):
    db = store.open_store(make_labeling_db(tmp_path / "l.db", n_prompts=5, k=3))
    items = [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]
    scores = {items[0]: [0.0, 3.0, 6.0], items[1]: [0.0, 0.1, 5.0],
              items[2]: [1.0, 1.0, 2.0], items[3]: [0.0, 1.0, 2.5]}  # items[4]: unscored
    _score_all(db, "bt:/rm", scores)
    with pytest.raises(ValueError, match="needs at least one reward model"):
        QueueOrder("uncertain")
    assert queue_order.set_queue_order(db, QueueOrder("uncertain", ("bt:/rm",))) == 4
    # Gaps 0 (item 2), 0.1 (item 1), 1 (item 3), 3 (item 0), then the unscored item.
    assert _served_order(db, "ann") == [items[2], items[1], items[3], items[0], items[4]]
    kept = queue_order.stored_uncertainty(db)
    first = kept[items[1]]
    assert first["method"] == "gap" and first["scorers"] == ["bt:/rm"]
    cands = [c["id"] for c in labeling.item_candidates(db, items[1])]
    assert first["scores"] == {cands[0]: [0.0], cands[1]: [0.1], cands[2]: [5.0]}
    assert first["uncertainty"] == pytest.approx(1 - math.tanh(0.05))


def test_items_started_by_others_come_first_in_every_order(tmp_path):
    db = store.open_store(make_labeling_db(tmp_path / "l.db", n_prompts=4, k=2))
    items = [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]
    _score_all(db, "bt:/a", {i: [0.0, 5.0 - i] for i in items})  # the last item is most unsure
    queue_order.set_queue_order(db, QueueOrder("uncertain", ("bt:/a",)))
    assert _served_order(db, "ann", n=1) == [items[-1]]
    # With overlap 2, bob finishes the item ann ranked, although another one is less sure.
    _score_all(db, "bt:/a", {items[0]: [0.0, 0.0]})
    queue_order.refresh_uncertainty(db)
    bob = labeling.get_user(db, "bob")
    a = labeling.next_assignment(db, bob.id, labeling.QueuePolicy(overlap=2))
    assert a.item_id == items[-1]


def test_an_ensemble_orders_by_disagreement(tmp_path):
    db = store.open_store(make_labeling_db(tmp_path / "l.db", n_prompts=3, k=2))
    items = [r[0] for r in db.execute("SELECT id FROM items ORDER BY id")]
    _score_all(db, "bt:/a", {items[0]: [0.0, 1.0], items[1]: [0.0, 4.0], items[2]: [0.0, 2.0]})
    _score_all(db, "bt:/b", {items[0]: [0.0, 1.0], items[1]: [4.0, 0.0], items[2]: [2.0, 0.0]})
    queue_order.set_queue_order(db, QueueOrder("uncertain", ("bt:/a", "bt:/b")))
    assert _served_order(db, "ann") == [items[1], items[2], items[0]]
    assert queue_order.stored_uncertainty(db)[items[0]]["method"] == "ensemble"
