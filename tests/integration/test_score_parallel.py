"""`rankloop score` over several processes under `accelerate launch` (gloo on CPU here, one
process per GPU on a node), for both kinds of reward model, and what a killed run leaves."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from data import store
from launch.cli import main
from reward.armorm import ARCHITECTURE

ROOT = Path(__file__).resolve().parents[2]
LLAMA3_TEMPLATE = (
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def tiny_config(tokenizer, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       **extra)


@pytest.fixture(scope="module")
def reward_models(smol_tokenizer, tmp_path_factory):
    """A random one-label Bradley-Terry model and a random ArmoRM (Llama 3 chat tokens)."""
    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    from reward.armorm import LlamaForRewardModelWithGating

    torch.manual_seed(0)
    bt = tmp_path_factory.mktemp("bt")
    model = LlamaForSequenceClassification(tiny_config(smol_tokenizer, num_labels=1))
    model.save_pretrained(bt)
    smol_tokenizer.save_pretrained(bt)

    armorm = tmp_path_factory.mktemp("armorm")
    smol_tokenizer.save_pretrained(armorm)
    tokenizer = AutoTokenizer.from_pretrained(armorm)
    tokenizer.add_special_tokens({
        "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
        "pad_token": "<|finetune_right_pad_id|>",
        "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>"]})
    tokenizer.chat_template = LLAMA3_TEMPLATE
    config = tiny_config(tokenizer, num_objectives=19, gating_hidden_dim=16, gating_n_hidden=3)
    config.architectures = [ARCHITECTURE]
    LlamaForRewardModelWithGating(config).save_pretrained(armorm)
    tokenizer.save_pretrained(armorm)
    return {"bt": str(bt), "armorm": str(armorm)}


def candidates_db(path: Path, n_prompts: int, k: int, *, run_seed: int = 0) -> str:
    db = store.open_store(path)
    run = store.get_or_create_run(db, store.RunSettings("m", "transformers", k, 0.8, 0.9, 64,
                                                        run_seed))
    for i in range(n_prompts):
        [pid] = store.upsert_prompts(db, [([{"role": "user", "content": f"Question {i}? " +
                                             "more words " * (i % 7)}], "test", str(i))])
        store.add_candidates(db, pid, run, [
            store.CandidateIn(f"Answer {j} to {i}: " + "and so on " * ((i * k + j) % 11), 5,
                              "stop") for j in range(k)])
    db.close()
    return str(path)


def stored_scores(path: str, scorer: str) -> dict:
    db = store.open_store(path)
    texts = {r["id"]: r["text"] for r in db["candidates"].rows}
    scores = {texts[c]: s for c, s in store.model_scores(db, scorer).items()}
    db.close()
    return scores


def launch_score(db: str, scorer: str, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "launch.cli", "score", "--db", db, "--scorer", scorer, "--no-progress", *extra],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=400)


@pytest.mark.parametrize("kind", ["bt", "armorm"])
def test_two_processes_store_the_scores_of_one(kind, reward_models, tmp_path):
    scorer = f"{kind}:{reward_models[kind]}"
    one = candidates_db(tmp_path / "one.db", n_prompts=9, k=3)
    two = candidates_db(tmp_path / "two.db", n_prompts=9, k=3)
    assert main(["score", "--db", one, "--scorer", scorer, "--batch-size", "4",
                 "--no-progress"]) == 0
    result = launch_score(two, scorer, "--batch-size", "4")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "scored 27 candidates" in result.stdout and "on 2 processes" in result.stdout
    assert result.stdout.count("scored") == 1  # only the main process reports

    name = next(iter(store.model_scorers(store.open_store(one))))
    single, parallel = stored_scores(one, name), stored_scores(two, name)
    assert len(single) == len(parallel) == 27
    for text, s in single.items():
        assert parallel[text].score == pytest.approx(s.score, abs=1e-5)
        if kind == "armorm":
            assert len(s.objectives) == 19
            assert parallel[text].objectives == pytest.approx(s.objectives, abs=1e-5)
        else:
            assert s.objectives is None and parallel[text].objectives is None
    assert len({round(s.score, 6) for s in single.values()}) > 20  # not one constant score

    # A rerun after new candidates arrive scores only those, on both processes.
    db = store.open_store(two)
    run = store.get_or_create_run(db, store.RunSettings("m2", "transformers", 2, 0.8, 0.9, 64, 1))
    store.add_candidates(db, 1, run, [store.CandidateIn("new one", 2, "stop"),
                                      store.CandidateIn("another new one", 3, "stop")])
    db.close()
    result = launch_score(two, scorer)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "scored 2 candidates" in result.stdout
    assert len(stored_scores(two, name)) == 29


def test_a_killed_run_stores_no_score_and_a_rerun_scores_everything(reward_models, tmp_path):
    db = candidates_db(tmp_path / "big.db", n_prompts=150, k=4)
    scorer = f"bt:{reward_models['bt']}"
    process = subprocess.Popen(
        [sys.executable, "-m", "launch.cli", "score", "--db", db, "--scorer", scorer,
         "--batch-size", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seen = ""
    while "score:" not in seen:  # the progress bar: scoring has started
        char = process.stderr.read(1)
        assert char, f"scoring ended before it started: {seen[-2000:]}"
        seen += char
    process.send_signal(signal.SIGKILL)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL and "scored" not in out
    assert store.counts(store.open_store(db))["model_scores"] == 0

    assert main(["score", "--db", db, "--scorer", scorer, "--batch-size", "16",
                 "--no-progress"]) == 0
    assert store.counts(store.open_store(db))["model_scores"] == 600
