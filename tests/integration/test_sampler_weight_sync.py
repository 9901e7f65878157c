"""Samplers take a trainer's new weights in place, and generate from them at once.

Greedy decoding is deterministic, so a sampler that ignored the new weights, loaded them into
the wrong parameters or kept stale KV blocks in vLLM's prefix cache would produce text other
than the transformers reference given the same weights.
"""

from __future__ import annotations

import pytest
import torch

from policy.sampling import SamplingConfig, TransformersSampler

GREEDY = SamplingConfig(k=1, temperature=0, max_new_tokens=16)
QUESTIONS = ["What is the capital of France?", "Write a haiku about rain."]
# Longer than one KV cache block (128 tokens on CPU), so vLLM's prefix cache can serve it.
LONG_QUESTION = "Summarize in one sentence: " + "The river rose and the town moved uphill. " * 16


def _prompts(tokenizer, questions=QUESTIONS) -> list[str]:
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                          add_generation_prompt=True) for q in questions]


def _perturbed(weights: dict[str, torch.Tensor], scale: float,
               seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor plus seeded Gaussian noise, ``scale`` times the tensor's own spread."""
    gen = torch.Generator().manual_seed(seed)
    return {name: t + scale * t.float().std().clamp(min=1e-3)
            * torch.randn(t.shape, generator=gen, dtype=t.dtype)
            for name, t in weights.items()}


def _texts(samples) -> list[str]:
    return [s[0].text for s in samples]


def test_transformers_sampler_generates_from_synced_weights_and_back(tiny_model_dir):
    sampler = TransformersSampler(tiny_model_dir, batch_size=3)
    prompts = _prompts(sampler.tokenizer)
    original = {n: p.detach().clone() for n, p in sampler.model.named_parameters()}
    before = sampler.generate(prompts, GREEDY)
    # The random model repeats one token whatever the prompt; noise this large changes which.
    perturbed = _perturbed(original, scale=3.0)

    sampler.sync_weights(perturbed.items())
    after = sampler.generate(prompts, GREEDY)
    assert all(torch.equal(p, perturbed[n]) for n, p in sampler.model.named_parameters())

    # Reference: an independent copy of the model given the same weights by load_state_dict.
    reference = TransformersSampler(tiny_model_dir, batch_size=3)
    reference.model.load_state_dict(perturbed, strict=False)
    assert after == reference.generate(prompts, GREEDY)
    assert _texts(after) != _texts(before)

    sampler.sync_weights(original.items())
    assert sampler.generate(prompts, GREEDY) == before


def test_transformers_sampler_converts_dtype_and_refuses_bad_weights(tiny_model_dir):
    sampler = TransformersSampler(tiny_model_dir)
    name = "model.layers.0.self_attn.q_proj.weight"
    param = dict(sampler.model.named_parameters())[name]
    original = param.detach().clone()
    new = torch.randn(param.shape, dtype=torch.bfloat16)

    # One bad entry refuses the whole sync: the valid entry beside it is not applied either.
    with pytest.raises(ValueError, match="not parameters of the sampling model: model.nope"):
        sampler.sync_weights([(name, new), ("model.nope.weight", torch.zeros(2))])
    with pytest.raises(ValueError, match=rf"{name}.* has shape \(3, 64\)"):
        sampler.sync_weights([(name, torch.zeros(3, 64))])
    assert torch.equal(param, original)

    sampler.sync_weights([(name, new)])
    assert param.dtype == torch.float32 and torch.equal(param, new.float())


@pytest.mark.slow
def test_vllm_engine_generates_from_synced_weights_and_back(vllm_sampler, default_model_dir,
                                                            smol_tokenizer):
    prompts = _prompts(smol_tokenizer)
    long_prompt = _prompts(smol_tokenizer, [LONG_QUESTION])
    block = vllm_sampler.llm.llm_engine.vllm_config.cache_config.block_size
    assert len(smol_tokenizer(long_prompt[0], add_special_tokens=False)["input_ids"]) > block
    reference = TransformersSampler(default_model_dir, batch_size=3, dtype=torch.float32)
    original = {n: p.detach().clone() for n, p in reference.model.named_parameters()}
    before = vllm_sampler.generate(prompts, GREEDY)
    # Both backends decode the unchanged model alike (fp32, 16 tokens: exact equality holds on
    # CPU), so a difference after the sync is the sync's.
    assert before == reference.generate(prompts, GREEDY)

    # 5% noise keeps the model fluent but changes what it says.
    perturbed = _perturbed(original, scale=0.05)
    try:
        # First the long prompt's KV blocks are computed and cached under unrelated weights;
        # a prefix cache that outlived the next sync would serve them to it again.
        vllm_sampler.sync_weights(_perturbed(original, scale=1.0, seed=1).items())
        vllm_sampler.generate(long_prompt, GREEDY)
        vllm_sampler.sync_weights(perturbed.items())
        after = vllm_sampler.generate(prompts + long_prompt, GREEDY)
        reference.sync_weights(perturbed.items())
        assert after == reference.generate(prompts + long_prompt, GREEDY)
        assert _texts(after[:2]) != _texts(before)
    finally:
        # The engine is shared by the whole session: it leaves with the weights it came with.
        vllm_sampler.sync_weights(original.items())
    assert vllm_sampler.generate(prompts, GREEDY) == before


@pytest.mark.slow
def test_vllm_engine_refuses_bad_weights_before_loading_any(vllm_sampler, smol_tokenizer):
    prompts = _prompts(smol_tokenizer)[:1]
    before = vllm_sampler.generate(prompts, GREEDY)
    hidden = vllm_sampler.llm.llm_engine.model_config.hf_config.hidden_size
    good = ("model.norm.weight", torch.zeros(hidden))

    with pytest.raises(ValueError, match="not parameters of the sampling model: model.nope"):
        vllm_sampler.sync_weights([good, ("model.nope.weight", torch.zeros(2))])
    # vLLM fuses q/k/v and gate/up projections and reloads whole layers: a partial sync could
    # leave a layer half-written, so it is refused.
    with pytest.raises(ValueError, match="takes every parameter at once; missing: "):
        vllm_sampler.sync_weights([good])
    assert vllm_sampler.generate(prompts, GREEDY) == before
