"""Preference pairs from TRL-format files and from the app's database."""

import json
import time

import pytest

from data import store
from data.preferences import (
    DROP_DISAGREED,
    DROP_EMPTY,
    DROP_IDENTICAL,
    PreferenceSourceError,
    load_db_pairs,
    load_preference_file,
    rows_to_pairs,
)

USER = {"role": "user", "content": "What is tea?"}


def assistant(text):
    return {"role": "assistant", "content": text}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_standard_explicit_prompt_is_raw_text():
    [pair] = rows_to_pairs([{"prompt": "Q: tea?\nA:", "chosen": " A drink.",
                             "rejected": " A car."}], "t").pairs
    assert not pair.is_chat
    assert pair.chosen_conversation() == "Q: tea?\nA: A drink."
    assert pair.rejected_conversation() == "Q: tea?\nA: A car."


def test_standard_implicit_prompt_groups_by_shared_prefix():
    rows = [{"chosen": "Human: hi Assistant: hello", "rejected": "Human: hi Assistant: go away"}]
    [pair] = rows_to_pairs(rows, "t").pairs
    assert pair.prompt == "" and pair.chosen_conversation() == rows[0]["chosen"]
    assert pair.prompt_key() == "Human: hi Assistant: "


def test_conversational_with_explicit_prompt_and_margin():
    [pair] = rows_to_pairs([{"prompt": [USER], "chosen": [assistant("A drink.")],
                             "rejected": [assistant("A car.")], "margin": "1.5"}], "t").pairs
    assert pair.is_chat and pair.margin == 1.5
    assert pair.chosen_conversation() == [USER, assistant("A drink.")]


def test_conversational_implicit_prompt_is_the_shared_leading_messages():
    history = [USER, assistant("A drink."), {"role": "user", "content": "Hot?"}]
    [pair] = rows_to_pairs([{"chosen": history + [assistant("Usually.")],
                             "rejected": history + [assistant("Never.")]}], "t").pairs
    assert pair.prompt == history
    assert pair.chosen == [assistant("Usually.")] and pair.rejected == [assistant("Never.")]


def test_full_conversations_repeating_a_string_prompt_are_trimmed():
    # UltraFeedback-binarized style: prompt string, chosen/rejected whole conversations.
    [pair] = rows_to_pairs([{"prompt": "What is tea?", "chosen": [USER, assistant("A drink.")],
                             "rejected": [USER, assistant("A car.")]}], "t").pairs
    assert pair.prompt == [USER] and pair.chosen == [assistant("A drink.")]


def test_chat_prompt_with_string_answers():
    [pair] = rows_to_pairs([{"prompt": [USER], "chosen": "A drink.", "rejected": "A car."}],
                           "t").pairs
    assert pair.chosen_conversation() == [USER, assistant("A drink.")]


def test_identical_and_empty_rows_are_dropped_and_counted():
    rows = [
        {"prompt": [USER], "chosen": [assistant("same")], "rejected": [assistant("same")]},
        {"prompt": [USER], "chosen": [assistant("  ")], "rejected": [assistant("x")]},
        {"prompt": "p", "chosen": "", "rejected": "y"},
        {"prompt": "p", "chosen": "same", "rejected": "same"},
        {"prompt": [USER], "chosen": [assistant("good")], "rejected": [assistant("bad")]},
    ]
    load = rows_to_pairs(rows, "t")
    assert len(load.pairs) == 1
    assert load.dropped == {DROP_IDENTICAL: 2, DROP_EMPTY: 2}


def test_nothing_usable_is_an_error_naming_the_reasons():
    rows = [{"prompt": "p", "chosen": "same", "rejected": "same"},
            {"prompt": "p", "chosen": "x", "rejected": " "}]
    with pytest.raises(PreferenceSourceError, match="no usable preference pairs.*1 empty response"
                                                    ".*1 identical chosen/rejected"):
        rows_to_pairs(rows, "t")


@pytest.mark.parametrize("row,message", [
    ({"prompt": "p", "chosen": "x"}, "has no column 'rejected'"),
    ({"text": "x"}, "has no column 'chosen' or 'rejected'"),
    ({"chosen": [assistant("x")], "rejected": "y"}, "must be a chat message list"),
    ({"chosen": 3, "rejected": "y"}, "both be strings or both chat message lists"),
    ({"chosen": [{"role": "bot", "content": "x"}], "rejected": [assistant("y")]},
     "a chat message must be"),
    ({"chosen": "x", "rejected": "y", "margin": "big"}, "'margin' must be a number"),
])
def test_malformed_rows_raise_clear_errors(row, message):
    with pytest.raises(PreferenceSourceError, match=message):
        rows_to_pairs([row], "data.jsonl")


