"""Annotator reliability (data/reliability.py): planted reliabilities recovered in simulation,
tiny cases checked against the likelihood written out by hand, and the store's weights."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import spearmanr

from data import labeling, store
from data.rankings import validate_submission
from data.reliability import annotator_weights, expected_weight, fit_reliability
from data.simulate import planted_rankings
from data.votes import RankingRecord, read_rankings
from tests.labeling_fixtures import make_labeling_db

PRIOR_SD = 5.0  # fit_reliability's default temperature prior


def record(rid, annotator, item, cands, ranks, gold=None, *, skipped=False, superseded_by=None):
    return RankingRecord(
        ranking_id=rid, annotator=annotator, prompt_id=item, prompt=[], item_id=item,
        source_run=1, is_gold=gold is not None, gold_ranks=gold, candidate_ids=list(cands),
        candidates=[""] * len(cands), ranks=None if ranks is None else list(ranks),
        has_tie=ranks is not None and len(set(ranks)) < len(ranks), all_bad=False,
        skipped=skipped, rationale=None, demonstration_id=None, demonstration=None,
        shown_at=0.0, submitted_at=1.0, superseded_by=superseded_by,
        user_id=int(annotator.split("-")[1]))


def simulate(seed, temperatures, *, items=300, k=4, overlap=3, gold_items=15):
    return planted_rankings(np.random.default_rng(seed), temperatures, items=items, k=k,
                            overlap=overlap, gold_items=gold_items)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gold_items", [15, 0])
def test_planted_reliabilities_are_recovered(seed, gold_items):
    planted = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]  # annotator-0 ranks at random
    fit = fit_reliability(simulate(seed, planted, gold_items=gold_items))
    assert fit.converged
    temps = [fit.annotators[f"annotator-{a}"].temperature for a in range(len(planted))]
    weights = [fit.annotators[f"annotator-{a}"].weight for a in range(len(planted))]
    assert spearmanr(temps, planted)[0] >= 0.9
    # The random clicker, without anyone deciding it. Over 20 seeds its weight stayed under
    # 0.08 with gold items and under 0.25 without (the scale is then anchored by overlap only).
    assert weights[0] < (0.1 if gold_items else 0.25), weights
    assert weights[-1] == max(weights) and weights[-1] > 0.8, weights
    assert all(0.0 <= w <= 1.0 for w in weights)
    assert fit.weights_by_user() == {a: weights[a] for a in range(len(planted))}


def test_one_gold_pair_matches_the_hand_solution():
    # Gold ranks [1, 2] standardise to strengths [1, -1]; one vote agreeing with gold has
    # log posterior log sigmoid(2 beta) - beta^2 / (2 * 25): its maximum solves
    # 2 sigmoid(-2 beta) = beta / 25.
    fit = fit_reliability([record(1, "annotator-1", 7, [70, 71], [1, 2], gold=[1, 2])])
    beta = brentq(lambda b: 2 / (1 + math.exp(2 * b)) - b / PRIOR_SD ** 2, 0, 50)
    got = fit.annotators["annotator-1"]
    assert got.temperature == pytest.approx(beta, rel=1e-4)
    assert fit.strengths[("item", 7)] == {70: 1.0, 71: -1.0}
    assert got.weight == pytest.approx(2 / (1 + math.exp(-2 * beta)) - 1, rel=1e-4)
    assert (got.votes, got.votes_used, got.gold_votes) == (1, 1, 1)


def test_backwards_annotator_gets_negative_temperature_and_zero_weight():
    fit = fit_reliability([record(1, "annotator-1", 7, [70, 71], [2, 1], gold=[1, 2])])
    got = fit.annotators["annotator-1"]
    assert got.temperature == pytest.approx(
        -brentq(lambda b: 2 / (1 + math.exp(2 * b)) - b / PRIOR_SD ** 2, 0, 50), rel=1e-4)
    assert got.weight == 0.0


def test_tied_top_pair_is_one_grouped_pick():
    # Gold [1, 2, 3] -> strengths [a, 0, -a], a = sqrt(3/2). The vote ties the first two:
    # one stage, the group {x, y} picked from {x, y, z}:
    # beta * (a + 0) - 2 log(e^{beta a} + 1 + e^{-beta a}); the last group adds nothing.
    a = math.sqrt(1.5)

    def grad(b):
        num = a * math.exp(b * a) - a * math.exp(-b * a)
        den = math.exp(b * a) + 1 + math.exp(-b * a)
        return a - 2 * num / den - b / PRIOR_SD ** 2

    fit = fit_reliability([record(1, "annotator-1", 7, [70, 71, 72], [1, 1, 2],
                                  gold=[1, 2, 3])])
    assert fit.annotators["annotator-1"].temperature == pytest.approx(
        brentq(grad, -20, 20), rel=1e-4)
    # All tied: no choice at all, so only the prior speaks: temperature 0, weight 0.
    flat = fit_reliability([record(1, "annotator-1", 7, [70, 71], [1, 1], gold=[1, 2])])
    got = flat.annotators["annotator-1"]
    assert (got.votes_used, got.temperature, got.weight) == (1, 0.0, 0.0)


def test_unchecked_annotators_get_the_median_weight_and_old_versions_do_not_count():
    cands = [1, 2, 3]
    records = [
        record(1, "annotator-1", 1, cands, [1, 2, 3], gold=[1, 2, 3]),
        record(2, "annotator-2", 1, cands, [3, 2, 1], gold=[1, 2, 3]),
        # annotator-3 ranks an item nobody else ranked: nothing to check it against.
        record(3, "annotator-3", 2, cands, [1, 2, 3]),
        # Superseded and skipped votes are not judgments.
        record(4, "annotator-3", 1, cands, [1, 2, 3], gold=[1, 2, 3], superseded_by=5),
        record(5, "annotator-3", 1, cands, None, gold=[1, 2, 3], skipped=True),
    ]
    fit = fit_reliability(records)
    unchecked = fit.annotators["annotator-3"]
    assert unchecked.temperature is None and not unchecked.checked
    assert (unchecked.votes, unchecked.votes_used) == (1, 0)
    checked = [fit.annotators[n].weight for n in ("annotator-1", "annotator-2")]
    assert unchecked.weight == pytest.approx(sum(checked) / 2)
    assert fit_reliability([]).annotators == {}


def test_expected_weight_is_zero_at_zero_and_grows_with_temperature():
    gaps = np.array([0.5, 1.0, 2.0])
    values = [expected_weight(t, gaps) for t in (-1.0, 0.0, 0.5, 2.0, 50.0)]
    assert values[0] == values[1] == 0.0
    assert values[1] < values[2] < values[3] < values[4] <= 1.0
    assert values[4] == pytest.approx(1.0, abs=1e-6)


def test_annotator_weights_from_the_store(tmp_path):
    """Four annotators rank the app's queue through submit_assignment (overlap 4): three order
    candidates by their index with little noise, one at random."""
    names = ("steady-1", "steady-2", "steady-3", "random-1")
    path = make_labeling_db(tmp_path / "rel.db", n_prompts=25, k=4,
                            users=[(n, "annotator") for n in names])
    db = store.open_store(path)
    users = {n: labeling.get_user(db, n) for n in names}
    idx = dict(db.execute("SELECT id, idx FROM candidates"))
    policy = labeling.QueuePolicy(overlap=4)
    rng = random.Random(3)
    for name, user in users.items():
        while (task := labeling.next_assignment(db, user.id, policy, rng=rng)) is not None:
            if name.startswith("random"):
                ranks = rng.sample(range(1, 5), 4)
            else:
                noisy = [-idx[c] + rng.gauss(0, 0.7) for c in task.candidate_ids]
                ranks = [1 + sum(o > m for o in noisy) for m in noisy]
            labeling.submit_assignment(db, task.id, user.id,
                                       validate_submission(task.candidate_ids, ranks))
    weights = annotator_weights(db)
    # The store's light reader fits exactly what the full records give.
    assert weights == fit_reliability(read_rankings(db)).weights_by_user()
    assert set(weights) == {u.id for u in users.values()}
    steady = [weights[users[n].id] for n in names[:3]]
    assert weights[users["random-1"].id] < 0.2 < min(steady)

