"""PPO's batch plan and data position, rule-based rewards, and the loop's wait for human
rankings (a real SQLite store, a fake clock)."""

import pytest

from data import labeling, store
from data.rankings import Submission
from policy.loop import LoopConfig, wait_for_rankings
from policy.ppo import PPOPlan, function_reward, rollout_prompts
from tests.labeling_fixtures import make_labeling_db


def test_rollout_prompts_visit_each_prompt_once_per_pass_and_follow_from_the_step():
    steps = [rollout_prompts(s, 10, 4, seed=3) for s in range(5)]  # 20 draws = two passes
    stream = [i for step in steps for i in step]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert stream[:10] != stream[10:]  # each pass has its own order
    assert steps == [rollout_prompts(s, 10, 4, seed=3) for s in range(5)]  # resumable
    assert rollout_prompts(0, 10, 4, seed=4) != steps[0]
    # A batch larger than the prompt set wraps into the next pass.
    big = rollout_prompts(0, 3, 7, seed=0)
    assert len(big) == 7 and sorted(big[:3]) == [0, 1, 2] and sorted(big[3:6]) == [0, 1, 2]


def test_ppo_plan_splits_batches_over_processes():
    plan = PPOPlan(world_size=2, rollout_batch_size=16, minibatch_size=4)
    plan.check()
    assert (plan.per_device_rollout, plan.per_device_minibatch, plan.minibatches_per_epoch) == \
        (8, 2, 4)
    with pytest.raises(ValueError, match="multiple of the 4 processes"):
        PPOPlan(world_size=4, rollout_batch_size=12, minibatch_size=6).check()


def test_function_reward_loads_checks_and_explains(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(
        "def length(prompts, responses):\n    return [len(r) for r in responses]\n"
        "def short(prompts, responses):\n    return [1.0]\n"
        "NOT_CALLABLE = 3\n")
    monkeypatch.chdir(tmp_path)
    assert function_reward("my_rewards:length")([[]] * 2, ["ab", "abcd"]) == [2.0, 4.0]
    with pytest.raises(ValueError, match="returned 1 rewards for 2 responses"):
        function_reward("my_rewards:short")([[]] * 2, ["a", "b"])
    for spec, message in (("my_rewards", "MODULE:FUNCTION"), ("nope_mod:f", "cannot load"),
                          ("my_rewards:missing", "cannot load"),
                          ("my_rewards:NOT_CALLABLE", "not callable")):
        with pytest.raises(ValueError, match=message):
            function_reward(spec)


def test_loop_config_refuses_combinations_that_cannot_train():
    with pytest.raises(ValueError, match="reward model"):
        LoopConfig(db="x.db", output="o")
    with pytest.raises(ValueError, match="PPO learns from a reward model"):
        LoopConfig(db="x.db", output="o", scorer="bt:rm", algorithm="ppo", feedback="human")
    LoopConfig(db="x.db", output="o", feedback="human")  # REBEL on rankings needs no scorer


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def _rank_one(db, user_id):
    assignment = labeling.next_assignment(db, user_id, labeling.QueuePolicy())
    ids = tuple(assignment.candidate_ids)
    labeling.submit_assignment(db, assignment.id, user_id,
                               Submission(ids, tuple(range(1, len(ids) + 1))))


def test_wait_for_rankings_returns_once_enough_prompts_are_ranked(tmp_path):
    db = store.open_store(make_labeling_db(tmp_path / "l.db", n_prompts=4))
    run_id = db.execute("SELECT id FROM generation_runs").fetchone()[0]
    ann = labeling.get_user(db, "ann")
    config = LoopConfig(db="l.db", output="o", feedback="human", wait_minutes=1,
                        poll_seconds=5)
    clock, said = FakeClock(), []

    def sleep(seconds):  # an annotator ranks one item between two polls
        clock.sleep(seconds)
        _rank_one(db, ann.id)

    assert wait_for_rankings(db, run_id, 3, config, say=said.append, clock=clock,
                             sleep=sleep) == 3
    assert clock.now == 15  # three polls of 5 s
    assert said[0].endswith("0 of 3 prompts ranked") and len(said) == 3


def test_wait_for_rankings_gives_up_at_the_deadline(tmp_path):
    db = store.open_store(make_labeling_db(tmp_path / "l.db", n_prompts=2))
    run_id = db.execute("SELECT id FROM generation_runs").fetchone()[0]
    _rank_one(db, labeling.get_user(db, "ann").id)
    config = LoopConfig(db="l.db", output="o", feedback="human", wait_minutes=0.5,
                        poll_seconds=7)
    clock, said = FakeClock(), []
    assert wait_for_rankings(db, run_id, 2, config, say=said.append, clock=clock,
                             sleep=clock.sleep) == 1
    assert clock.now >= 30 and "stopped waiting after 0.5 minutes with 1 of 2" in said[-1]
