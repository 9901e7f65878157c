"""What counts as a label is decided once (data.votes): a gold vote, a revised vote, a tie and
an "all bad" vote reach reward training, policy pairs, SFT and the exported pairs by the same
rule."""

from data import export, labeling, revisions, store
from data.export import ExportConfig
from data.labeling import QueuePolicy
from data.scored_pairs import groups_from_rankings
from data.preferences import load_db_pairs
from data.rankings import validate_submission


def _vote(db, user, ranks_by_text, **kw):
    """Takes the user's next task and ranks it, ranks given per candidate text."""
    task = labeling.next_assignment(db, user, QueuePolicy(overlap=3, gold_rate=0.0), now=0)
    ranks = None if ranks_by_text is None else [ranks_by_text[t] for t in task.texts]
    stored = labeling.submit_assignment(
        db, task.id, user, validate_submission(task.candidate_ids, ranks, **kw), now=1)
    return task, stored


def test_gold_revised_tied_and_all_bad_votes_reach_every_consumer_by_one_rule(tmp_path):
    db = store.open_store(tmp_path / "r.db")
    run = store.get_or_create_run(db, store.RunSettings("m", "vllm", 3, 0.8, 0.9, 8, 0))
    for name in ("tie", "revised", "allbad"):
        [prompt] = store.upsert_prompts(db, [([{"role": "user", "content": name}], "t", name)])
        store.add_candidates(db, prompt, run, [store.CandidateIn(f"{name}-{c}", 2, "stop")
                                               for c in "abc"])
    labeling.sync_items(db)
    labeling.add_gold_item(db, [{"role": "user", "content": "gold"}],
                           ["gold-a", "gold-b", "gold-c"], [1, 2, 3])
    ann = labeling.add_user(db, "ann", "annotator", "x").id

    _vote(db, ann, {"tie-a": 1, "tie-b": 1, "tie-c": 3})
    task, first = _vote(db, ann, {"revised-a": 3, "revised-b": 2, "revised-c": 1})
    revisions.revise_submission(db, first.ranking_id, ann, validate_submission(
        task.candidate_ids, [{"revised-a": 1, "revised-b": 2, "revised-c": 3}[t]
                             for t in task.texts]), now=2)
    _vote(db, ann, None, all_bad=True)
    gold_task = labeling.next_assignment(db, ann, QueuePolicy(gold_rate=1.0), now=0)
    assert gold_task is not None and gold_task.is_gold
    labeling.submit_assignment(db, gold_task.id, ann, validate_submission(
        gold_task.candidate_ids, [1, 2, 3]), now=1)

    def text_pairs(pairs):
        return sorted((c, r, bool(t)) for c, r, t in pairs)

    # Reward training: every comparison of the label votes.
    reward = text_pairs((p.chosen[0]["content"], p.rejected[0]["content"], p.tie)
                        for p in load_db_pairs(db).pairs)
    # The exported preference pairs, ties kept: the same judgments.
    rows = export.select_pairs(export.read_rankings(db),
                               ExportConfig(pairs="all", ties="include")).rows
    exported = text_pairs((dict(zip(r.record.candidate_ids, r.record.candidates))[r.pair.chosen],
                           dict(zip(r.record.candidate_ids, r.record.candidates))[r.pair.rejected],
                           r.pair.tie) for r in rows)
    assert reward == exported
    assert {c.split("-")[0] for c, _, _ in reward} == {"tie", "revised"}  # no gold, no all-bad
    assert ("revised-a", "revised-c", False) in reward  # the revision, not the first version
    assert ("revised-c", "revised-a", False) not in reward
    assert sum(t for _, _, t in reward) == 1  # the tie, flagged
    # Policy pairs (REBEL/DPO from rankings): the same prompts, the revision's order.
    groups = {g.prompt[0]["content"]: {c.text: c.reward for c in g.candidates}
              for g in groups_from_rankings(db)}
    assert set(groups) == {"tie", "revised"}
    assert groups["revised"]["revised-a"] > groups["revised"]["revised-c"]
    assert groups["tie"]["tie-a"] == groups["tie"]["tie-b"] > groups["tie"]["tie-c"]
    # SFT: the best answers of the same label votes.
    chosen = sorted(c[-1]["content"] for c in export.sft_conversations(db, "chosen"))
    assert chosen == ["revised-a", "tie-a", "tie-b"]
