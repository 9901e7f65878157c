"""The Bradley-Terry recipe on a tiny random Llama: batching equivalences, ZeRO-3 on 2 CPU
ranks against one process, resuming, LoRA, and saving a loadable model."""

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from data.preferences import PreferenceLoad, PreferencePair
from reward.batches import collate, encode_pairs, pad_sequences, sequence_rewards
from training.metrics import read_metrics
from tests.integration.conftest import zero3_cpu2
from reward.train_bt import RewardTrainConfig, prepare_pairs, train_reward_model

WORDS = ("apple river stone cloud green quick table music light paper window orange silver "
         "garden yellow summer").split()


def planted_pairs(n: int, seed: int = 0) -> list[PreferencePair]:
    """Chosen responses contain the word "zebra"; rejected ones never do. Lengths vary."""
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"Question {i}: " + " ".join(
            rng.choices(WORDS, k=rng.randint(2, 8)))}]
        good = rng.choices(WORDS, k=rng.randint(2, 14))
        good.insert(rng.randrange(len(good) + 1), "zebra")
        bad = rng.choices(WORDS, k=rng.randint(2, 14))
        pairs.append(PreferencePair(prompt, [{"role": "assistant", "content": " ".join(good)}],
                                    [{"role": "assistant", "content": " ".join(bad)}]))
    return pairs


def as_jsonl(pairs, path: Path) -> str:
    path.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen,
                                        "rejected": p.rejected}) + "\n" for p in pairs))
    return str(path)


def saved_weights(output) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(output) / "model.safetensors"))


def assert_same_weights(a, b, atol):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0)


def assert_same_update(start, a, b, rel=1e-3):
    """a and b moved the same way from start, up to float noise. Adam turns noise in near-zero
    gradients into ±lr-sized steps on single entries, so compare whole updates, not entries."""
    difference = sum(((a[k] - b[k]) ** 2).sum() for k in a).sqrt()
    update = sum(((a[k] - start[k]) ** 2).sum() for k in a).sqrt()
    assert update > 0.1
    assert difference / update < rel, (difference, update)


def losses(output) -> list[tuple[int, float]]:
    return [(m["step"], m["train/loss"]) for m in read_metrics(Path(output) / "metrics.jsonl")
            if "train/loss" in m]


def assert_same_losses(got: list[tuple[int, float]], expected: list[tuple[int, float]], abs):
    """The same steps, each with the same loss up to ``abs`` (pytest.approx takes flat
    sequences only)."""
    assert [step for step, _ in got] == [step for step, _ in expected]
    assert [loss for _, loss in got] == pytest.approx([loss for _, loss in expected], abs=abs)


