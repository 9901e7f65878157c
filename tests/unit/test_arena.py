"""Blind comparison items: policies recorded per candidate, the queue's comparison share, the
order shuffled per annotator, votes between policies, the win rate, and the Arena layout."""

from __future__ import annotations

import json
import math
import random

import pytest

from data import arena, labeling, settings, store
from data.rankings import Submission
from data.votes import labels, read_rankings

POLICIES = (("base", "models/base-folder"), ("tuned", "models/tuned-folder"))


def add_arena_items(db, n: int, *, k: int = 2, policies=POLICIES, lengths=(3, 9),
                    tag: str = "held-out") -> list[int]:
    """n comparison items, each one answer per policy (the first k policies)."""
    ids = [store.get_or_create_policy(db, name, model) for name, model in policies[:k]]
    run = store.get_or_create_run(db, store.RunSettings(
        "arena: " + ", ".join(p for p, _ in policies[:k]), store.ARENA_BACKEND, k, 0.8, 1.0,
        16, 0))
    for p in range(n):
        [prompt] = store.upsert_prompts(db, [([{"role": "user", "content": f"{tag} {p}"}],
                                              "held", None)])
        store.add_candidates(db, prompt, run, [
            store.CandidateIn(f"answer {p} by policy {j}", lengths[j % len(lengths)], "stop")
            for j in range(k)], policy_ids=ids)
    return [r[0] for r in db.execute("SELECT id FROM items WHERE run_id = ? ORDER BY id DESC "
                                     "LIMIT ?", [run, n])][::-1]


def add_ranking_items(db, n: int) -> list[int]:
    run = store.get_or_create_run(db, store.RunSettings("default", "transformers", 2, 0.8, 0.9,
                                                        16, 0))
    for p in range(n):
        [prompt] = store.upsert_prompts(db, [([{"role": "user", "content": f"train {p}"}],
                                              "train", None)])
        store.add_candidates(db, prompt, run, [store.CandidateIn(f"r{p}.{j}", 2, "stop")
                                               for j in range(2)])
    return [r[0] for r in db.execute("SELECT id FROM items WHERE run_id = ? ORDER BY id", [run])]


@pytest.fixture
def db():
    db = store.open_store(":memory:")
    for name in ("ann", "bob", "cy"):
        labeling.add_user(db, name, "annotator", "!x")
    return db


def _user(db, name):
    return labeling.get_user(db, name).id


def test_comparison_items_know_each_candidates_policy(db):
    items = add_arena_items(db, 3)
    add_ranking_items(db, 2)
    flags = dict(db.execute("SELECT id, comparison FROM items").fetchall())
    assert [i for i, f in flags.items() if f] == items and len(flags) == 5
    policy_of = store.candidate_policies(db)
    names = sorted({name for name, _ in policy_of.values()})
    assert names == ["base", "default", "tuned"]  # a one-policy run: the run's model
    with pytest.raises(store.StoreError, match="already samples from"):
        store.get_or_create_policy(db, "base", "models/elsewhere")


def test_comparison_share_decides_which_kind_is_served_first(db):
    comparison = set(add_arena_items(db, 30))
    add_ranking_items(db, 30)
    policy = labeling.QueuePolicy(overlap=3)

    def served_kinds(share, n=20, seed=0):
        settings.set_setting(db, "comparison_share", share)
        rng = random.Random(seed)
        kinds = []
        for _ in range(n):
            a = labeling.next_assignment(db, _user(db, "ann"), policy, rng=rng)
            kinds.append(a.item_id in comparison)
            labeling.submit_assignment(db, a.id, _user(db, "ann"), Submission(
                tuple(a.candidate_ids), None, skipped=True), overlap=3)
        return kinds

    assert not any(served_kinds(0.0, n=10))
    assert all(served_kinds(1.0, n=10))
    # A half share serves both kinds; skipped items are done for ann, so these are new ones.
    mixed = served_kinds(0.5, n=20)
    assert 4 <= sum(mixed) <= 16
    # When one kind runs out the other is served: ranking items first, then the rest.
    rest = served_kinds(0.0, n=20)
    assert rest == [False] * sum(mixed) + [True] * (20 - sum(mixed))
    assert labeling.next_assignment(db, _user(db, "ann"), policy) is None
    for bad in (1.5, -0.1, "half", True):
        with pytest.raises(settings.SettingsError, match="share between 0 and 1"):
            settings.set_setting(db, "comparison_share", bad)
    assert settings.project_settings(db).comparison_share == 0.0


