"""Export: scores and pair rules by hand, and a labeled database (ties, all-bad votes, skips,
demonstrations, three annotators on every item) exported to the expected rows."""

from __future__ import annotations

import json
import random

import pytest

from data import export, labeling, store
from data.export import ExportConfig, ExportError
from data.rankings import RankedPair, validate_submission

A, B, C = 0, 1, 2  # candidate idx within an item

# Per prompt, per annotator: ranks by candidate idx, or "skip", plus flags.
PLAN = {
    0: {"ann": dict(ranks=[1, 2, 3]), "bob": dict(ranks=[1, 2, 3]), "cat": dict(ranks=[1, 2, 3])},
    1: {"ann": dict(ranks=[1, 1, 3]), "bob": dict(ranks=[2, 1, 3]), "cat": "skip"},
    2: {"ann": dict(ranks=None, all_bad=True, demonstration="Ann's own answer to 2."),
        "bob": "skip",
        "cat": dict(ranks=[3, 2, 1], demonstration="Cat's own answer to 2.")},
    3: {"ann": "skip", "bob": dict(ranks=None, all_bad=True),
        "cat": dict(ranks=[1, 2, 3], all_bad=True)},
}
ANNOTATORS = ("ann", "bob", "cat")


def candidate_texts(p: int) -> list[str]:
    texts = [f"Answer {p}.{j}: {p * 10 + j}" for j in range(3)]
    if p == 3:
        texts[B] = texts[A]  # identical candidates: their pair teaches nothing
    return texts


