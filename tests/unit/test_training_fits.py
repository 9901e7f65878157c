"""Training that fits: efficient defaults follow the model's size, and a run that cannot fit
the machine is refused with its estimate before any weight loads."""

import json

import pytest


def _config_only_model(path, tokenizer, *, hidden: int, layers: int, inner: int):
    """A model folder with a config and a tokenizer but no weights: anything that tried to
    load it would fail on the missing weights, not on memory."""
    from transformers import LlamaConfig

    path.mkdir(parents=True, exist_ok=True)
    LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=inner,
                num_hidden_layers=layers, num_attention_heads=hidden // 128,
                num_key_value_heads=8, tie_word_embeddings=False).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_bf16_and_checkpointing_default_on_from_the_size_where_they_pay(tmp_path,
                                                                         smol_tokenizer,
                                                                         tiny_model_dir,
                                                                         monkeypatch):
    import torch

    from policy.rebel import RebelConfig
    from reward.train_bt import RewardTrainConfig
    from training.memory import cpu_has_bf16, efficient_defaults

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    large = _config_only_model(tmp_path / "large", smol_tokenizer, hidden=1024, layers=8,
                               inner=2816)  # about 150M weights
    native = torch.cuda.is_available() or cpu_has_bf16()
    for make in (RebelConfig, RewardTrainConfig):
        config = make(output=str(tmp_path / "out"))
        assert (config.bf16, config.gradient_checkpointing) == (None, None)
        big = efficient_defaults(config, large)
        assert (big.bf16, big.gradient_checkpointing) == (native, True)
        tiny = efficient_defaults(config, tiny_model_dir)
        assert (tiny.bf16, tiny.gradient_checkpointing) == (False, False)
        # A value set by hand stays.
        kept = efficient_defaults(make(output=str(tmp_path / "o"), bf16=False,
                                       gradient_checkpointing=False), large)
        assert (kept.bf16, kept.gradient_checkpointing) == (False, False)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # the launcher's config decides
    assert efficient_defaults(RebelConfig(output="o"), large).bf16 is None


@pytest.mark.parametrize("recipe", ["reward", "rebel"])
def test_a_run_that_cannot_fit_is_refused_with_its_estimate_before_loading(
        recipe, tmp_path, smol_tokenizer, capsys, monkeypatch):
    from launch.cli import main

    # Accelerate keeps one state per process, and earlier tests of the same process made it in
    # fp32: asking for bf16 now would fail on that, not on memory. A launcher's setting (as
    # `accelerate launch` gives) keeps this run in fp32, which needs even more memory.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")

    # Llama-70B's shape: about 70 billion weights, over a terabyte to train in fp32 with AdamW.
    huge = _config_only_model(tmp_path / "huge", smol_tokenizer, hidden=8192, layers=80,
                              inner=28672)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": f"Question {i}"}],
        "chosen": [{"role": "assistant", "content": "A good answer."}],
        "rejected": [{"role": "assistant", "content": "No."}],
        "score_chosen": 1.0, "score_rejected": 0.0}) + "\n" for i in range(8)))
    assert main(["train", recipe, "--data", str(pairs), "--model", huge, "--output",
                 str(tmp_path / "out"), "--no-progress"]) != 0
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1, error
    assert "GiB available: it would be killed for lack of memory" in error[0]
    assert "needs about" in error[0] and "Traceback" not in error[0]
    assert not (tmp_path / "out" / "model.safetensors").exists()