def test_the_order_shown_is_shuffled_per_annotator(db):
    items = add_arena_items(db, 24, k=3, policies=POLICIES + (("third", "models/third"),))
    policy = labeling.QueuePolicy(overlap=3)
    orders = {}
    for name in ("ann", "bob", "cy"):
        rng = random.Random(name)
        for _ in items:
            a = labeling.next_assignment(db, _user(db, name), policy, rng=rng)
            canonical = [c["id"] for c in labeling.item_candidates(db, a.item_id)]
            assert sorted(a.candidate_ids) == sorted(canonical)
            orders[(name, a.item_id)] = tuple(a.candidate_ids)
            labeling.submit_assignment(db, a.id, _user(db, name), Submission(
                tuple(a.candidate_ids), (1, 2, 3)), overlap=3)
    # Each annotator's order of an item is its own draw: they differ on most items, and the
    # first position is held by every policy in turn.
    differ = sum(orders[("ann", i)] != orders[("bob", i)] for i in items)
    assert differ >= 12
    policy_of = store.candidate_policies(db)
    first = {policy_of[orders[(n, i)][0]][0] for n in ("ann", "bob", "cy") for i in items}
    assert first == {"base", "tuned", "third"}
    # Reloading an open assignment keeps its order (a refresh does not reshuffle).
    extra = add_arena_items(db, 1, k=3, policies=POLICIES + (("third", "models/third"),),
                            tag="late")
    a = labeling.next_assignment(db, _user(db, "ann"), policy, rng=random.Random(1))
    assert a.item_id == extra[0]
    again = labeling.next_assignment(db, _user(db, "ann"), policy, rng=random.Random(2))
    assert again.candidate_ids == a.candidate_ids


def _vote(db, user, item_id, ranks_by_policy=None, all_bad=False, skipped=False):
    """ann/bob ranks an item giving each policy the rank in ranks_by_policy."""
    policy = labeling.QueuePolicy(overlap=3)
    uid = _user(db, user)
    a = labeling.next_assignment(db, uid, policy, rng=random.Random(item_id))
    assert a.item_id == item_id
    policy_of = store.candidate_policies(db)
    ranks = None if ranks_by_policy is None else tuple(
        ranks_by_policy[policy_of[c][0]] for c in a.candidate_ids)
    labeling.submit_assignment(db, a.id, uid, Submission(tuple(a.candidate_ids), ranks,
                                                         all_bad=all_bad, skipped=skipped),
                               overlap=3)
    return a


def test_policy_votes_follow_the_vote_logs_label_rules(db):
    items = add_arena_items(db, 5)
    first = _vote(db, "ann", items[0], {"base": 2, "tuned": 1})
    _vote(db, "ann", items[1], {"base": 1, "tuned": 1})  # a tie
    _vote(db, "ann", items[2], None, all_bad=True)  # both bad, unranked
    _vote(db, "ann", items[3], None, skipped=True)  # a skip is no vote
    _vote(db, "ann", items[4], {"base": 1, "tuned": 2})
    votes = arena.votes_from_db(db)
    assert len(votes) == 4
    by_item = {v.item_id: v for v in votes}
    tuned_first = store.candidate_policies(db)[first.candidate_ids[0]][0] == "tuned"
    assert by_item[items[0]].winner == ("model_a" if tuned_first else "model_b")
    assert by_item[items[0]].model_a == ("tuned" if tuned_first else "base")
    assert by_item[items[1]].winner == "tie" and by_item[items[2]].winner == "both_bad"
    assert {by_item[items[4]].model_a, by_item[items[4]].model_b} == {"base", "tuned"}
    # Lengths ride along for the length-controlled rating.
    v = by_item[items[0]]
    assert {(v.model_a, v.tokens_a), (v.model_b, v.tokens_b)} == {("base", 3), ("tuned", 9)}
    # Within one policy, candidates are not votes: a loop round's k = 4 (2 + 2) gives 4.
    records = labels(read_rankings(db))
    fake = {c: ("p" if i % 2 else "q", 1) for r in records for i, c in
            enumerate(r.candidate_ids)}
    assert all(v.model_a != v.model_b for v in arena.policy_votes(records, fake))


