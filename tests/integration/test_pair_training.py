"""The loop REBEL and DPO share (policy/pair_training.py) on 2 ZeRO-3 CPU ranks."""

import pytest
import torch

from tests.integration.conftest import zero3_cpu2
from tests.integration.test_policy_rebel import losses, scored_pairs_file
from training.metrics import read_metrics

RECIPES = {
    "rebel": (["--eta", "2"], ("eval/loss", "eval/sign_agreement", "eval/kl")),
    "dpo": (["--beta", "0.5"], ("eval/loss", "eval/reward_accuracy", "eval/reward_margin",
                                "eval/kl")),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_zero3_on_two_cpu_ranks_matches_one_process(recipe, tiny_model_dir, tmp_path):
    settings, eval_keys = RECIPES[recipe]
    data = scored_pairs_file(tmp_path / "pairs.jsonl", 24)
    common = ["train", recipe, "--data", data, "--model", tiny_model_dir, "--lr", "1e-3",
              *settings, "--lr-schedule", "cosine", "--warmup-ratio", "0.34",
              "--max-steps", "3", "--eval-fraction", "0.2", "--log-every", "1",
              "--batch-size", "2", "--no-progress"]
    result = zero3_cpu2(*common, "--output", str(tmp_path / "zero3"))
    assert result.returncode == 0, result.stderr[-4000:]
    assert "2 processes × 2 pairs × 1 accumulation" in result.stdout
    assert result.stdout.count("policy saved to") == 1

    from launch.cli import main

    # One process with 2 accumulation steps takes the same 4-pair steps.
    assert main([*common, "--grad-accum", "2", "--output", str(tmp_path / "single")]) == 0
    zero3, single = losses(tmp_path / "zero3"), losses(tmp_path / "single")
    assert len(zero3) == 3 and zero3 != [zero3[0]] * 3
    assert zero3 == pytest.approx(single, abs=1e-4)
    evals = [[m for m in read_metrics(tmp_path / d / "metrics.jsonl") if "eval/loss" in m][-1]
             for d in ("zero3", "single")]
    for key in eval_keys:
        assert evals[0][key] == pytest.approx(evals[1][key], abs=1e-4), key

    # The consolidated folder is a plain causal LM that transformers loads and runs.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "zero3")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "zero3")
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "single")
    ids = tokenizer("hello there", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-3, rtol=0)
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape[1] == ids.shape[1] + 3
