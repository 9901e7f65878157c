"""GPU twin of the CPU generation tests (tests/integration/test_generate.py)."""

import pytest

from policy.sampling import SamplingConfig, TransformersSampler


@pytest.mark.gpu
def test_transformers_backend_runs_on_cuda_in_bf16(default_model_dir):
    import torch

    sampler = TransformersSampler(default_model_dir, device="cuda")
    assert sampler.model.device.type == "cuda" and sampler.model.dtype == torch.bfloat16
    prompt = sampler.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name a fruit."}], tokenize=False, add_generation_prompt=True)
    [samples] = sampler.generate([prompt], SamplingConfig(k=2, max_new_tokens=16))
    assert len(samples) == 2 and all(1 <= s.token_count <= 16 for s in samples)
