"""Shared fixtures: the embedded default model, a tiny random model, one vLLM engine."""

from __future__ import annotations

import os
import tempfile

# Tests never reach the Hub: a lookup fails fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# datasets names its cache of a local folder after the folder, not its content: a test run
# could read an earlier run's export back. Each run gets a cache of its own.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="rankloop-tests-datasets-")

import pytest


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; the CPU twin of this test runs instead")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def default_model_dir() -> str:
    """SmolLM2-135M-Instruct, converted from the embedded GGUF once (cached across runs)."""
    from training.models import default_model_dir

    return str(default_model_dir())


@pytest.fixture(scope="session")
def smol_tokenizer(default_model_dir):
    from training.models import load_tokenizer

    return load_tokenizer(default_model_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, default_model_dir, smol_tokenizer) -> str:
    """A 2-layer, 64-wide random Llama with the SmolLM2 tokenizer and chat template."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smol_tokenizer), hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=smol_tokenizer.bos_token_id, eos_token_id=smol_tokenizer.eos_token_id,
        pad_token_id=smol_tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    smol_tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def vllm_sampler(default_model_dir):
    """One vLLM-CPU engine on SmolLM2 for the whole session (it takes about a minute to start)."""
    from policy.sampling import VLLMSampler

    sampler = VLLMSampler(default_model_dir, seed=0, max_model_len=2048)
    yield sampler
    sampler.close()


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (tests/browser.py)."""
    from tests.browser import chromium

    with chromium() as started:
        yield started
