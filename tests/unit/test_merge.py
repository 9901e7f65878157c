"""Merging databases: rows matched by content, references rewritten, nothing stored twice."""

import json
import random

import pytest

from data import labeling, store
from data.labeling import QueuePolicy
from data.merge import in_shard, merge_databases, parse_shard
from data.rankings import validate_submission
from tests.labeling_fixtures import make_labeling_db


def test_shards_partition_prompts_by_hash():
    prompts = [[{"role": "user", "content": f"prompt {i}"}] for i in range(60)]
    owners = [[i for i in range(3) if in_shard(p, i, 3)] for p in prompts]
    assert all(len(o) == 1 for o in owners)
    assert {o[0] for o in owners} == {0, 1, 2}
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="shard must be i/n"):
            parse_shard(bad)


def rank_everything(path, user: str, *, now: float, with_demonstration: bool = False):
    """``user`` ranks every open item of ``path`` (candidate order shuffled, best first)."""
    db = store.open_store(path)
    user_id = labeling.get_user(db, user).id
    rng = random.Random(now)
    while (a := labeling.next_assignment(db, user_id, QueuePolicy(overlap=2), now=now,
                                         rng=rng)) is not None:
        ranks = list(range(1, len(a.candidate_ids) + 1))
        labeling.submit_assignment(db, a.id, user_id, validate_submission(
            a.candidate_ids, ranks, demonstration="my own answer" if with_demonstration else "",
            rationale=f"{user} at {now}"), now=now)
    db.close()


def votes(path) -> set:
    """Each vote as content: (voter, prompt, texts in the order shown, ranks, demonstration)."""
    db = store.open_store(path)
    text = {r["id"]: r["text"] for r in db["candidates"].rows}
    out = set()
    for r in db["rankings"].rows:
        user = db["users"].get(r["user_id"])["name"]
        prompt = db["prompts"].get(r["prompt_id"])["messages"]
        pairs = sorted((text[c["chosen_id"]], text[c["rejected_id"]]) for c in db.query(
            "SELECT * FROM comparisons WHERE ranking_id = ?", [r["id"]]))
        out.add((user, prompt, tuple(text[c] for c in json.loads(r["candidate_ids"])),
                 r["ranks"], text.get(r["demonstration_id"]), tuple(pairs)))
    db.close()
    return out


def test_merging_two_copies_of_one_set_stores_each_row_once(tmp_path):
    # Two databases with the same prompts, run and candidates (as two nodes would write), each
    # with its own votes and scores; their assignment ids clash.
    a = make_labeling_db(tmp_path / "a.db", n_prompts=4, k=3)
    b = make_labeling_db(tmp_path / "b.db", n_prompts=4, k=3)
    rank_everything(a, "ann", now=100.0)
    rank_everything(b, "bob", now=200.0, with_demonstration=True)
    db = store.open_store(a)
    store.put_model_scores(db, [store.ModelScore(c["id"], "bt:/rm", 0.5 * c["id"])
                                for c in db["candidates"].rows])
    db.close()

    merged = str(tmp_path / "merged.db")
    first = merge_databases(merged, [a, b])
    assert first[0].added["candidates"] == 12 and first[1].existing["candidates"] == 12
    assert first[1].added["candidates"] == 4  # bob's demonstrations
    db = store.open_store(merged)
    counts = store.counts(db)
    assert counts["prompts"] == 4 and counts["candidates"] == 16
    assert counts["users"] == 3 and counts["rankings"] == 8 and counts["model_scores"] == 12
    assert db["items"].count == 4 and db["assignments"].count == 8
    # Scores follow their candidates' content.
    texts = {r["id"]: r["text"] for r in db["candidates"].rows}
    source = store.open_store(a)
    expected = {(c["text"], 0.5 * c["id"]) for c in source["candidates"].rows}
    assert {(texts[s["candidate_id"]], s["score"]) for s in db["model_scores"].rows} == expected
    db.close()
    assert votes(merged) == votes(a) | votes(b)
    assert len(votes(merged)) == 8

    # Merging again, or merging the merged file into a copy of a source, adds nothing.
    again = merge_databases(merged, [a, b])
    assert all(sum(s.added.values()) == 0 for s in again), [s.line() for s in again]
    assert store.counts(store.open_store(merged)) == counts
    back = merge_databases(a, [merged])
    assert back[0].added["rankings"] == 4 and back[0].added["candidates"] == 4
    assert votes(a) == votes(merged)


def test_a_conflicting_candidate_keeps_the_targets_text_and_is_counted(tmp_path):
    a = make_labeling_db(tmp_path / "a.db", n_prompts=2, k=2)
    b = make_labeling_db(tmp_path / "b.db", n_prompts=2, k=2)
    db = store.open_store(b)
    db.execute("UPDATE candidates SET text = 'changed' WHERE id = 1")
    db.close()
    [summary] = merge_databases(a, [b])
    assert summary.conflicts == 1 and "1 candidates differ" in summary.line()
    assert store.open_store(a)["candidates"].get(1)["text"] != "changed"


def test_a_missing_or_foreign_source_writes_nothing(tmp_path):
    target = str(tmp_path / "t.db")
    good = make_labeling_db(tmp_path / "a.db", n_prompts=1, k=2)
    with pytest.raises(store.StoreError, match="does not exist"):
        merge_databases(target, [good, str(tmp_path / "missing.db")])
    other = tmp_path / "other.db"
    store.connect(other).execute("CREATE TABLE t (x)")
    with pytest.raises(store.StoreError, match="not a RankLoop database"):
        merge_databases(target, [good, str(other)])
    assert not (tmp_path / "t.db").exists()
    with pytest.raises(ValueError, match="target database itself"):
        merge_databases(good, [good])