@pytest.fixture(scope="module")
def start_model(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny Llama as a one-label reward model: every run here starts from the same head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.config.pad_token_id = tokenizer.pad_token_id
    path = tmp_path_factory.mktemp("tiny-rm")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def config(output, model, **overrides) -> RewardTrainConfig:
    base = dict(output=str(output), model=model, learning_rate=1e-2, warmup_ratio=0.0,
                lr_schedule="constant", eval_fraction=0.0, log_every=1, save_every=1000,
                max_length=256)
    return RewardTrainConfig(**{**base, **overrides})


def test_one_forward_of_chosen_and_rejected_equals_separate_forwards(start_model):
    from reward.modeling import load_reward_model, load_reward_tokenizer

    tokenizer = load_reward_tokenizer(start_model)
    model = load_reward_model(start_model, tokenizer).eval()
    pairs, _ = encode_pairs(tokenizer, planted_pairs(6), 256)
    batch = collate(pairs, tokenizer.pad_token_id)
    with torch.no_grad():
        chosen, rejected = batch.split(sequence_rewards(model, batch.input_ids,
                                                        batch.attention_mask))
        separate = []
        for side in ("chosen_ids", "rejected_ids"):
            ids, mask = pad_sequences([getattr(p, side) for p in pairs], tokenizer.pad_token_id)
            separate.append(sequence_rewards(model, ids, mask))
        alone = [sequence_rewards(model, torch.tensor([p.chosen_ids]), None).item() for p in pairs]
    assert batch.input_ids.shape[0] == 12
    torch.testing.assert_close(chosen, separate[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(rejected, separate[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(chosen, torch.tensor(alone), atol=1e-5, rtol=0)
    assert not torch.allclose(chosen, rejected)


def test_micro_batches_times_accumulation_give_the_same_updates(start_model, tmp_path):
    # 11 pairs in global batches of 6: the second step has 5 pairs, split unevenly. Two are
    # ties, trained with the tie loss, and every pair has a margin.
    pairs = [PreferencePair(p.prompt, p.chosen, p.rejected, margin=0.1 * i, tie=i in (2, 7))
             for i, p in enumerate(planted_pairs(11, seed=1))]
    pairs = PreferenceLoad(pairs, "planted")
    runs = {}
    for per_device, accumulation in ((6, 1), (2, 3)):
        out = tmp_path / f"b{per_device}x{accumulation}"
        summary = train_reward_model(config(out, start_model, per_device_batch_size=per_device,
                                            gradient_accumulation_steps=accumulation,
                                            max_steps=2, ties="include",
                                            center_rewards_coefficient=0.05),
                                     pairs=pairs, progress=False)
        assert summary.steps == 2 and summary.train_pairs == 11
        runs[(per_device, accumulation)] = (losses(out), saved_weights(out))
    (ref_losses, ref_weights), *others = runs.values()
    assert len(ref_losses) == 2 and ref_losses[0][1] != ref_losses[1][1]
    for other_losses, other_weights in others:
        assert [s for s, _ in other_losses] == [1, 2]
        assert_same_losses(other_losses, ref_losses, abs=1e-5)
        assert_same_update(saved_weights(start_model), other_weights, ref_weights)


def test_zero3_on_two_cpu_ranks_matches_one_process(start_model, tmp_path):
    data = as_jsonl(planted_pairs(40, seed=2), tmp_path / "pairs.jsonl")
    common = ["train", "reward", "--data", data, "--model", start_model, "--lr", "1e-2",
              "--lr-schedule", "linear", "--warmup-ratio", "0.34", "--max-steps", "3",
              "--eval-fraction", "0.2", "--log-every", "1", "--batch-size", "4",
              "--center-rewards", "0.01", "--no-progress"]

    def launch_zero3():
        return zero3_cpu2(*common, "--output", str(tmp_path / "zero3"), "--save-every", "2",
                          "--keep-checkpoints", "2")

    result = launch_zero3()
    assert result.returncode == 0, result.stderr[-4000:]
    assert "2 processes × 4 pairs × 1 accumulation" in result.stdout
    assert result.stdout.count("reward model saved to") == 1  # only rank 0 reports

    from launch.cli import main

    assert main([*common, "--grad-accum", "2", "--output", str(tmp_path / "single")]) == 0
    zero3, single = tmp_path / "zero3", tmp_path / "single"
    assert_same_losses(losses(zero3), losses(single), abs=1e-5)
    assert len(losses(zero3)) == 3
    evals = [[m for m in read_metrics(d / "metrics.jsonl") if "eval/loss" in m][-1]
             for d in (zero3, single)]
    assert evals[0]["eval/loss"] == pytest.approx(evals[1]["eval/loss"], abs=1e-5)
    assert_same_update(saved_weights(start_model), saved_weights(zero3), saved_weights(single))

    # Resuming a DeepSpeed checkpoint (partitioned per rank) as if killed during step 3.
    finished, first_losses = saved_weights(zero3), losses(zero3)
    shutil.rmtree(zero3 / "checkpoints" / "step-0000003")
    (zero3 / "model.safetensors").unlink()
    result = launch_zero3()
    assert result.returncode == 0, result.stderr[-4000:]
    assert "resumed at step 2" in result.stdout
    assert_same_losses(losses(zero3), first_losses, abs=1e-6)
    assert_same_weights(saved_weights(zero3), finished, atol=1e-6)


def test_resume_from_a_checkpoint_continues_exactly(start_model, tmp_path):
    pairs = PreferenceLoad(planted_pairs(24, seed=3), "planted")
    settings = dict(per_device_batch_size=4, max_steps=4, save_every=2, keep_checkpoints=2,
                    lr_schedule="cosine", warmup_ratio=0.25, eval_fraction=0.25)
    out = tmp_path / "run"
    first = train_reward_model(config(out, start_model, **settings), pairs=pairs, progress=False)
    finished, first_losses = saved_weights(out), losses(out)
    assert first.resumed_from_step is None and [s for s, _ in first_losses] == [1, 2, 3, 4]

    # As if killed after step 3: the step-4 checkpoint and the final model never got written.
    shutil.rmtree(out / "checkpoints" / "step-0000004")
    (out / "model.safetensors").unlink()
    second = train_reward_model(config(out, start_model, **settings), pairs=pairs, progress=False)
    assert second.resumed_from_step == 2
    assert_same_losses(losses(out), first_losses, abs=1e-6)  # logged once per step
    assert_same_weights(saved_weights(out), finished, atol=1e-6)
    assert second.eval_metrics["eval/loss"] == pytest.approx(first.eval_metrics["eval/loss"],
                                                             abs=1e-6)

    with pytest.raises(ValueError, match="made with other data or settings"):
        train_reward_model(config(out, start_model, **{**settings, "per_device_batch_size": 2}),
                           pairs=pairs, progress=False)


def test_lora_adapters_are_merged_into_a_plain_model(start_model, tmp_path):
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from reward.modeling import load_reward_tokenizer
    from training.models import merge_lora_state_dict

    tokenizer = load_reward_tokenizer(start_model)
    peft_model = get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(start_model),
        LoraConfig(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(0)
    with torch.no_grad():  # fresh adapters are zero; make them matter
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.add_(torch.randn_like(param) * 0.05)
    merged = AutoModelForSequenceClassification.from_pretrained(start_model)
    state = merge_lora_state_dict(peft_model.state_dict(), scaling=8 / 4)
    assert merged.load_state_dict(state, strict=True)
    pairs, _ = encode_pairs(tokenizer, planted_pairs(4), 256)
    ids, mask = pad_sequences([p.chosen_ids for p in pairs], tokenizer.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(sequence_rewards(merged.eval(), ids, mask),
                                   sequence_rewards(peft_model.eval(), ids, mask),
                                   atol=1e-5, rtol=0)

    out = tmp_path / "lora"
    summary = train_reward_model(config(out, start_model, lora_r=4, max_steps=2,
                                        per_device_batch_size=4, gradient_checkpointing=True),
                                 pairs=PreferenceLoad(planted_pairs(12), "planted"),
                                 progress=False)
    assert summary.steps == 2
    trained = saved_weights(out)
    assert not any("lora" in k or "base_layer" in k for k in trained)
    assert trained.keys() == saved_weights(start_model).keys()
    start = saved_weights(start_model)
    # The head trains fully; adapted layers moved through checkpointed blocks; others did not.
    assert not torch.equal(trained["score.weight"], start["score.weight"])
    assert not torch.equal(trained["model.layers.0.self_attn.q_proj.weight"],
                           start["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(trained["model.embed_tokens.weight"], start["model.embed_tokens.weight"])


def test_ties_are_excluded_by_default_and_trained_when_included(start_model):
    from reward.modeling import load_reward_tokenizer

    tokenizer = load_reward_tokenizer(start_model)
    pairs = planted_pairs(6)
    pairs[0] = PreferencePair(pairs[0].prompt, pairs[0].chosen, pairs[0].rejected, tie=True)
    load = PreferenceLoad(pairs, "planted")
    train, _, dropped = prepare_pairs(config("x", start_model), tokenizer, load, None)
    assert len(train) == 5 and dropped == {"ties (--ties exclude)": 1}
    train, _, dropped = prepare_pairs(config("x", start_model, ties="include"), tokenizer, load,
                                      None)
    assert len(train) == 6 and sum(p.tie for p in train) == 1 and dropped == {}


def test_a_run_that_cannot_fit_is_refused_before_the_model_loads(start_model, tmp_path,
                                                                  monkeypatch):
    import training.memory

    loaded = []
    monkeypatch.setattr("reward.modeling.load_reward_model",
                        lambda *a, **k: loaded.append(1))
    monkeypatch.setattr(training.memory, "available_bytes", lambda device: 2**20)  # 1 MiB free
    pairs = PreferenceLoad(planted_pairs(8, seed=4), "planted")
    with pytest.raises(ValueError, match=r"this reward model training needs about 0\.\d GiB of "
                                         r"0\.0 GiB available: it would be killed"):
        train_reward_model(config(tmp_path / "rm", start_model), pairs=pairs, progress=False)
    assert loaded == [] and not (tmp_path / "rm" / "model.safetensors").exists()


def test_the_closing_line_gives_the_peak_memory(start_model, tmp_path):
    pairs = PreferenceLoad(planted_pairs(8, seed=5), "planted")
    summary = train_reward_model(config(tmp_path / "rm", start_model, max_steps=1),
                                 pairs=pairs, progress=False)
    assert summary.peak_memory > 2**20
    assert f"peak memory {summary.peak_memory / 2**30:.1f} GiB" in summary.line()
