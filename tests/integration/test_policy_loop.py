"""`rankloop loop` end to end on a tiny policy and a tiny Bradley-Terry reward model: two
iterations, the second sampling from the first one's policy, each with a report."""

import json
import re

import pytest

from data import store


@pytest.fixture(scope="module")
def reward_model_dir(tiny_model_dir, tmp_path_factory) -> str:
    """A saved one-label reward model (random score head) on the tiny Llama."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.config.pad_token_id = tokenizer.pad_token_id
    path = tmp_path_factory.mktemp("tiny-rm")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_two_iterations_record_and_chain_policies(tiny_model_dir, reward_model_dir, tmp_path,
                                                  capsys):
    from launch.cli import main
    from policy.loop import current_policy

    db_file = tmp_path / "loop.db"
    args = ["loop", "--db", str(db_file), "--scorer", f"bt:{reward_model_dir}",
            "--output", str(tmp_path / "policy"), "--model", tiny_model_dir, "--limit", "10",
            "--k", "3", "--backend", "transformers", "--max-new-tokens", "6",
            "--eval-fraction", "0.3", "--lr", "1e-3", "--batch-size", "4"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "iteration 1: policy saved to" in first and "win rate" in first

    db = store.open_store(db_file)
    iter1 = str((tmp_path / "policy" / "iter-1").resolve())
    assert current_policy(db) == iter1
    [row] = db.query("SELECT * FROM policy_iterations")
    report = json.loads(row["report"])
    assert row["base_model"] == tiny_model_dir and row["model"] == iter1
    assert report["held_out_prompts"] == 3 and report["train_pairs"] >= 1
    for key in ("reward_old", "reward_new", "win_rate", "kl", "length_old", "length_new"):
        assert isinstance(report[key], float), key
    assert 0 <= report["win_rate"] <= 1 and 1 <= report["length_new"] <= 6
    run1 = db["generation_runs"].get(row["run_id"])
    assert run1["model"] == tiny_model_dir
    # Every candidate of the run was scored by the reward model.
    scored = db.execute("SELECT COUNT(*) FROM model_scores s JOIN candidates c "
                        "ON c.id = s.candidate_id WHERE c.run_id = ?", [row["run_id"]]).fetchone()
    assert scored[0] == 30

    # 2. The next iteration generates with the policy iteration 1 trained.
    assert main(args) == 0
    assert "iteration 2:" in capsys.readouterr().out
    rows = list(db.query("SELECT * FROM policy_iterations ORDER BY iteration"))
    assert [r["iteration"] for r in rows] == [1, 2]
    assert rows[1]["base_model"] == iter1
    assert db["generation_runs"].get(rows[1]["run_id"])["model"] == iter1
    assert (tmp_path / "policy" / "iter-2" / "iteration_report.json").is_file()


def test_an_unknown_scorer_fails_before_generating(tiny_model_dir, tmp_path, capsys):
    from launch.cli import main

    code = main(["loop", "--db", str(tmp_path / "l.db"), "--scorer", f"bt:{tmp_path}/none",
                 "--output", str(tmp_path / "p"), "--model", tiny_model_dir])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "l.db").exists()


def test_train_ppo_command_runs_against_a_reward_model(tiny_model_dir, reward_model_dir,
                                                       tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from launch.cli import main
    from training.metrics import read_metrics

    out = tmp_path / "ppo"
    assert main(["train", "ppo", "--scorer", f"bt:{reward_model_dir}", "--model", tiny_model_dir,
                 "--output", str(out), "--limit", "4", "--steps", "2", "--rollout-batch", "4",
                 "--minibatch", "2", "--ppo-epochs", "1", "--max-new-tokens", "4",
                 "--target-kl", "0.5", "--missing-eos-penalty", "1.0", "--lr", "1e-4"]) == 0
    assert "2 PPO steps" in capsys.readouterr().out
    metrics = read_metrics(out / "metrics.jsonl")
    assert len(metrics) == 2 and metrics[1]["objective/kl_coef"] != 0.05  # adaptive
    AutoModelForCausalLM.from_pretrained(out)


def test_a_ppo_iteration_trains_against_the_reward_model_and_is_recorded(
        tiny_model_dir, reward_model_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from launch.cli import main

    db_file = tmp_path / "loop.db"
    assert main(["loop", "--db", str(db_file), "--algorithm", "ppo", "--scorer",
                 f"bt:{reward_model_dir}", "--output", str(tmp_path / "policy"), "--model",
                 tiny_model_dir, "--limit", "8", "--k", "2", "--backend", "transformers",
                 "--max-new-tokens", "5", "--eval-fraction", "0.25", "--lr", "1e-4",
                 "--ppo-steps", "2", "--rollout-batch", "4", "--minibatch", "2"]) == 0
    out = capsys.readouterr().out
    assert "iteration 1:" in out and "PPO on 6 prompts" in out and "win rate" in out
    db = store.open_store(db_file)
    [row] = db.query("SELECT * FROM policy_iterations")
    report = json.loads(row["report"])
    assert row["algorithm"] == "ppo" and report["held_out_prompts"] == 2
    assert isinstance(report["reward_new"], float) and isinstance(report["kl"], float)
    metrics = (tmp_path / "policy" / "iter-1" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 2
    AutoModelForCausalLM.from_pretrained(tmp_path / "policy" / "iter-1")


def test_human_feedback_waits_for_rankings_made_in_the_app_store(tiny_model_dir, tmp_path):
    """`rankloop loop --feedback human` in its own process generates, then waits; an annotator
    ranks the new run's items through the labeling queue; REBEL trains on those rankings."""
    import os
    import subprocess
    import sys
    import time

    from data import labeling
    from data.rankings import Submission
    from labeler.auth import hash_password
    from tests.integration.test_policy_rebel import ROOT

    db_file = tmp_path / "loop.db"
    db = store.open_store(db_file)
    annotator = labeling.add_user(db, "ann", "annotator", hash_password("pw-12345678"))
    process = subprocess.Popen(
        [sys.executable, "-m", "launch.cli", "loop", "--db", str(db_file), "--feedback",
         "human", "--output", str(tmp_path / "policy"), "--model", tiny_model_dir,
         "--limit", "5", "--k", "3", "--backend", "transformers", "--max-new-tokens", "5",
         "--eval-fraction", "0.2", "--lr", "1e-3", "--wait-minutes", "5"],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        ranked, deadline = 0, time.monotonic() + 300
        while ranked < 4 and time.monotonic() < deadline and process.poll() is None:
            assignment = labeling.next_assignment(db, annotator.id, labeling.QueuePolicy())
            if assignment is None:
                time.sleep(0.5)
                continue
            ids = tuple(assignment.candidate_ids)
            labeling.submit_assignment(db, assignment.id, annotator.id,
                                       Submission(ids, tuple(range(1, len(ids) + 1))))
            ranked += 1
        out, err = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, err[-3000:]
    assert "waiting for rankings of run 1 in the app: 0 of 4 prompts ranked" in out
    assert "pairs from human feedback" in out and "KL" in out
    [row] = db.query("SELECT * FROM policy_iterations")
    report = json.loads(row["report"])
    assert row["scorer"] is None and report["feedback"] == "human"
    assert report["reward_new"] is None and isinstance(report["kl"], float)
    assert 1 <= report["train_pairs"] <= 4


def test_simulated_iterations_chain_and_resume_after_a_kill(tiny_model_dir, tmp_path, capsys):
    """`--iterations 2` with simulated annotators, killed during the second iteration's
    feedback; the same command again finishes iteration 2 from the step it reached (no new
    candidates sampled) and stops there. A zero learning rate moves nothing: both the
    recipe's and the held-out diagnostics say so and name the setting."""
    import os
    import subprocess
    import sys

    from launch.cli import main
    from tests.integration.test_policy_rebel import ROOT

    db_file, out = tmp_path / "loop.db", tmp_path / "policy"
    args = ["loop", "--db", str(db_file), "--iterations", "2", "--feedback",
            "simulated:tests.integration.sim_kill:length_or_die", "--sim-annotators", "2",
            "--sim-overlap", "2", "--output", str(out), "--model", tiny_model_dir,
            "--limit", "6", "--k", "3", "--backend", "transformers", "--max-new-tokens", "5",
            "--eval-fraction", "0.34", "--lr", "0", "--batch-size", "4"]
    killed = subprocess.run(
        [sys.executable, "-m", "launch.cli", *args], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "RANKLOOP_TEST_KILL_DB": str(db_file)},
        timeout=600)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert "iteration 1: policy saved to" in killed.stdout
    assert "simulated annotators stored 12 rankings of 6 items" in killed.stdout
    db = store.open_store(db_file)
    assert [r["iteration"] for r in db.query("SELECT iteration FROM policy_iterations")] == [1]
    state = json.loads((out / "iter-2" / "loop_state.json").read_text())
    assert state["done"] == ["generate"]
    candidates_before = db["candidates"].count

    assert main(args) == 0
    text = capsys.readouterr().out
    assert "continuing iteration 2 after generate" in text
    assert "iteration 2: policy saved to" in text and "iteration 3" not in text
    assert db["candidates"].count == candidates_before  # generation was not redone
    rows = list(db.query("SELECT * FROM policy_iterations ORDER BY iteration"))
    assert [r["iteration"] for r in rows] == [1, 2]
    assert rows[1]["base_model"] == str((out / "iter-1").resolve())
    report = json.loads(rows[1]["report"])
    assert report["feedback"] == "simulated:tests.integration.sim_kill:length_or_die"
    assert report["judge"] == report["feedback"] and isinstance(report["reward_new"], float)
    assert report["diagnostics"]["reached_gap"] == pytest.approx(0.0, abs=1e-4)  # lr 0
    # Iteration 2's rankings went through the queue: 4 training + 2 held-out items, 2 each.
    assert db.execute("SELECT COUNT(*) FROM rankings r JOIN items i ON i.id = r.item_id "
                      "WHERE i.run_id = ?", [rows[1]["run_id"]]).fetchone()[0] == 12
    # Nothing moved: the warnings name the learning rate.
    assert re.search(r"rankloop: warning: the policy changed almost nothing: REBEL reached a "
                     r"log-ratio gap of -?0\.000", text) and "raise --lr (now 0)" in text
    assert any("held-out KL" in w for w in report["warnings"])
    # The report across iterations: markdown table, JSON and a plot.
    table = (out / "loop_report.md").read_text().splitlines()
    assert table[0].startswith("| iter | algorithm |") and len([l for l in table
                                                                  if l.startswith("| 1 |") or
                                                                  l.startswith("| 2 |")]) == 2
    assert [r["iteration"] for r in json.loads((out / "loop_report.json").read_text())] == [1, 2]
    assert (out / "loop_report.svg").read_text().startswith("<svg")

    # The set of 2 is complete: the same command now runs 2 new iterations, 3 and 4.
    from policy.loop import LoopConfig, plan_iterations

    config = LoopConfig(db=str(db_file), output=str(out), feedback=args[args.index("--feedback") + 1],
                        iterations=2)
    assert list(plan_iterations(config, db)) == [3, 4]