def test_win_rate_counts_ties_half_and_resamples_rankings():
    def v(ranking, winner, a="new", b="old"):
        return arena.PolicyVote(a, b, winner, 1, 1, ranking, 1, 1, 2)

    votes = [v(1, "model_a"), v(1, "model_a"), v(2, "tie"), v(2, "model_b"), v(3, "both_bad"),
             v(4, "model_a", "old", "new"), v(5, "model_b", "other", "new")]
    rate = arena.win_rate(votes, "new", "old", resamples=2000)
    # new wins 2 of ranking 1, half of 2's tie, half of 3's both-bad, loses 2's and 4's.
    assert rate.win_rate == pytest.approx(3.0 / 6) and rate.votes == 6 and rate.rankings == 4
    assert 0.0 <= rate.ci_low < rate.win_rate < rate.ci_high <= 1.0
    assert arena.win_rate(votes, "new", "missing") is None
    # Many rankings that all prefer new: the interval sits above one half.
    sure = [v(i, "model_a" if i % 5 else "tie") for i in range(200)]
    rate = arena.win_rate(sure, "new", "old")
    assert rate.ci_low > 0.5 and rate.win_rate == pytest.approx(0.9)


def test_leaderboard_and_arena_rows(db):
    items = add_arena_items(db, 12)
    for n, item in enumerate(items):
        _vote(db, "ann", item, {"base": 2, "tuned": 1} if n % 4 else {"base": 1, "tuned": 2})
    votes = arena.votes_from_db(db, comparison_items_only=True)
    board = arena.leaderboard(votes, resamples=200)
    assert board.names == ["tuned", "base"]
    assert board.win_matrix["tuned"]["base"] == pytest.approx(9 / 12)
    assert board.pair_votes["base"]["tuned"] == 12 and board.votes == 12
    assert board.mean_tokens == {"tuned": 9.0, "base": 3.0}
    rows = board.rows()
    assert rows[0]["ci_low"] < rows[0]["rating"] < rows[0]["ci_high"]
    assert "lc_rating" in rows[0] and not math.isnan(rows[0]["lc_rating"])
    text = board.text()
    assert "tuned" in text and "0.75 (12)" in text

    out = arena.arena_rows(db)
    assert len(out) == 12
    row = out[0]
    assert set(row) >= {"model_a", "model_b", "winner", "conversation_a", "conversation_b",
                        "question_id", "judge", "tstamp"}
    assert {r["winner"] for r in out} <= {"model_a", "model_b", "tie", "tie (bothbad)"}
    assert row["conversation_a"][0]["role"] == "user"
    assert row["conversation_a"][-1]["role"] == "assistant"
    assert row["conversation_a"][-1]["content"].endswith(
        "0" if row["model_a"] == "base" else "1")
    assert row["judge"].startswith("annotator-")  # the pseudonym, never a name
    json.dumps(out)


def test_the_admin_leaderboard_and_comparison_share(tmp_path):
    from labeler.handlers import LabelerService, PermissionDenied
    from labeler.leaderboard import leaderboard_tables, save_comparison_share
    from tests.labeling_fixtures import make_labeling_db

    path = make_labeling_db(tmp_path / "app.db", n_prompts=0, k=2)
    db = store.open_store(path)
    items = add_arena_items(db, 8)
    for n, item in enumerate(items):
        _vote(db, "ann", item, {"base": 1, "tuned": 2} if n % 4 else {"base": 2, "tuned": 1})
    svc = LabelerService(path, policy=labeling.QueuePolicy(overlap=1), autogenerate=False)
    summary, ratings, matrix = leaderboard_tables(svc, "root", resamples=100)
    assert "**8** votes between **2** policies" in summary
    assert list(ratings["policy"]) == ["base", "tuned"]
    assert list(ratings["mean tokens"]) == ["3.0", "9.0"]
    assert ratings["95% interval"][0].startswith("[")
    assert list(matrix.columns) == ["policy", "base", "tuned"]
    assert matrix.iloc[0].tolist() == ["base", "–", "0.75 (8)"]
    with pytest.raises(PermissionDenied):
        leaderboard_tables(svc, "ann")
    with pytest.raises(PermissionDenied):
        save_comparison_share(svc, "ann", 0.5)
    assert "Not saved" in save_comparison_share(svc, "root", 2)
    assert "50%" in save_comparison_share(svc, "root", "0.5")
    assert settings.get_setting(store.open_store(path), "comparison_share") == 0.5
    # A store with no comparisons says how to get some.
    empty = make_labeling_db(tmp_path / "empty.db", n_prompts=1, k=2)
    summary, ratings, _ = leaderboard_tables(
        LabelerService(empty, policy=labeling.QueuePolicy(), autogenerate=False), "root")
    assert "No votes between policies yet" in summary and ratings.empty


def _record(db, iteration, base, model, win_rate):
    store.record_iteration(db, iteration=iteration, algorithm="rebel", base_model=base,
                           model=model, run_id=None, scorer=None,
                           report={"iteration": iteration, "base_model": base, "model": model,
                                   "win_rate": win_rate, "judge": "bt:/rm"})


