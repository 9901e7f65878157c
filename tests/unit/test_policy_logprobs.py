"""Response log-prob gathering: hand-computed values, padding sides, temperature."""

import math

import pytest
import torch

from policy.logprobs import pack, sequence_logprobs, shifted_logprobs, token_logprobs


def test_token_logprobs_by_hand_with_temperature():
    logits = torch.tensor([[[0.0, math.log(3.0)], [2.0, 2.0]]])  # [1, 2, 2]
    labels = torch.tensor([[1, 0]])
    # softmax([0, ln 3]) = [1/4, 3/4]; [2, 2] → [1/2, 1/2]
    torch.testing.assert_close(token_logprobs(logits, labels),
                               torch.tensor([[math.log(0.75), math.log(0.5)]]))
    # temperature 2: softmax([0, ln 3 / 2]) = [1/(1+√3), √3/(1+√3)]
    hot = token_logprobs(logits, labels, temperature=2.0)
    assert hot[0, 0].item() == pytest.approx(math.log(math.sqrt(3) / (1 + math.sqrt(3))))


def test_pack_marks_response_tokens_on_either_side():
    right = pack([[1, 2], [3]], [[4], [5, 6, 7]], pad_token_id=0)
    assert right.input_ids.tolist() == [[1, 2, 4, 0], [3, 5, 6, 7]]
    assert right.response_mask.tolist() == [[0, 0, 1, 0], [0, 1, 1, 1]]
    assert right.position_ids.tolist() == [[0, 1, 2, 0], [0, 1, 2, 3]]
    left = pack([[1, 2], [3]], [[4], [5, 6, 7]], pad_token_id=0, side="left")
    assert left.input_ids.tolist() == [[0, 1, 2, 4], [3, 5, 6, 7]]
    assert left.attention_mask.tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]]
    assert left.response_mask.tolist() == [[0, 0, 0, 1], [0, 1, 1, 1]]
    assert left.position_ids.tolist() == [[0, 0, 1, 2], [0, 1, 2, 3]]
    fixed = pack([[1]], [[2]], pad_token_id=0, width=5)
    assert fixed.input_ids.shape == (1, 5) and right.num_tokens == 7


def test_shifted_logprobs_sum_only_response_tokens():
    # Vocabulary of 3, uniform logits except where set: every token has log-prob ln(1/3) unless
    # the logits at the position before it say otherwise.
    batch = pack([[0, 1]], [[2, 1]], pad_token_id=0)
    logits = torch.zeros(1, 4, 3)
    logits[0, 1, 2] = math.log(2.0)  # predicts token 2 (a response token) with p = 2/4
    logits[0, 0, 1] = 50.0  # predicts the prompt's 2nd token: must not count
    logp, mask = shifted_logprobs(logits, batch)
    assert mask.tolist() == [[0, 1, 1]]
    assert (logp * mask).sum().item() == pytest.approx(math.log(0.5) + math.log(1 / 3))


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def test_left_and_right_padding_give_the_unpadded_logprobs(tiny_lm):
    prompts = [[5, 6, 7], [8], [9, 10, 11, 12, 13]]
    responses = [[20, 21], [22, 23, 24, 25, 26], [27]]
    with torch.no_grad():
        alone = torch.cat([sequence_logprobs(tiny_lm, pack([p], [r], 0), temperature=0.7)
                           for p, r in zip(prompts, responses)])
        right = sequence_logprobs(tiny_lm, pack(prompts, responses, 0), temperature=0.7)
        left = sequence_logprobs(tiny_lm, pack(prompts, responses, 0, side="left"),
                                 temperature=0.7)
    torch.testing.assert_close(right, alone, atol=1e-4, rtol=0)
    torch.testing.assert_close(left, alone, atol=1e-4, rtol=0)
    assert (alone < 0).all()


def test_logits_of_the_response_window_give_the_same_logprobs_as_all_logits():
    from policy.logprobs import pack, response_window, shifted_logprobs

    batch = pack([[5, 6, 7, 8], [5, 6]], [[9, 10], [11, 12, 13]], pad_token_id=0)
    # Prompts of 4 and 2 tokens: the earliest response token sits at position 2 and is
    # predicted from position 1, so positions 1..5 are kept.
    assert response_window(batch) == 5
    logits = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(0))
    full, full_mask = shifted_logprobs(logits, batch, temperature=0.7)
    kept, kept_mask = shifted_logprobs(logits[:, -5:], batch, temperature=0.7)
    assert kept.shape == (2, 4)
    torch.testing.assert_close(kept, full[:, -4:])
    torch.testing.assert_close(kept_mask, full_mask[:, -4:])
    assert full_mask[:, :-4].sum() == 0  # nothing of the response was cut off