def test_reads_jsonl_parquet_and_save_to_disk(tmp_path):
    import datasets

    rows = [{"prompt": "p", "chosen": "good", "rejected": "bad"},
            {"prompt": "q", "chosen": "fine", "rejected": "poor"}]
    assert len(load_preference_file(write_jsonl(tmp_path / "p.jsonl", rows)).pairs) == 2
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "p.parquet"))
    assert len(load_preference_file(str(tmp_path / "p.parquet")).pairs) == 2
    datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)}).save_to_disk(
        str(tmp_path / "saved"))
    assert len(load_preference_file(str(tmp_path / "saved"), split="test").pairs) == 2
    with pytest.raises(PreferenceSourceError, match="has no split 'train'"):
        load_preference_file(str(tmp_path / "saved"))
    with pytest.raises(PreferenceSourceError, match="does not exist"):
        load_preference_file(str(tmp_path / "missing.jsonl"))


# --- the app's database -----------------------------------------------------------------------

def make_store(tmp_path):
    db = store.open_store(tmp_path / "r.db")
    [prompt_id] = store.upsert_prompts(db, [([USER], "test", "0")])
    run_id = store.get_or_create_run(db, store.RunSettings("m", "transformers", 4, 0.8, 0.9, 16, 0))
    ids = store.add_candidates(db, prompt_id, run_id, [
        store.CandidateIn(text, 2, "stop") for text in ("best", "good", "bad", "best")])
    users = []
    for name in ("ann", "bob", "cy"):
        users.append(db.execute(
            "INSERT INTO users (name, role, password_hash, created_at) VALUES (?, 'annotator', "
            "'x', 0)", [name]).lastrowid)
    return db, prompt_id, ids, users


def add_judgments(db, prompt_id, user_id, pairs):
    """pairs: (chosen, rejected, tie) candidate ids, stored as one ranking's comparisons."""
    ranking_id = db.execute(
        "INSERT INTO rankings (submission_key, user_id, prompt_id, candidate_ids, ranks, "
        "submitted_at) VALUES (?, ?, ?, '[]', '[]', ?)",
        [f"{user_id}-{time.time_ns()}", user_id, prompt_id, time.time()]).lastrowid
    for chosen, rejected, tie in pairs:
        db.execute("INSERT INTO comparisons (ranking_id, prompt_id, chosen_id, rejected_id, tie) "
                   "VALUES (?, ?, ?, ?, ?)", [ranking_id, prompt_id, chosen, rejected, int(tie)])


def test_db_pairs_carry_prompt_texts_ties_and_candidate_ids(tmp_path):
    db, prompt_id, (best, good, bad, best_copy), (ann, _, _) = make_store(tmp_path)
    add_judgments(db, prompt_id, ann, [(best, good, False), (good, bad, True),
                                       (best, best_copy, False)])
    load = load_db_pairs(db)
    assert [(p.chosen_candidate_id, p.rejected_candidate_id, p.tie) for p in load.pairs] == [
        (best, good, False), (good, bad, True)]
    first = load.pairs[0]
    assert first.chosen_conversation() == [USER, assistant("best")]
    assert first.rejected_conversation() == [USER, assistant("good")]
    assert load.dropped == {DROP_IDENTICAL: 1}  # a duplicate candidate compared with itself
    assert load.ties == 1


def test_agreed_only_keeps_pairs_that_every_overlapping_annotator_judged_alike(tmp_path):
    db, prompt_id, (best, good, bad, _), (ann, bob, cy) = make_store(tmp_path)
    add_judgments(db, prompt_id, ann, [(best, good, False), (good, bad, False), (best, bad, False)])
    add_judgments(db, prompt_id, bob, [(best, good, False), (bad, good, False), (best, bad, True)])
    add_judgments(db, prompt_id, cy, [(best, good, False)])
    load = load_db_pairs(db, agreed_only=True)
    # best > good: 3 annotators agree -> one pair. good/bad: they disagree. best/bad: a tie.
    assert [(p.chosen_candidate_id, p.rejected_candidate_id) for p in load.pairs] == [(best, good)]
    assert load.dropped == {DROP_DISAGREED: 4}
    assert len(load_db_pairs(db).pairs) == 7


def test_db_without_rankings_is_an_error(tmp_path):
    db, *_ = make_store(tmp_path)
    with pytest.raises(PreferenceSourceError, match="has no ranked pairs yet"):
        load_db_pairs(db)
