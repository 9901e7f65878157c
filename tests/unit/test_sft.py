"""SFT pieces by hand: assistant-only labels, packing, the token loss, batching, data errors."""

from __future__ import annotations

import math

import pytest
import torch

from policy import sft
from policy.sft import IGNORE, SFTDataError, SFTExample


def labeled_segments(example: SFTExample) -> list[list[int]]:
    """Runs of consecutive trained tokens."""
    runs, current = [], []
    for token, label in zip(example.input_ids, example.labels):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def test_only_assistant_turns_and_their_end_tokens_are_trained(smol_tokenizer):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Say hi."},
                {"role": "assistant", "content": "Hi there!"},
                {"role": "user", "content": "And bye?"},
                {"role": "assistant", "content": "Bye now."}]
    example = sft.encode_conversation(smol_tokenizer, messages)
    text = smol_tokenizer.apply_chat_template(messages, tokenize=False)
    assert smol_tokenizer.decode(example.input_ids) == text
    segments = [smol_tokenizer.decode(s) for s in labeled_segments(example)]
    assert segments == ["Hi there!<|im_end|>\n", "Bye now.<|im_end|>\n"]
    assert example.trained_tokens == sum(len(s) for s in labeled_segments(example))


def test_pack_blocks_by_hand():
    blocks = sft.pack_blocks([[1, 2, 3], [4, 5]], block_size=3, eos_token_id=0)
    # Stream 1 2 3 0 4 5 0: two full blocks, the trailing "0" is dropped.
    assert [b.input_ids for b in blocks] == [[1, 2, 3], [0, 4, 5]]
    assert all(b.labels == b.input_ids for b in blocks)
    assert sft.pack_blocks([[1]], block_size=3, eos_token_id=0) == []


def test_token_nll_sum_by_hand():
    # Uniform logits over 4 tokens: every trained token costs log 4.
    logits = torch.zeros(2, 3, 4)
    labels = torch.tensor([[IGNORE, 1, 2], [IGNORE, IGNORE, 3]])
    loss, tokens = sft.token_nll_sum(logits, labels)
    assert int(tokens) == 3 and float(loss) == pytest.approx(3 * math.log(4))
    # A confident right prediction costs ~0: position 0 predicts label 1 (token 1).
    logits[0, 0, 1] = 50.0
    loss, _ = sft.token_nll_sum(logits, labels)
    assert float(loss) == pytest.approx(2 * math.log(4), abs=1e-6)


def test_collate_pads_right_and_ignores_padding():
    batch = sft.collate([SFTExample([5, 6, 7], [IGNORE, 6, 7], "a"),
                         SFTExample([8], [8], "b")], pad_token_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.labels.tolist() == [[IGNORE, 6, 7], [8, IGNORE, IGNORE]]


def test_chat_rows_from_messages_or_preference_columns():
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert sft.conversations_from_rows([{"messages": chat}], "f") == [chat]
    pref = sft.conversations_from_rows(
        [{"prompt": "q", "chosen": "a", "rejected": "b"}], "f")
    assert pref == [chat]
    with pytest.raises(SFTDataError, match="no 'messages' column"):
        sft.conversations_from_rows([{"text": "hello"}], "f")
    with pytest.raises(SFTDataError, match="row 1 has no assistant turn"):
        sft.conversations_from_rows([{"messages": chat[:1]}], "f")


def test_config_checks():
    with pytest.raises(ValueError, match="--from"):
        sft.SFTConfig(output="x", db_source="everything")
    with pytest.raises(ValueError, match="block size"):
        sft.SFTConfig(output="x", block_size=0)
