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
