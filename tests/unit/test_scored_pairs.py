"""Preference pairs for policy training: best/worst and all pairs, drops, ranks scale, length
filters, held-out split, files with and without scores, the database."""

import json

import pytest

from data import store
from data.scored_pairs import (
    DROP_EQUAL_REWARD,
    DROP_IDENTICAL,
    DROP_PROMPT_TOO_LONG,
    DROP_RESPONSE_TOO_LONG,
    DROP_SINGLE,
    UNSCORED_GAP,
    ScoredPair,
    PromptCandidates,
    ScoredCandidate,
    build_pairs,
    filter_by_length,
    pairs_from_db,
    pairs_from_file,
    ranks_to_rewards,
    require_pairs,
    split_held_out,
)
from data.preferences import PreferenceSourceError

PROMPT = [{"role": "user", "content": "hi"}]


def group(*scored, prompt=PROMPT):
    return PromptCandidates(prompt, tuple(ScoredCandidate(t, r, i) for i, (t, r) in
                                          enumerate(scored)))


def test_best_and_worst_of_each_prompt():
    pairs = build_pairs([group(("a", 0.2), ("b", 0.9), ("c", -1.0), ("d", 0.5))])
    assert [(p.chosen, p.rejected, p.reward_chosen, p.reward_rejected) for p in pairs.pairs] == [
        ("b", "c", 0.9, -1.0)]
    assert pairs.pairs[0].chosen_candidate_id == 1 and pairs.pairs[0].rejected_candidate_id == 2


def test_all_pairs_drop_identical_texts_and_equal_rewards():
    pairs = build_pairs([group(("a", 3.0), ("b", 2.0), ("a ", 1.0), ("c", 2.0))], mode="all")
    assert sorted((p.chosen, p.rejected) for p in pairs.pairs) == sorted([
        ("a", "b"), ("a", "c"), ("b", "a "), ("c", "a ")])
    assert pairs.dropped == {DROP_IDENTICAL: 1, DROP_EQUAL_REWARD: 1}


def test_identical_best_and_worst_and_single_candidates_are_counted():
    pairs = build_pairs([group(("same", 1.0), ("same", 0.0)), group(("only", 1.0)),
                         group(("x", 0.5), ("y", 0.5))])
    assert pairs.pairs == []
    assert pairs.dropped == {DROP_IDENTICAL: 1, DROP_SINGLE: 1, DROP_EQUAL_REWARD: 1}
    with pytest.raises(PreferenceSourceError, match="no usable preference pairs.*1 identical"):
        require_pairs(pairs)


def test_ranks_map_to_a_zero_to_one_scale():
    assert ranks_to_rewards([2, 1, 3]) == [0.5, 1.0, 0.0]
    assert ranks_to_rewards([1, 1, 3, 4]) == pytest.approx([1.0, 1.0, 1 / 3, 0.0])
    assert ranks_to_rewards([1]) == [0.0]


def test_length_filters_count_each_reason():
    pairs = [ScoredPair(PROMPT, "a", "b", 1, 0)] * 4
    kept, dropped = filter_by_length(pairs, [5, 50, 5, 5], [3, 3, 30, 3], [3, 3, 3, 3],
                                     max_prompt_tokens=10, max_response_tokens=20)
    assert kept == [0, 3]
    assert dropped == {DROP_PROMPT_TOO_LONG: 1, DROP_RESPONSE_TOO_LONG: 1}


def test_held_out_split_keeps_prompts_together():
    keys = ["p1", "p2", "p1", "p3", "p4", "p2"]
    train, held = split_held_out(keys, 0.25, seed=0)
    assert sorted(train + held) == list(range(6))
    held_keys = {keys[i] for i in held}
    assert len(held_keys) == 1 and not held_keys & {keys[i] for i in train}
    assert split_held_out(keys, 0.25, seed=0) == (train, held)
    assert split_held_out(keys, 0.0, seed=0) == (list(range(6)), [])


def test_files_with_and_without_scores(tmp_path):
    rows = [
        {"prompt": "Q1", "chosen": "good", "rejected": "bad", "score_chosen": 2.5,
         "score_rejected": -1},
        {"prompt": [{"role": "user", "content": "Q2"}],
         "chosen": [{"role": "assistant", "content": "yes"}],
         "rejected": [{"role": "assistant", "content": "no"}]},
        {"prompt": "Q3", "chosen": "same", "rejected": "same"},
        {"prompt": "Q4", "chosen": "x", "rejected": "y", "score_chosen": 1, "score_rejected": 1},
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = pairs_from_file(str(path))
    assert [(p.prompt, p.chosen, p.rejected, p.reward_chosen, p.reward_rejected)
            for p in pairs.pairs] == [
        ("Q1", "good", "bad", 2.5, -1.0),
        ([{"role": "user", "content": "Q2"}], "yes", "no", UNSCORED_GAP, 0.0)]
    assert pairs.dropped == {DROP_IDENTICAL: 1, DROP_EQUAL_REWARD: 1}
    with pytest.raises(PreferenceSourceError, match="does not exist"):
        pairs_from_file(str(tmp_path / "missing.jsonl"))


def _db_with_candidates(tmp_path):
    db = store.open_store(tmp_path / "r.db")
    [pid] = store.upsert_prompts(db, [(PROMPT, "test", None)])
    run = store.get_or_create_run(db, store.RunSettings("m", "transformers", 3, 1.0, 1.0, 8, 0))
    ids = store.add_candidates(db, pid, run, [store.CandidateIn(t, 2, "stop")
                                              for t in ("one", "two", "three")])
    return db, pid, run, ids


def test_db_pairs_from_model_scores(tmp_path):
    db, _, run, ids = _db_with_candidates(tmp_path)
    store.put_model_scores(db, [store.ModelScore(c, "bt:/rm", s)
                                for c, s in zip(ids, (0.1, 0.7, -0.3))])
    pairs = pairs_from_db(db, scorer="bt:/rm", run_id=run)
    assert [(p.chosen, p.rejected, p.reward_chosen, p.reward_rejected) for p in pairs.pairs] == [
        ("two", "three", 0.7, -0.3)]
    with pytest.raises(PreferenceSourceError, match="no candidates scored by bt:/other"):
        pairs_from_db(db, scorer="bt:/other")


def test_db_pairs_from_human_rankings_average_annotators(tmp_path):
    db, pid, _, ids = _db_with_candidates(tmp_path)
    with pytest.raises(PreferenceSourceError, match="no ranked candidates"):
        pairs_from_db(db)
    for n, ranks in enumerate(([1, 2, 3], [2, 1, 3])):
        uid = db["users"].insert({"name": f"u{n}", "role": "annotator", "password_hash": "x",
                                  "created_at": 0.0}).last_pk
        db["rankings"].insert({"submission_key": f"k{n}", "user_id": uid, "prompt_id": pid,
                               "candidate_ids": json.dumps(ids), "ranks": json.dumps(ranks),
                               "submitted_at": 0.0})
    # Means: one (1 + 0.5)/2 = 0.75, two 0.75, three 0.0 → best is "one" (first of the tie).
    pairs = pairs_from_db(db)
    assert [(p.chosen, p.rejected, p.reward_chosen, p.reward_rejected) for p in pairs.pairs] == [
        ("one", "three", 0.75, 0.0)]
