"""Simulated annotators: Bradley-Terry/Gumbel noise, and rankings stored through the same
queue and submission functions the app's handlers call."""

import math
import random

import pytest

from data import agreement, labeling, simulate, store
from data.simulate import SimulationConfig, SimulationError, noisy_ranks, simulate_queue
from tests.labeling_fixtures import make_labeling_db
from tests.unit.sim_scores import answer_number


def test_noise_free_ranks_follow_the_scores_and_tie_equal_ones():
    rng = random.Random(0)
    assert noisy_ranks([0.5, 2.0, -1.0], 0.0, rng) == (2, 1, 3)
    assert noisy_ranks([1.0, 1.0, 0.0], 0.0, rng) == (1, 1, 3)


def test_gumbel_noise_gives_bradley_terry_pair_probabilities():
    # P(a above b) = σ((s_a − s_b) / noise): score gap 1 at noise 0.5 → σ(2) ≈ 0.881.
    rng = random.Random(1)
    n = 20_000
    wins = sum(noisy_ranks([1.0, 0.0], 0.5, rng)[0] == 1 for _ in range(n))
    expected = 1 / (1 + math.exp(-2.0))
    assert abs(wins / n - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
    # Equal scores: a coin flip, never a tie (the noise is continuous).
    flips = [noisy_ranks([0.0, 0.0], 1.0, rng) for _ in range(2000)]
    assert all(sorted(r) == [1, 2] for r in flips)
    assert 0.45 < sum(r[0] == 1 for r in flips) / 2000 < 0.55


def test_simulated_annotators_rank_every_item_with_overlap_through_the_submission_path(
        tmp_path, monkeypatch):
    db = store.open_store(make_labeling_db(tmp_path / "l.db", n_prompts=6, k=3))
    calls = []
    real_submit = labeling.submit_assignment

    def spy(*args, **kwargs):
        calls.append(args[1])
        return real_submit(*args, **kwargs)

    monkeypatch.setattr(labeling, "submit_assignment", spy)
    summary = simulate_queue(db, answer_number, SimulationConfig(annotators=3, overlap=2,
                                                                 noise=0.0, seed=0))
    assert summary.submitted == 12 == len(calls) and len(summary.items) == 6
    assert sum(summary.per_annotator.values()) == 12
    rows = list(db.query("SELECT r.item_id, r.user_id, r.assignment_id, r.submission_key, "
                         "r.candidate_ids, r.ranks FROM rankings r"))
    assert len(rows) == 12
    per_item = {}
    for row in rows:
        assert row["submission_key"] == f"assignment:{row['assignment_id']}"
        per_item.setdefault(row["item_id"], []).append(row["user_id"])
    # Overlap: exactly two distinct annotators per item, never one annotator twice.
    assert all(len(users) == 2 == len(set(users)) for users in per_item.values())
    # Comparisons were derived in the same transaction: k(k-1)/2 per ranking.
    assert db.execute("SELECT COUNT(*) FROM comparisons").fetchone()[0] == 12 * 3
    # Noise-free annotators agree on every pair: agreement and alpha are 1.
    ranked = labeling.rankings_for_agreement(db)
    pairs = agreement.pairwise_agreement(ranked)
    assert pairs and all(a == t for a, t in pairs.values())
    assert agreement.krippendorff_alpha_ordinal(ranked) == pytest.approx(1.0)
    # The queue is empty for them now; a second call stores nothing.
    assert simulate_queue(db, answer_number, SimulationConfig(overlap=2, noise=0.0)).submitted == 0
    # Nobody can log in as a simulated annotator.
    from labeler.auth import verify_password

    user = labeling.get_user(db, "sim-1")
    assert user.role == "annotator" and not verify_password("", user.password_hash)


def test_noisy_annotators_disagree_sometimes(tmp_path):
    db = store.open_store(make_labeling_db(tmp_path / "l.db", n_prompts=20, k=3))
    simulate_queue(db, answer_number, SimulationConfig(annotators=3, overlap=3, noise=2.0,
                                                       seed=3))
    pairs = agreement.pairwise_agreement(labeling.rankings_for_agreement(db))
    agree = sum(a for a, _ in pairs.values())
    total = sum(t for _, t in pairs.values())
    assert 0.3 < agree / total < 0.95


def test_limit_and_bad_configurations(tmp_path):
    db = store.open_store(make_labeling_db(tmp_path / "l.db", n_prompts=4))
    assert simulate_queue(db, answer_number, SimulationConfig(limit=3)).submitted == 3
    with pytest.raises(SimulationError, match="overlap"):
        SimulationConfig(annotators=2, overlap=3)
    with pytest.raises(SimulationError, match="noise"):
        SimulationConfig(noise=-1)
    labeling.add_user(db, "sim-9", "annotator", "scrypt$x")
    with pytest.raises(SimulationError, match="not a simulated annotator"):
        simulate.simulated_users(db, 9)


def test_scoring_functions_load_by_name_and_are_checked():
    fn = simulate.load_score_fn("simulated:tests.unit.sim_scores:shorter_is_better")
    assert fn([[]] * 2, ["ab", "a"]) == [-2.0, -1.0]
    with pytest.raises(SimulationError, match="returned 1 scores for 2"):
        simulate.load_score_fn("tests.unit.sim_scores:one_score_too_few")([[]] * 2, ["a", "b"])
    for spec, message in (("nocolon", "MODULE:FUNCTION"), ("no_such_mod_x:f", "cannot load"),
                          ("tests.unit.sim_scores:missing", "cannot load")):
        with pytest.raises(SimulationError, match=message):
            simulate.load_score_fn(spec)


def test_rankloop_simulate_ranks_the_queue_and_sets_the_project_order(tmp_path, capsys):
    from data.queue_order import get_queue_order
    from launch.cli import main

    path = make_labeling_db(tmp_path / "l.db", n_prompts=3)
    assert main(["simulate", "tests.unit.sim_scores:answer_number", "--db", path,
                 "--annotators", "2", "--overlap", "2", "--queue-order", "random"]) == 0
    out = capsys.readouterr().out
    assert "queue order: random" in out and "stored 6 rankings of 3 items" in out
    assert get_queue_order(store.open_store(path)).order == "random"
    assert main(["simulate", "tests.unit.sim_scores:answer_number", "--db", path,
                 "--annotators", "2", "--overlap", "3"]) == 2
    assert "overlap must be between 1 and the 2" in capsys.readouterr().err