def test_the_loop_mixes_in_the_previous_policy_when_people_rank(tmp_path):
    from policy.loop import LoopConfig, previous_mix

    db = store.open_store(tmp_path / "l.db")

    def mix(**kw):
        kw.setdefault("feedback", "human")
        return previous_mix(LoopConfig(db="l.db", output="o", **kw), db, "/runs/iter-1")

    assert mix() == (None, 0)  # the first iteration has no previous policy
    _record(db, 1, "default", "/runs/iter-1", 0.7)
    assert mix() == ("default", 2) and mix(k=3) == ("default", 1) and mix(k=8) == ("default", 4)
    assert mix(k=2) == (None, 0)  # two current candidates are needed for a training pair
    assert mix(previous_share=0.0) == (None, 0)
    assert mix(previous_share=0.9, k=5) == ("default", 3)
    assert mix(feedback="reward-model", scorer="bt:rm") == (None, 0)  # off by default there
    assert mix(feedback="reward-model", scorer="bt:rm", previous_share=0.25) == ("default", 1)
    with pytest.raises(Exception, match="previous share"):
        LoopConfig(db="l.db", output="o", feedback="human", previous_share=1.0)


def test_the_verdict_warns_when_people_and_the_judge_disagree(tmp_path, tiny_model_dir):
    import shutil

    from policy.generate import policy_name
    from policy.loop import IterationReport, LoopConfig, _people_verdict

    base = str(tmp_path / "base")
    shutil.copytree(tiny_model_dir, base)
    new = tiny_model_dir
    db = store.open_store(tmp_path / "l.db")
    for name in ("ann", "bob"):
        labeling.add_user(db, name, "annotator", "!x")
    _record(db, 1, base, new, 0.8)  # the judge liked iteration 1's policy
    items = add_arena_items(db, 10, policies=((policy_name(new), policy_name(new)),
                                              (policy_name(base), policy_name(base))))
    run_id = db["items"].get(items[0])["run_id"]
    for item in items:  # people prefer the previous policy's answers
        _vote(db, "ann", item, {policy_name(new): 2, policy_name(base): 1})
    report = IterationReport(2, "rebel", "human", new, "/runs/iter-2", run_id, 4, 0, None, None,
                             None, None, None, None, 0.0)
    _people_verdict(db, report, new, base, LoopConfig(db="l.db", output="o", feedback="human"))
    assert (report.human_win_rate, report.ci_low, report.ci_high) == (0.0, 0.0, 0.0)
    assert report.verdict_on == 1 and report.human_votes == 10 and report.judge_win_rate == 0.8
    [warning] = report.warnings
    assert "people and the judge disagree on iteration 1's policy" in warning
    assert "over-optimising" in warning


def test_the_loop_stops_when_people_no_longer_prefer_the_new_policy(tmp_path, monkeypatch):
    import policy.loop as loop

    verdicts = iter([None, 0.62, 0.45, 0.7])
    ran = []

    def one_iteration(config, *, progress=False, say=print):
        ran.append(len(ran) + 1)
        report = loop.IterationReport(len(ran), "rebel", "human", "a", "b", 1, 1, 0, None, None,
                                      None, None, None, None, 0.0)
        report.human_win_rate = next(verdicts)
        report.verdict_on, report.human_votes = len(ran) - 1, 40
        return report

    monkeypatch.setattr(loop, "run_iteration", one_iteration)
    said = []
    config = loop.LoopConfig(db=str(tmp_path / "l.db"), output=str(tmp_path / "out"),
                             feedback="human", iterations=4, stop_when_not_preferred=True)
    reports = loop.run_loop(config, say=said.append)
    assert ran == [1, 2, 3] and len(reports) == 3
    assert any("stopping: people preferred iteration 2's policy to the one before it in only "
               "0.450 of 40 comparisons" in line for line in said)
    # Without the option every planned iteration runs.
    ran.clear()
    verdicts = iter([0.3, 0.3, 0.3, 0.3])
    config = loop.LoopConfig(db=str(tmp_path / "m.db"), output=str(tmp_path / "out2"),
                             feedback="human", iterations=4)
    assert len(loop.run_loop(config, say=said.append)) == 4


def test_pairwise_arena_plans_every_pair_equally_often():
    from collections import Counter

    from launch.cmd_arena import parse_policies, plan_pairs

    plan = plan_pairs(60, 4, "pairwise", seed=3)
    assert set(Counter(plan).values()) == {10} and len(Counter(plan)) == 6
    assert plan_pairs(5, 3, "all", seed=0) == [(0, 1, 2)] * 5
    assert parse_policies(["base=default", " it1 = runs/iter-1 "]) == [
        ("base", "default"), ("it1", "runs/iter-1")]
