"""Whole rankings read from the vote log for the listwise objectives, and annotator weights
carried into pairs and rankings."""

import pytest

from data import labeling, store
from data.rankings import Submission
from data.scored_pairs import (
    comparison_weights,
    groups_from_rankings,
    pairs_from_db,
    rankings_from_db,
    with_weights,
)
from tests.labeling_fixtures import make_labeling_db


def vote(db, user, ranks, **flags):
    task = labeling.next_assignment(db, user.id, labeling.QueuePolicy(overlap=2))
    ids = tuple(task.candidate_ids)
    labeling.submit_assignment(db, task.id, user.id, Submission(ids, ranks, **flags))
    return task


@pytest.fixture
def db(tmp_path):
    db = store.open_store(make_labeling_db(tmp_path / "app.db", n_prompts=3))
    ann, bob = labeling.get_user(db, "ann"), labeling.get_user(db, "bob")
    vote(db, ann, (1, 1, 3))                  # a tie at the top
    vote(db, ann, (3, 1, 2))
    vote(db, ann, None, all_bad=True)         # all bad, no ranks: nothing
    vote(db, bob, (2, 1, 3))
    vote(db, bob, None, skipped=True)         # a skip: nothing
    yield db
    db.close()


def test_each_ranked_label_vote_is_one_group_with_its_ties(db):
    rankings = rankings_from_db(db)
    ranks = sorted(g.ranks for g in rankings.groups)
    assert ranks == [(1, 1, 3), (2, 1, 3), (3, 1, 2)]
    assert rankings.dropped == {"votes without ranks": 1}
    tie = next(g for g in rankings.groups if g.ranks == (1, 1, 3))
    assert tie.rewards == (1.0, 1.0, 0.0)  # ranks_to_rewards of the vote itself
    texts = dict(db.execute("SELECT id, text FROM candidates"))
    assert tie.texts == tuple(texts[c] for c in tie.candidate_ids)
    assert all(g.weight == 1.0 for g in rankings.groups)


def test_weights_follow_the_annotator(db):
    ann, bob = labeling.get_user(db, "ann").id, labeling.get_user(db, "bob").id
    weighted = with_weights(rankings_from_db(db), {ann: 0.25})
    assert sorted((g.user_id == ann, g.weight) for g in weighted.groups) == [
        (False, 1.0), (True, 0.25), (True, 0.25)]
    pairs = [r for r in db.execute(
        "SELECT 'comparison:' || c.id, r.user_id FROM comparisons c "
        "JOIN rankings r ON r.id = c.ranking_id")]
    assert comparison_weights(db, [p for p, _ in pairs], {ann: 0.25, bob: 2.0}) == [
        0.25 if user == ann else 2.0 for _, user in pairs]


def test_weighted_rewards_average_by_annotator(db):
    # ann and bob both ranked one item (overlap 2): with bob at weight 0 its rewards are ann's
    # alone, and it carries the mean of its two votes' weights.
    import json

    from data.scored_pairs import ranks_to_rewards

    ann, bob = labeling.get_user(db, "ann").id, labeling.get_user(db, "bob").id
    [(prompt_id,)] = db.execute(
        "SELECT prompt_id FROM rankings WHERE ranks IS NOT NULL GROUP BY prompt_id "
        "HAVING COUNT(DISTINCT user_id) = 2").fetchall()
    ids, ranks = db.execute("SELECT candidate_ids, ranks FROM rankings WHERE user_id = ? AND "
                            "prompt_id = ?", [ann, prompt_id]).fetchone()
    expected = dict(zip(json.loads(ids), ranks_to_rewards(json.loads(ranks))))
    weighted = {g.prompt_id: g for g in groups_from_rankings(db, weights={ann: 1.0, bob: 0.0})}
    assert {c.candidate_id: c.reward for c in weighted[prompt_id].candidates} == expected
    assert weighted[prompt_id].weight == 0.5
    unweighted = {g.prompt_id: g for g in groups_from_rankings(db)}
    assert unweighted[prompt_id].weight == 1.0
    assert {c.candidate_id: c.reward for c in unweighted[prompt_id].candidates} != expected
    pairs = pairs_from_db(db, weights={ann: 1.0, bob: 0.0}, mode="all")
    assert sorted({p.weight for p in pairs.pairs}) == [0.5, 1.0]


def test_configs_refuse_what_the_listwise_objective_cannot_read():
    from data.errors import ConfigError
    from policy.dpo import DPOConfig
    from policy.rebel import RebelConfig
    from reward.train_bt import RewardTrainConfig

    with pytest.raises(ConfigError, match="objective must be one of pairwise, listwise"):
        RewardTrainConfig(output="o", objective="pairs")
    with pytest.raises(ConfigError, match="--agreed-only keeps pairs"):
        RewardTrainConfig(output="o", objective="listwise", agreed_only=True)
    with pytest.raises(ConfigError, match="use --db instead of --data"):
        RewardTrainConfig(output="o", data="p.jsonl", annotator_weights="reliability")
    with pytest.raises(ConfigError, match="annotator weights must be one of none, reliability"):
        RebelConfig(output="o", annotator_weights="gold")
    with pytest.raises(ConfigError, match="use --loss sigmoid"):
        DPOConfig(output="o", objective="listwise", loss_type="ipo")
