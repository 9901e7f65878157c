"""The model_scores table (migration 3) and its typed functions."""

import sqlite3

import pytest

from data import store

USER = [{"role": "user", "content": "hi"}]


def make_db(tmp_path):
    db = store.open_store(tmp_path / "r.db")
    [prompt_id] = store.upsert_prompts(db, [(USER, "test", "0")])
    runs = [store.get_or_create_run(db, store.RunSettings("m", "transformers", 2, t, 0.9, 8, 0))
            for t in (0.7, 0.8)]
    ids = [store.add_candidates(db, prompt_id, run, [store.CandidateIn(f"{run}-{i}", 1, "stop")
                                                     for i in range(2)]) for run in runs]
    return db, runs, ids


def test_migration_3_creates_model_scores_with_a_unique_scorer_per_candidate(tmp_path):
    db, _, _ = make_db(tmp_path)
    assert 3 in store.applied_versions(db)
    assert {"candidate_id", "scorer", "score", "objectives", "created_at"} <= set(
        db["model_scores"].columns_dict)
    indexes = {tuple(i.columns): i.unique for i in db["model_scores"].indexes}
    assert indexes[("candidate_id", "scorer")]


def test_scores_are_written_replaced_and_read_back(tmp_path):
    db, _, ids = make_db(tmp_path)
    (a, b), (c, _) = ids
    written = store.put_model_scores(db, [
        store.ModelScore(a, "bt:/m", 1.5), store.ModelScore(b, "bt:/m", -0.5),
        store.ModelScore(a, "armorm:/x", 0.2, {"helpfulness": 0.7}),
    ])
    assert written == 3
    store.put_model_scores(db, [store.ModelScore(a, "bt:/m", 2.5)])  # rescoring replaces
    scores = store.model_scores(db, "bt:/m")
    assert {k: v.score for k, v in scores.items()} == {a: 2.5, b: -0.5}
    assert store.model_scores(db, "armorm:/x")[a].objectives == {"helpfulness": 0.7}
    assert set(store.model_scores(db, "bt:/m", [b, c])) == {b}
    assert store.model_scorers(db) == {"armorm:/x": 1, "bt:/m": 2}
    assert db["model_scores"].count == 3


def test_candidates_to_score_skips_scored_ones_and_filters_by_run(tmp_path):
    db, runs, ids = make_db(tmp_path)
    store.put_model_scores(db, [store.ModelScore(ids[0][0], "bt:/m", 1.0)])
    todo = store.candidates_to_score(db, "bt:/m")
    assert [c.candidate_id for c in todo] == [ids[0][1], *ids[1]]
    assert todo[0].messages == USER and todo[0].text == f"{runs[0]}-1"
    assert [c.candidate_id for c in store.candidates_to_score(db, "bt:/m", run_id=runs[0])] == [
        ids[0][1]]
    assert len(store.candidates_to_score(db, "bt:/m", rescore=True)) == 4
    assert len(store.candidates_to_score(db, "other:/m")) == 4


def test_a_score_for_a_missing_candidate_is_refused(tmp_path):
    db, _, _ = make_db(tmp_path)
    with pytest.raises(sqlite3.IntegrityError):
        store.put_model_scores(db, [store.ModelScore(999, "bt:/m", 1.0)])
    assert db["model_scores"].count == 0
