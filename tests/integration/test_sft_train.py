"""The SFT recipe on a tiny random Llama: held-out loss goes down, the output is a model the
next stage loads, the app's demonstrations and chosen responses train through the CLI, raw
text packs into blocks, and 2-rank ZeRO-3 on CPU matches one process."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from launch.cli import main
from policy.sft import SFTConfig, train_sft
from training.metrics import read_metrics
from tests.integration.conftest import zero3_cpu2
from tests.unit.test_export import make_export_db

NUMBERS = "zero one two three four five six seven eight nine".split()


def counting_chats(n: int, seed: int = 0) -> list[dict]:
    """"Count from a": the answer is always the next five number words: easy to learn."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        start = rng.randrange(5)
        rows.append({"messages": [
            {"role": "user", "content": f"Count from {NUMBERS[start]}."},
            {"role": "assistant", "content": " ".join(NUMBERS[start:start + 5])}]})
    return rows


def write_jsonl(rows, path: Path) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def eval_losses(output) -> list[tuple[int, float]]:
    return [(m["step"], m["eval/loss"]) for m in read_metrics(Path(output) / "metrics.jsonl")
            if "eval/loss" in m]


def train_losses(output) -> list[float]:
    return [m["train/loss"] for m in read_metrics(Path(output) / "metrics.jsonl")
            if "train/loss" in m]


def test_sft_lowers_held_out_loss_and_saves_a_loadable_policy(tiny_model_dir, tmp_path):
    # 40 conversations over 5 distinct prompts: one prompt (8 conversations) is held out.
    data = write_jsonl(counting_chats(40), tmp_path / "chats.jsonl")
    out = tmp_path / "sft"
    summary = train_sft(SFTConfig(output=str(out), model=tiny_model_dir, data=data,
                                  eval_fraction=0.2, per_device_batch_size=8, max_steps=25,
                                  learning_rate=3e-3, warmup_ratio=0.0, log_every=5),
                        progress=False)
    assert summary.train_examples + summary.eval_examples == 40 and summary.eval_examples > 0
    (start_step, start), *_, (end_step, end) = eval_losses(out)
    assert (start_step, end_step) == (0, 25)
    assert end < 0.8 * start, (start, end)
    assert summary.first_eval_loss == pytest.approx(start, abs=1e-5)

    # The folder is the next policy: it resolves, loads and generates with its chat template.
    from training.models import load_causal_lm, load_tokenizer, resolve_model

    path = resolve_model(str(out))
    tokenizer, model = load_tokenizer(path), load_causal_lm(path)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Count from two."}],
                                           tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    generated = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == ids["input_ids"].shape[1] + 4
    assert json.loads((out / "rankloop_sft.json").read_text())["steps"] == 25


def test_sft_from_the_apps_demonstrations_and_chosen_responses(tiny_model_dir, tmp_path, capsys):
    db = make_export_db(tmp_path / "votes.db")
    for source, examples in (("demonstrations", 2), ("chosen", 5)):
        out = tmp_path / source
        assert main(["train", "sft", "--db", db, "--from", source, "--model", tiny_model_dir,
                     "--eval-fraction", "0", "--batch-size", "2", "--max-steps", "2",
                     "--no-progress", "--output", str(out)]) == 0
        line = capsys.readouterr().out
        assert f"{examples} training examples from database {db} ({source})" in line
        assert (out / "model.safetensors").is_file()


def test_raw_text_mode_packs_blocks_and_learns(tiny_model_dir, tmp_path):
    rng = random.Random(0)
    docs = [{"text": " ".join(NUMBERS[s:] + NUMBERS[:s]) * 2} for s in
            (rng.randrange(10) for _ in range(30))]
    data = write_jsonl(docs, tmp_path / "corpus.jsonl")
    out = tmp_path / "raw"
    summary = train_sft(SFTConfig(output=str(out), model=tiny_model_dir, data=data, raw_text=True,
                                  block_size=32, eval_fraction=0.2, per_device_batch_size=8,
                                  max_steps=15, learning_rate=3e-3, warmup_ratio=0.0),
                        progress=False)
    assert summary.eval_examples > 0
    (_, start), *_, (_, end) = eval_losses(out)
    assert end < 0.85 * start, (start, end)


def test_sft_bad_input_is_one_line(tiny_model_dir, tmp_path, capsys):
    empty = tmp_path / "empty.db"
    from data import store

    store.open_store(empty).close()
    assert main(["train", "sft", "--db", str(empty), "--model", tiny_model_dir,
                 "--output", str(tmp_path / "o")]) == 2
    assert "has no demonstrations (answers written in the app) yet" in capsys.readouterr().err
    text = write_jsonl([{"text": "plain"}], tmp_path / "t.jsonl")
    assert main(["train", "sft", "--data", text, "--model", tiny_model_dir,
                 "--output", str(tmp_path / "o")]) == 2
    assert "no 'messages' column" in capsys.readouterr().err


def test_zero3_on_two_cpu_ranks_matches_one_process(tiny_model_dir, tmp_path):
    data = write_jsonl(counting_chats(24, seed=3), tmp_path / "chats.jsonl")
    common = ["train", "sft", "--data", data, "--model", tiny_model_dir, "--lr", "1e-3",
              "--max-steps", "3", "--batch-size", "3", "--log-every", "1",
              "--eval-fraction", "0.2", "--warmup-ratio", "0", "--no-progress"]
    result = zero3_cpu2(*common, "--output", str(tmp_path / "zero3"))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "2 processes × 3 × 1 accumulation" in result.stdout
    assert result.stdout.count("fine-tuned model saved to") == 1  # only rank 0 reports

    assert main([*common, "--grad-accum", "2", "--output", str(tmp_path / "single")]) == 0
    zero3, single = tmp_path / "zero3", tmp_path / "single"
    assert len(train_losses(zero3)) == 3
    assert train_losses(zero3) == pytest.approx(train_losses(single), abs=1e-4)
    assert [v for _, v in eval_losses(zero3)] == pytest.approx(
        [v for _, v in eval_losses(single)], abs=1e-4)
    # The gathered ZeRO-3 weights are a complete model the next stage loads.
    from training.models import load_causal_lm

    assert load_causal_lm(str(zero3)).num_parameters() == load_causal_lm(
        str(single)).num_parameters()
