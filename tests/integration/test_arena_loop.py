"""The loop's people's verdict: from the second iteration on, some of each prompt's candidates
come from the previous policy, blind; simulated annotators rank them with the rest, and the
report gives the win rate of new over previous with its interval. Those candidates are not
trained on."""

from __future__ import annotations

import json

from data import store
from data.scored_pairs import pairs_from_db


def test_mixed_candidates_give_a_win_rate_and_are_not_trained_on(tiny_model_dir, tmp_path,
                                                                  capsys):
    from launch.cli import main
    from policy.generate import policy_name

    db_file, out = tmp_path / "loop.db", tmp_path / "policy"
    args = ["loop", "--db", str(db_file), "--iterations", "2", "--feedback",
            "simulated:tests.unit.sim_scores:shorter_is_better", "--sim-annotators", "2",
            "--sim-overlap", "2", "--output", str(out), "--model", tiny_model_dir,
            "--limit", "6", "--k", "4", "--backend", "transformers", "--max-new-tokens", "5",
            "--eval-fraction", "0.34", "--lr", "1e-3", "--batch-size", "4"]
    assert main(args) == 0
    capsys.readouterr()
    db = store.open_store(db_file)
    rows = list(db.query("SELECT * FROM policy_iterations ORDER BY iteration"))
    first, second = (json.loads(r["report"]) for r in rows)
    assert first["human_win_rate"] is None  # nothing earlier to compare with

    # Iteration 2's round: 2 of each prompt's 4 candidates from the base policy.
    names = store.candidate_policies(db)
    run2 = [c["id"] for c in store.candidates_for_run(db, rows[1]["run_id"])]
    base, iter1 = policy_name(tiny_model_dir), str((out / "iter-1").resolve())
    assert sorted(names[c][0] for c in run2) == [iter1] * 12 + [base] * 12
    assert "+ 2 of 4 from" in db["generation_runs"].get(rows[1]["run_id"])["model"]

    # 12 rankings (6 items, 2 annotators) of 2 new × 2 previous candidates: 48 votes.
    assert second["verdict_on"] == 1 and second["human_votes"] == 48
    assert 0.0 <= second["ci_low"] <= second["human_win_rate"] <= second["ci_high"] <= 1.0
    assert second["judge_win_rate"] == first["win_rate"]
    # The annotators prefer shorter answers: the win rate is the share of those votes where
    # iter-1's answer was shorter (ties half), recomputed here from the texts.
    texts = {c["id"]: c for c in store.candidates_for_run(db, rows[1]["run_id"])}
    rankings = list(db.query("SELECT candidate_ids, ranks FROM rankings r JOIN items i "
                             "ON i.id = r.item_id WHERE i.run_id = ?", [rows[1]["run_id"]]))
    score, n = 0.0, 0
    for r in rankings:
        ids, ranks = json.loads(r["candidate_ids"]), json.loads(r["ranks"])
        rank = dict(zip(ids, ranks))
        for a in ids:
            for b in ids:
                if names[a][0] == iter1 and names[b][0] == base:
                    score += 1.0 if rank[a] < rank[b] else 0.5 if rank[a] == rank[b] else 0.0
                    n += 1
    assert n == 48 and abs(second["human_win_rate"] - score / n) < 1e-12
    assert texts  # the candidates exist

    # Only the current policy's candidates make training pairs.
    previous = {c for c in run2 if names[c][0] == base}
    pairs = pairs_from_db(db, run_id=rows[1]["run_id"], exclude=previous)
    used = {i for p in pairs.pairs for i in (p.chosen_candidate_id, p.rejected_candidate_id)}
    assert used and not used & previous
    assert second["train_pairs"] <= 4  # one best/worst pair per training prompt at most

    # The report across iterations carries the verdict.
    table = (out / "loop_report.md").read_text()
    assert "people: new vs previous" in table.splitlines()[0]
    assert f"{second['human_win_rate']:.4f}" in table
    saved = json.loads((out / "loop_report.json").read_text())
    assert {"human_win_rate", "ci_low", "ci_high"} <= set(saved[1])
    assert "win rate, new over previous" in (out / "loop_report.svg").read_text()