def test_ppo_with_simulated_feedback_is_rewarded_by_the_scoring_function(tiny_model_dir,
                                                                          tmp_path, capsys):
    from launch.cli import main
    from training.metrics import read_metrics

    db_file = tmp_path / "loop.db"
    assert main(["loop", "--db", str(db_file), "--algorithm", "ppo", "--feedback",
                 "simulated:tests.integration.sim_kill:length_or_die", "--output",
                 str(tmp_path / "policy"), "--model", tiny_model_dir, "--limit", "6", "--k", "2",
                 "--backend", "transformers", "--max-new-tokens", "5", "--eval-fraction", "0.34",
                 "--lr", "1e-3", "--ppo-steps", "2", "--rollout-batch", "4", "--minibatch", "2",
                 "--ppo-epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "simulated annotators stored 12 rankings of 6 items" in out
    assert "PPO on 4 prompts" in out and "PPO moved the reward by" in out
    [row] = store.open_store(db_file).query("SELECT * FROM policy_iterations")
    report = json.loads(row["report"])
    assert row["scorer"] is None and report["judge"].startswith("simulated:")
    assert isinstance(report["reward_new"], float) and "kl" in report["diagnostics"]
    # PPO's logged rewards are the scoring function's: minus the response's length in chars.
    rewards = [m["objective/reward"] for m in read_metrics(tmp_path / "policy" / "iter-1" /
                                                           "metrics.jsonl")]
    assert len(rewards) == 2 and all(r <= 0 for r in rewards)


def test_a_dpo_iteration_trains_on_simulated_rankings_and_says_whether_it_moved(
        tiny_model_dir, tmp_path, capsys):
    from launch.cli import main
    from training.metrics import read_metrics

    db_file = tmp_path / "loop.db"
    assert main(["loop", "--db", str(db_file), "--algorithm", "dpo", "--feedback",
                 "simulated:tests.integration.sim_kill:length_or_die", "--output",
                 str(tmp_path / "policy"), "--model", tiny_model_dir, "--limit", "6", "--k", "3",
                 "--backend", "transformers", "--max-new-tokens", "5", "--eval-fraction", "0.34",
                 "--lr", "1e-3", "--beta", "0.5", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "DPO's reward margin went" in out
    [row] = store.open_store(db_file).query("SELECT * FROM policy_iterations")
    report = json.loads(row["report"])
    assert row["algorithm"] == "dpo" and report["judge"].startswith("simulated:")
    assert "margin_last" in report["diagnostics"]
    logged = read_metrics(tmp_path / "policy" / "iter-1" / "metrics.jsonl")
    assert any("train/reward_margin" in m for m in logged)


def test_the_reports_held_out_kl_is_zero_for_the_same_policy_and_positive_once_moved(
        tiny_model_dir, tmp_path):
    """k3 per response: never negative, so a few held-out replies cannot show a move as a
    negative KL (the plain mean of log-ratios could)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from policy.loop import kl_new_old

    torch.manual_seed(0)
    moved = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for weight in moved.parameters():
            weight.add_(0.05 * torch.randn_like(weight))
    moved.save_pretrained(tmp_path / "moved")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "moved")
    prompts, replies = ["Say hello.", "What is two and two?"], [" Hello there.", " Four."]
    assert kl_new_old(tiny_model_dir, tiny_model_dir, prompts, replies, 1.0) == 0.0
    assert kl_new_old(str(tmp_path / "moved"), tiny_model_dir, prompts, replies, 1.0) > 0.01
