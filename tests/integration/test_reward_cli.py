"""`rankloop train reward`, `rankloop score` and `rankloop eval reward` as users run them:
pairs ranked through the app's data layer, a model trained on them that learns the planted
preference, scores written to the store, and one-line errors for bad input."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from data import labeling, store
from data.rankings import validate_submission
from launch.cli import main

ROOT = Path(__file__).resolve().parents[2]
WORDS = ("apple river stone cloud green quick table music light paper window orange silver "
         "garden yellow summer").split()
PLANT = "zebra"


def rankloop(*args, timeout=400):
    return subprocess.run([sys.executable, "-m", "launch.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "2"})


def answer(rng, planted: bool) -> str:
    words = rng.choices(WORDS, k=rng.randint(2, 14))
    if planted:
        words.insert(rng.randrange(len(words) + 1), PLANT)
    return " ".join(words)


def question(rng, i: int) -> list[dict]:
    return [{"role": "user", "content": f"Question {i}: " + " ".join(
        rng.choices(WORDS, k=rng.randint(2, 8)))}]


def ranked_db(path: Path, n_prompts: int, seed: int = 0) -> str:
    """Two candidates per prompt, one with the planted word; two annotators rank every item
    through the app's queue, both preferring the planted one."""
    rng = random.Random(seed)
    db = store.open_store(path)
    run_id = store.get_or_create_run(db, store.RunSettings("m", "transformers", 2, 0.8, 0.9, 32, 0))
    for i in range(n_prompts):
        [prompt_id] = store.upsert_prompts(db, [(question(rng, i), "test", str(i))])
        store.add_candidates(db, prompt_id, run_id, [
            store.CandidateIn(answer(rng, planted), 5, "stop") for planted in (True, False)])
    users = [labeling.add_user(db, name, "annotator", "not-a-real-hash") for name in ("ann", "bob")]
    labeling.sync_items(db)
    policy = labeling.QueuePolicy(overlap=2)
    for user in users:
        while (task := labeling.next_assignment(db, user.id, policy)) is not None:
            ranks = [1 if PLANT in text else 2 for text in task.texts]
            labeling.submit_assignment(db, task.id, user.id,
                                       validate_submission(task.candidate_ids, ranks))
    db.close()
    return str(path)


