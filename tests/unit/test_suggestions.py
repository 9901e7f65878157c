"""Model suggestions: ranks from stored scores, pinned on the task, and the accepted flag in the
vote log and both export configurations."""

import random

import pytest

from data import export, labeling, revisions, settings, store, suggestions
from data.export import ExportConfig
from data.labeling import QueuePolicy
from data.rankings import validate_submission

SCORES = [0.5, 2.0, -1.0]  # by candidate idx: B best, then A, then C


@pytest.fixture
def db(tmp_path):
    return store.open_store(tmp_path / "r.db")


def _item(db, p=0):
    run_id = store.get_or_create_run(db, store.RunSettings("m", "vllm", 3, 0.8, 0.9, 8, 0))
    [prompt_id] = store.upsert_prompts(db, [([{"role": "user", "content": f"q{p}"}], "t", None)])
    ids = store.add_candidates(db, prompt_id, run_id,
                               [store.CandidateIn(f"answer {p}.{j}", 2, "stop") for j in range(3)])
    labeling.sync_items(db)
    return ids


def _score(db, ids, scores, scorer="bt:/rm"):
    store.put_model_scores(db, [store.ModelScore(c, scorer, s) for c, s in zip(ids, scores)])


def test_ranks_from_scores_by_hand():
    assert suggestions.ranks_from_scores([0.5, 2.0, -1.0]) == [2, 1, 3]
    assert suggestions.ranks_from_scores([1.0, 1.0, 0.0, 3.0]) == [2, 2, 4, 1]


def test_suggested_ranks_need_one_scorer_for_every_candidate(db):
    ids = _item(db)
    assert suggestions.suggest_ranks(db, ids) is None
    _score(db, ids[:2], SCORES[:2], scorer="armorm:/big")  # one candidate unscored
    assert suggestions.suggest_ranks(db, ids) is None
    _score(db, ids, SCORES)
    got = suggestions.suggest_ranks(db, [ids[2], ids[0], ids[1]])  # any order asked
    assert got == suggestions.Suggestion("bt:/rm", (3, 2, 1), (-1.0, 0.5, 2.0))
    assert suggestions.suggest_ranks(db, ids, scorer="armorm:/big") is None


def test_a_suggestion_is_shown_only_when_on_and_pinned_once_shown(db):
    ids = _item(db)
    _score(db, ids, SCORES)
    ann = labeling.add_user(db, "ann", "annotator", "x").id
    a = labeling.next_assignment(db, ann, QueuePolicy(), now=0, rng=random.Random(2))
    assert suggestions.suggestion_for_assignment(db, a.id) is None  # off by default
    settings.set_setting(db, "suggestions", True)
    shown = suggestions.suggestion_for_assignment(db, a.id)
    expected = tuple({ids[0]: 2, ids[1]: 1, ids[2]: 3}[c] for c in a.candidate_ids)
    assert shown.ranks == expected
    # New scores, or suggestions turned off, do not change what this task started from.
    _score(db, ids, [9.0, 0.0, 5.0])
    settings.set_setting(db, "suggestions", False)
    assert suggestions.suggestion_for_assignment(db, a.id) == shown


def test_the_vote_records_whether_the_suggestion_was_kept(db):
    settings.set_setting(db, "suggestions", True)
    users = [labeling.add_user(db, n, "annotator", "x").id for n in ("ann", "bob", "cat")]
    for p in range(3):
        ids = _item(db, p)
        _score(db, ids, SCORES)
    flags = {}
    for user, change in zip(users, ("keep", "tie", "reverse")):
        a = labeling.next_assignment(db, user, QueuePolicy(), now=0)
        shown = suggestions.suggestion_for_assignment(db, a.id)
        ranks = list(shown.ranks)
        if change == "tie":  # the two worst suggested candidates made equal
            ranks = [min(r, 2) for r in ranks]
        if change == "reverse":
            ranks = [4 - r for r in ranks]
        stored = labeling.submit_assignment(db, a.id, user, validate_submission(a.candidate_ids,
                                                                                ranks), now=1)
        flags[change] = db["rankings"].get(stored.ranking_id)["suggestion_accepted"]
    assert flags == {"keep": 1, "tie": 0, "reverse": 0}

    records = export.read_rankings(db)
    assert [r.suggestion_accepted for r in records] == [True, False, False]
    assert all(r.suggestion_scorer == "bt:/rm" and r.suggested_ranks for r in records)
    built = export.build_export(db, ExportConfig(test_fraction=0, ties="include"))
    by_ranking = {}
    for row in built.preferences["train"]:
        by_ranking.setdefault(row["ranking_id"], set()).add(row["suggestion_accepted"])
    assert by_ranking == {1: {True}, 2: {False}, 3: {False}}
    assert built.rankings["train"]["suggestion_accepted"] == [True, False, False]
    assert built.stats["suggested"] == 3 and built.stats["suggestions_accepted"] == 1


def test_equivalent_ranks_count_as_accepted_and_revisions_recheck(db):
    settings.set_setting(db, "suggestions", True)
    ids = _item(db)
    _score(db, ids, [1.0, 1.0, 0.0])  # A and B tie: suggested (1, 1, 3)
    ann = labeling.add_user(db, "ann", "annotator", "x").id
    a = labeling.next_assignment(db, ann, QueuePolicy(), now=0)
    shown = suggestions.suggestion_for_assignment(db, a.id)
    renumbered = [2 if r == 3 else r for r in shown.ranks]  # (1, 1, 2): the same order
    first = labeling.submit_assignment(db, a.id, ann, validate_submission(
        a.candidate_ids, renumbered), now=1)
    assert db["rankings"].get(first.ranking_id)["suggestion_accepted"] == 1
    changed = revisions.revise_submission(db, first.ranking_id, ann, validate_submission(
        a.candidate_ids, [1, 2, 3]), now=2)
    row = db["rankings"].get(changed.ranking_id)
    assert (row["suggestion_accepted"], row["suggestion_scorer"]) == (0, "bt:/rm")


def test_no_suggestion_leaves_the_flag_empty(db):
    _item(db)
    ann = labeling.add_user(db, "ann", "annotator", "x").id
    a = labeling.next_assignment(db, ann, QueuePolicy(), now=0)
    stored = labeling.submit_assignment(db, a.id, ann, validate_submission(a.candidate_ids,
                                                                           [1, 2, 3]), now=1)
    row = db["rankings"].get(stored.ranking_id)
    assert (row["suggestion_accepted"], row["suggested_ranks"]) == (None, None)