def make_export_db(path, *, plan=PLAN) -> str:
    """Four prompts × 3 candidates, every item ranked (or skipped) by ann, bob and cat as PLAN
    says, through the real queue and submit path."""
    db = store.open_store(path)
    run_id = store.get_or_create_run(db, store.RunSettings("tiny-model", "transformers", 3, 0.7,
                                                           0.95, 48, 5))
    prompt_index = {}
    for p in plan:
        [prompt_id] = store.upsert_prompts(
            db, [([{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": f"Question {p}?"}], "test", str(p))])
        prompt_index[prompt_id] = p
        store.add_candidates(db, prompt_id, run_id,
                             [store.CandidateIn(t, 4, "stop") for t in candidate_texts(p)])
    users = {name: labeling.add_user(db, name, "annotator", "x").id for name in ANNOTATORS}
    labeling.sync_items(db)
    policy = labeling.QueuePolicy(overlap=len(ANNOTATORS))
    rng = random.Random(1)
    for name, user_id in users.items():
        while (a := labeling.next_assignment(db, user_id, policy, now=0, rng=rng)) is not None:
            action = plan[prompt_index[a.prompt_id]][name]
            if action == "skip":
                submission = validate_submission(a.candidate_ids, None, skipped=True)
            else:
                idx = {c["id"]: c["idx"] for c in labeling.item_candidates(db, a.item_id)}
                ranks = action["ranks"]
                shown = None if ranks is None else [ranks[idx[c]] for c in a.candidate_ids]
                submission = validate_submission(
                    a.candidate_ids, shown, all_bad=action.get("all_bad", False),
                    demonstration=action.get("demonstration", ""), rationale=f"by {name}")
            labeling.submit_assignment(db, a.id, user_id, submission, now=1)
    db.close()
    return str(path)


@pytest.fixture
def db(tmp_path):
    return store.open_store(make_export_db(tmp_path / "votes.db"))


def rows_of(built, config="preferences"):
    d = built.preferences if config == "preferences" else built.rankings
    return d["train"].to_list() + d["test"].to_list()


# --- pure functions -------------------------------------------------------------------------------

def test_response_scores_by_hand():
    assert export.response_scores([7, 8, 9], [1, 2, 3]) == {7: 1.0, 8: 0.5, 9: 0.0}
    # A tie counts half: 7 and 9 tie for last, each beaten by 8.
    assert export.response_scores([7, 8, 9], [2, 1, 2]) == {7: 0.25, 8: 1.0, 9: 0.25}
    # A demonstration beats all three candidates; ranks [3, 2, 1] over four responses.
    assert export.response_scores([7, 8, 9], [3, 2, 1], 50) == pytest.approx(
        {50: 1.0, 9: 2 / 3, 8: 1 / 3, 7: 0.0})
    # Unranked candidates tie among themselves below the demonstration.
    assert export.response_scores([7, 8], None, 50) == {50: 1.0, 7: 0.25, 8: 0.25}


def test_best_worst_pairs_by_hand():
    assert export.best_worst_pairs([7, 8, 9], [2, 1, 3]) == [RankedPair(8, 9)]
    assert export.best_worst_pairs([7, 8, 9], [1, 1, 3]) == [RankedPair(7, 9), RankedPair(8, 9)]
    assert export.best_worst_pairs([7, 8, 9], [2, 1, 2], 50) == [RankedPair(50, 7), RankedPair(50, 9)]
    assert export.best_worst_pairs([7, 8], None, 50) == [RankedPair(50, 7), RankedPair(50, 8)]
    assert export.best_worst_pairs([7, 8], [1, 1]) == []  # one big tie: no preference
    assert export.best_worst_pairs([7, 8], None) == []


def test_held_out_prompts_keep_one_prompt_out_and_follow_the_seed():
    assert export.held_out_prompts([1], 0.5, 0) == set()
    assert export.held_out_prompts(range(10), 0.0, 0) == set()
    assert len(export.held_out_prompts(range(10), 0.05, 0)) == 1
    assert len(export.held_out_prompts(range(10), 0.3, 0)) == 3
    assert export.held_out_prompts(range(10), 0.3, 0) == export.held_out_prompts(range(10), 0.3, 0)
    picks = {frozenset(export.held_out_prompts(range(10), 0.3, s)) for s in range(5)}
    assert len(picks) > 1


def test_config_rejects_bad_values():
    with pytest.raises(ExportError, match="format"):
        ExportConfig(format="sharegpt")
    with pytest.raises(ExportError, match="min-agreement"):
        ExportConfig(min_agreement=1.5)


# --- the labeled database ---------------------------------------------------------------------

def test_all_pairs_counts_scores_and_agreement(db):
    built = export.build_export(db, ExportConfig())
    rows = rows_of(built)
    by_prompt = {}
    for row in rows:
        question = row["prompt"][-1]["content"]
        by_prompt[question] = by_prompt.get(question, 0) + 1
    # P0: 3 annotators × 3 pairs. P1: ann 2 (her tie left out) + bob 3. P2: ann's demonstration
    # vs 3 unranked candidates + cat's demonstration vs 3 + cat's 3 ranked pairs. P3: cat's
    # ranked all-bad vote, less the pair of identical candidates; bob's unranked one gives none.
    assert by_prompt == {"Question 0?": 9, "Question 1?": 5, "Question 2?": 9, "Question 3?": 2}
    assert built.dropped == {export.DROP_TIE: 1, export.DROP_IDENTICAL: 1}
    assert not any(row["tie"] for row in rows)
    assert {row["annotator"] for row in rows} == {"annotator-1", "annotator-2", "annotator-3"}

    def find(question, chosen, rejected, annotator):
        [row] = [r for r in rows if r["prompt"][-1]["content"] == question
                 and r["chosen"][0]["content"].startswith(chosen)
                 and r["rejected"][0]["content"].startswith(rejected)
                 and r["annotator"] == annotator]
        return row

    best_worst = find("Question 0?", "Answer 0.0", "Answer 0.2", "annotator-1")
    assert (best_worst["score_chosen"], best_worst["score_rejected"], best_worst["margin"]) == (
        1.0, 0.0, 1.0)
    assert best_worst["agreement"] == 1.0
    assert best_worst["annotators"] == ["annotator-1", "annotator-2", "annotator-3"]
    assert best_worst["prompt"] == [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Question 0?"}]
    # ann tied 1.0 and 1.1, bob preferred 1.1: each judgment agrees with half.
    disputed = find("Question 1?", "Answer 1.1", "Answer 1.0", "annotator-2")
    assert disputed["agreement"] == 0.5 and disputed["margin"] == 0.5
    demo = find("Question 2?", "Cat's own", "Answer 2.2", "annotator-3")
    assert demo["chosen_is_demonstration"] and demo["agreement"] is None
    assert demo["margin"] == pytest.approx(1 - 2 / 3)
    assert demo["annotators"] == ["annotator-3"]
    assert {r["source_run"] for r in rows} == {1}


def test_ties_included_are_flagged_with_zero_margin(db):
    rows = rows_of(export.build_export(db, ExportConfig(ties="include")))
    ties = [r for r in rows if r["tie"]]
    assert len(rows) == 26 and len(ties) == 1
    assert ties[0]["margin"] == 0 and ties[0]["score_chosen"] == ties[0]["score_rejected"] == 0.75


def test_best_worst_pairs_from_the_database(db):
    rows = rows_of(export.build_export(db, ExportConfig(pairs="best-worst")))
    # P0 3 × 1; P1 ann 2 (two tied best) + bob 1; P2 ann 3 + cat 1; P3 cat 1.
    assert len(rows) == 11
    assert all(r["margin"] > 0 for r in rows)


@pytest.mark.parametrize("threshold, expected", [(0.6, 13), (0.5, 14), (1.0, 13)])
def test_min_agreement_keeps_pairs_judged_alike_by_several(db, threshold, expected):
    built = export.build_export(db, ExportConfig(min_agreement=threshold))
    rows = rows_of(built)
    assert len(rows) == expected
    assert all(r["agreement"] is not None and r["agreement"] >= threshold for r in rows)
    assert built.dropped[export.DROP_SINGLE] == 11  # all of P2 and P3: one judge each


def test_names_only_when_asked(db):
    names = {r["annotator"] for r in rows_of(export.build_export(
        db, ExportConfig(keep_annotator_names=True)), "rankings")}
    assert names == {"ann", "bob", "cat"}
    card = export.build_export(db, ExportConfig()).card
    assert "ann" not in card.replace("annotator", "") and "bob" not in card


def test_raw_rankings_reimport_reproduces_the_vote_log(db):
    built = export.build_export(db, ExportConfig(test_fraction=0.25))
    raw = rows_of(built, "rankings")
    assert len(raw) == 12 and sum(r["skipped"] for r in raw) == 3
    assert built.preferences["test"].num_rows > 0 and built.rankings["test"].num_rows > 0
    back = export.rankings_from_rows(raw)
    assert back == export.read_rankings(db)
    # Straight from the table: same shown order, ranks and flags for every vote.
    stored = {r["id"]: r for r in db.query("SELECT * FROM rankings")}
    for record in back:
        row = stored[record.ranking_id]
        assert record.candidate_ids == json.loads(row["candidate_ids"])
        assert record.ranks == (None if row["ranks"] is None else json.loads(row["ranks"]))
        assert (record.has_tie, record.all_bad, record.skipped) == (
            bool(row["has_tie"]), bool(row["all_bad"]), bool(row["skipped"]))
        assert record.rationale == row["rationale"] and record.submitted_at == row["submitted_at"]
        assert record.demonstration_id == row["demonstration_id"]
    # The pairs follow from the raw rankings alone.
    again = export.select_pairs(back, ExportConfig())
    assert len(again.rows) == len(rows_of(built))


def test_card_reports_counts_agreement_generation_and_license(db):
    card = export.build_export(db, ExportConfig(license="cc-by-4.0")).card
    assert card.startswith("---\nlicense: cc-by-4.0\n")
    assert "config_name: rankings" in card and "default: true" in card
    assert "12 submissions by 3 annotators" in card
    assert "| 1 | tiny-model | transformers | 3 | 0.7 | 0.95 | 48 | 5 |" in card
    assert "Krippendorff's alpha (ordinal, ranks): " in card
    assert "2 items ranked by two or more annotators" in card  # P0, P1; P3 has one ranking
    # Agreement over P0 (3 annotator pairs × 3 candidate pairs: 9 of 9) and P1 (ann/bob:
    # 2 of 3): 11 of 12.
    assert f"{11 / 12:.3f}" in card


def test_sft_conversations_from_demonstrations_and_chosen_responses(db):
    demos = export.sft_conversations(db, "demonstrations")
    assert [c[-1]["content"] for c in demos] == ["Ann's own answer to 2.", "Cat's own answer to 2."]
    assert demos[0][:-1] == [{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Question 2?"}]
    chosen = sorted(c[-1]["content"] for c in export.sft_conversations(db, "chosen"))
    assert chosen == ["Ann's own answer to 2.", "Answer 0.0: 0", "Answer 1.0: 10",
                      "Answer 1.1: 11", "Cat's own answer to 2."]


def test_empty_database_is_a_clear_error(tmp_path):
    db = store.open_store(tmp_path / "empty.db")
    with pytest.raises(ExportError, match="no rankings to export yet"):
        export.build_export(db, ExportConfig(), db_label="database empty.db")


def test_only_skips_is_a_clear_error(tmp_path):
    plan = {0: {"ann": "skip", "bob": "skip", "cat": dict(ranks=None, all_bad=True)}}
    db = store.open_store(make_export_db(tmp_path / "skips.db", plan=plan))
    with pytest.raises(ExportError, match="3 rankings but no preference pairs"):
        export.build_export(db, ExportConfig())


@pytest.mark.parametrize("repo_id", ["no-owner", "owner/", "a/b/c", "owner/bad name",
                                     "owner/-dash", "owner/" + "x" * 100])
def test_invalid_repo_ids_are_refused(repo_id):
    with pytest.raises(ExportError, match="invalid Hub repository id"):
        export.check_repo_id(repo_id)
    assert export.check_repo_id("rank-loop/prefs_v1.2") == "rank-loop/prefs_v1.2"