def planted_file(path: Path, n: int, seed: int) -> str:
    rng = random.Random(seed)
    rows = [{"prompt": question(rng, i),
             "chosen": [{"role": "assistant", "content": answer(rng, True)}],
             "rejected": [{"role": "assistant", "content": answer(rng, False)}]}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """`rankloop train reward` on the app's agreed pairs, run as a real process."""
    tmp = tmp_path_factory.mktemp("reward-cli")
    db = ranked_db(tmp / "app.db", n_prompts=170)
    out = tmp / "rm"
    result = rankloop("train", "reward", "--db", db, "--agreed-only", "--model", tiny_model_dir,
                      "--output", str(out), "--lr", "3e-3", "--warmup-ratio", "0.1",
                      "--batch-size", "16", "--epochs", "3", "--eval-fraction", "0.1",
                      "--log-every", "5", "--no-progress")
    assert result.returncode == 0, result.stderr[-3000:]
    return {"db": db, "out": out, "stdout": result.stdout, "tmp": tmp}


def test_trained_model_learns_the_planted_preference(trained):
    from transformers import AutoModelForSequenceClassification

    line = trained["stdout"].strip().splitlines()[-1]
    assert line.startswith(f"reward model saved to {trained['out']}")
    assert "153 training pairs, 17 held out" in line  # one pair per agreed candidate pair
    metrics = [json.loads(x) for x in (trained["out"] / "metrics.jsonl").read_text().splitlines()]
    final_eval = [m for m in metrics if "eval/accuracy" in m][-1]
    assert final_eval["eval/accuracy"] > 0.9
    assert {"train/loss", "train/accuracy", "train/margin", "train/learning_rate"} <= set(
        metrics[0])
    assert "eval/accuracy" in (trained["out"] / "README.md").read_text()
    model = AutoModelForSequenceClassification.from_pretrained(trained["out"])
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None


def test_score_writes_each_candidate_once_then_skips_them(trained):
    scorer_name = f"bt:{trained['out'].resolve()}"
    assert main(["score", "--scorer", f"bt:{trained['out']}", "--db", trained["db"]]) == 0
    db = store.open_store(trained["db"])
    scores = store.model_scores(db, scorer_name)
    assert len(scores) == db["candidates"].count == 340
    planted = {row["id"] for row in db.query("SELECT id FROM candidates WHERE text LIKE ?",
                                             [f"%{PLANT}%"])}
    mean = sum(s.score for s in scores.values()) / len(scores)
    assert sum((scores[c].score > mean) == (c in planted) for c in scores) / len(scores) > 0.9
    assert store.candidates_to_score(db, scorer_name) == []


def test_eval_reward_reports_accuracy_and_agreement_with_humans(trained, capsys):
    fresh = planted_file(trained["tmp"] / "fresh.jsonl", 60, seed=7)
    # Candidates this model already scored into the store are not scored again.
    assert main(["score", "--scorer", f"bt:{trained['out']}", "--db", trained["db"]]) == 0
    capsys.readouterr()
    assert main(["eval", "reward", "--scorer", f"bt:{trained['out']}", "--data", fresh,
                 "--db", trained["db"]]) == 0
    accuracy_line, agreement_line = capsys.readouterr().out.strip().splitlines()
    assert accuracy_line.startswith("accuracy ") and "on 60 pairs" in accuracy_line
    assert float(accuracy_line.split()[1]) > 0.9
    assert agreement_line.startswith("agreement with humans ")
    assert "on 340 pairwise judgments" in agreement_line  # 170 items x 2 annotators
    assert float(agreement_line.split()[3]) > 0.9
    assert "(0 candidates scored now, 340 stored scores reused)" in agreement_line


def test_score_again_has_nothing_to_do(trained, capsys):
    assert main(["score", "--scorer", f"bt:{trained['out']}", "--db", trained["db"]]) == 0
    assert main(["score", "--scorer", f"bt:{trained['out']}", "--db", trained["db"]]) == 0
    assert "nothing to score" in capsys.readouterr().out


def test_over_long_pairs_are_dropped_and_counted(tiny_model_dir, tmp_path, capsys):
    data = planted_file(tmp_path / "p.jsonl", 12, seed=1)
    with open(data, "a") as f:
        f.write(json.dumps({"prompt": "x", "chosen": "word " * 400, "rejected": "short"}) + "\n")
    assert main(["train", "reward", "--data", data, "--model", tiny_model_dir, "--output",
                 str(tmp_path / "rm"), "--max-length", "128", "--max-steps", "1",
                 "--batch-size", "4", "--no-progress"]) == 0
    assert "dropped: 1 longer than 128 tokens" in capsys.readouterr().out


# --- errors -----------------------------------------------------------------------------------

def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("rankloop: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def write(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("rows,extra,message", [
    ([{"prompt": "p", "chosen": "x"}], [], "has no column 'rejected'"),
    ([{"prompt": "p", "chosen": "same", "rejected": "same"}] * 3, [],
     "no usable preference pairs (dropped: 3 identical chosen/rejected)"),
    ([{"prompt": "p", "chosen": " ", "rejected": "y"}], [], "1 empty response"),
    ([{"prompt": "p", "chosen": "long " * 50, "rejected": "y"}] * 2, ["--max-length", "8"],
     "no training pairs left"),
])
def test_bad_training_data_is_one_line(tiny_model_dir, tmp_path, capsys, rows, extra, message):
    data = write(tmp_path / "d.jsonl", rows)
    code = main(["train", "reward", "--data", data, "--model", tiny_model_dir, "--output",
                 str(tmp_path / "rm"), *extra])
    assert code == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "rm" / "model.safetensors").exists()


def test_training_from_a_db_without_rankings_is_one_line(tmp_path, capsys):
    store.open_store(tmp_path / "empty.db").close()
    assert main(["train", "reward", "--db", str(tmp_path / "empty.db"), "--output",
                 str(tmp_path / "rm")]) == 2
    assert "has no ranked pairs yet" in one_error_line(capsys)
    assert main(["train", "--db", str(tmp_path / "missing.db"), "reward", "--output",
                 str(tmp_path / "rm")]) == 2
    assert "missing.db does not exist" in one_error_line(capsys)


def test_scorer_errors_are_one_line(trained, tmp_path, capsys):
    db = trained["db"]
    cases = [
        (["score", "--scorer", f"bt:{tmp_path}/nope", "--db", db], "does not exist"),
        (["score", "--scorer", f"gpt:{trained['out']}", "--db", db], "unknown scorer kind 'gpt'"),
        (["score", "--scorer", f"armorm:{trained['out']}", "--db", db],
         "is not an ArmoRM checkpoint"),
        (["score", "--scorer", f"bt:{trained['out']}", "--db", db, "--run", "99"],
         "generation run 99 does not exist"),
        (["score", "--scorer", f"bt:{trained['out']}", "--db", str(tmp_path / "none.db")],
         "none.db does not exist"),
        (["eval", "reward", "--scorer", f"bt:{trained['out']}", "--db", str(tmp_path / "x.db")],
         "nothing to evaluate"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in one_error_line(capsys), argv


def test_a_real_process_exits_non_zero_without_a_traceback(tmp_path):
    data = write(tmp_path / "d.jsonl", [{"chosen": "x"}])
    result = rankloop("train", "reward", "--data", data, "--output", str(tmp_path / "rm"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("rankloop: error: ")
    assert "has no column 'rejected'" in result.stderr