def test_sequence_logprobs_over_the_response_window_equal_those_over_all_logits(tiny_lm):
    from policy.logprobs import forward

    batch = pack([[5, 6, 7, 8, 9, 10], [5, 6]], [[20, 21], [22, 23, 24]], 0, side="left")
    with torch.no_grad():
        windowed = sequence_logprobs(tiny_lm, batch, temperature=0.7)
        logp, mask = shifted_logprobs(forward(tiny_lm, batch).logits, batch, temperature=0.7)
    torch.testing.assert_close(windowed, (logp * mask).sum(-1), atol=1e-5, rtol=0)


def _logprobs_and_grads(model, batch, **kwargs):
    model.zero_grad()
    logp = sequence_logprobs(model, batch, temperature=0.7, **kwargs)
    (logp * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
    return logp.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                           if p.grad is not None}


def _model_logits_logprobs(model, batch, temperature):
    from policy.logprobs import forward

    logp, mask = shifted_logprobs(forward(model, batch).logits, batch, temperature)
    return (logp * mask).sum(-1)


@pytest.mark.parametrize("side", ["left", "right"])
def test_chunked_head_gives_the_logprobs_and_gradients_of_full_logits(tiny_model_dir, side):
    """Chunks of 3 response tokens, recomputed in backward, against one forward's logits."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    batch = pack([[5, 6, 7], [8], [9, 10, 11, 12, 13]], [[20, 21], [22, 23, 24, 25, 26], [27]],
                 0, side=side)
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda module, args, out: seen.append(args[0].shape[:-1].numel()))
    chunked, chunked_grads = _logprobs_and_grads(model, batch, chunk_tokens=3)
    hook.remove()
    model.zero_grad()
    full = _model_logits_logprobs(model, batch, 0.7)
    (full * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
    torch.testing.assert_close(chunked, full.detach(), atol=1e-5, rtol=0)
    for name, param in model.named_parameters():
        torch.testing.assert_close(chunked_grads[name], param.grad, atol=1e-5, rtol=1e-4,
                                   msg=name)
    # 8 response tokens in chunks of 3; the head's own call inside the forward sees one
    # position per row, and each chunk runs again in backward.
    assert max(seen) == 3 and sum(seen) == 3 + 1 * 3 + 2 * 8


def test_chunked_head_runs_under_the_forwards_autocast(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    batch = pack([[5, 6, 7], [8], [9, 10]], [[20, 21], [22, 23, 24], [27]], 0)
    # As accelerate's mixed precision does: autocast inside the model's forward only.
    model.forward = torch.autocast("cpu", dtype=torch.bfloat16)(model.forward)
    dtypes = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda module, args, out: dtypes.append(out.dtype))
    chunked = sequence_logprobs(model, batch, temperature=0.7, chunk_tokens=2)
    hook.remove()
    full = _model_logits_logprobs(model, batch, 0.7)
    assert set(dtypes) == {torch.bfloat16}
    torch.testing.assert_close(chunked, full, atol=0.05, rtol=0)


def test_models_whose_logits_are_not_the_heads_output_use_their_own_logits(tiny_model_dir):
    """A config that names a logit transform, or a forward that scales logits unannounced,
    gives the log-probs of the model's own logits."""
    from transformers import AutoModelForCausalLM

    batch = pack([[5, 6, 7], [8]], [[20, 21], [22, 23, 24]], 0)
    named = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    named.config.final_logit_softcapping = 30.0
    from policy.logprobs import output_head

    assert output_head(named) is None

    class Scaled(torch.nn.Module):  # logits × 3 after the head, as some architectures do
        def __init__(self, lm):
            super().__init__()
            self.lm = lm

        def get_output_embeddings(self):
            return self.lm.get_output_embeddings()

        def forward(self, **kwargs):
            out = self.lm(**kwargs)
            out.logits = out.logits * 3.0
            return out

    scaled = Scaled(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32))
    with torch.no_grad():
        for _ in range(2):  # the first call checks and falls back, the second remembers
            torch.testing.assert_close(sequence_logprobs(scaled, batch),
                                       _model_logits_logprobs(scaled, batch, 1.0))


def test_lora_model_trains_through_the_chunked_head(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from policy.logprobs import output_head

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    assert output_head(model) is base.get_output_embeddings()
    batch = pack([[5, 6, 7], [8], [9]], [[20, 21], [22, 23, 24], [27, 28]], 0)
    chunked, grads = _logprobs_and_grads(model, batch, chunk_tokens=2)
    model.zero_grad()
    full = _model_logits_logprobs(model, batch, 0.7)
    (full * torch.tensor([1.0, -2.0, 0.5])).sum().backward()
    torch.testing.assert_close(chunked, full.detach(), atol=1e-5, rtol=0)
    assert grads and all("lora_" in name for name in grads)
    for name, param in model.named_parameters():
        if name in grads:
            torch.testing.assert_close(grads[name], param.grad, atol=1e-5, rtol=1e-4)
