"""Every training command sends its metrics through accelerate's trackers: with
`--report-to tensorboard wandb` (W&B offline), the TensorBoard event files and the W&B run hold
exactly what `metrics.jsonl` holds."""

import pytest

from tests.integration.test_policy_rebel import scored_pairs_file
from tests.tracker_readers import tensorboard_scalars, wandb_run
from training.metrics import read_metrics


def recipe_command(recipe, model, data, prompts):
    common = ["--model", model, "--no-progress", "--report-to", "tensorboard", "wandb",
              "--log-every", "1"]
    if recipe in ("rebel", "dpo", "reward"):
        return ["train", recipe, "--data", data, "--max-steps", "2", "--batch-size", "2",
                "--eval-fraction", "0.25", *common]
    if recipe == "sft":
        return ["train", "sft", "--data", data, "--max-steps", "2", "--batch-size", "2",
                *common]
    return ["train", "ppo", "--reward-fn", "tests.integration.ppo_rewards:good_word_share",
            "--prompts", prompts, "--steps", "2", "--rollout-batch", "2", "--minibatch", "2",
            "--ppo-epochs", "1", "--max-new-tokens", "4", *common]


@pytest.mark.parametrize("recipe", ["rebel", "dpo", "reward", "sft", "ppo"])
def test_trackers_receive_what_metrics_jsonl_records(recipe, tiny_model_dir, tmp_path,
                                                     monkeypatch):
    from launch.cli import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    data = scored_pairs_file(tmp_path / "pairs.jsonl", 8)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "Say {i} things"}}\n' for i in range(4)))
    out = tmp_path / recipe
    assert main([*recipe_command(recipe, tiny_model_dir, data, str(prompts)),
                 "--output", str(out)]) == 0
    logged = read_metrics(out / "metrics.jsonl")
    assert {1, 2} <= {m["step"] for m in logged}
    rows = {}
    for line in logged:
        rows.setdefault(line["step"], {}).update({k: v for k, v in line.items() if k != "step"})
    scalars = tensorboard_scalars(out / "tensorboard")
    history, config = wandb_run(out)
    assert history == rows  # W&B keeps full precision
    for step, row in rows.items():
        for key, value in row.items():
            assert scalars[key][step] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    assert config["seed"] == 0 and str(out) == config["output"]
