"""Tokenizing pairs, the held-out split, length-grouped step planning and PreferenceBatch."""

import random

import pytest
import torch

from data.preferences import PreferencePair
from reward.batches import EncodedPair, collate, encode_pairs, pad_sequences
from training.plan import global_batches, micro_batches, split_held_out, steps_per_epoch


def encoded(chosen_len, rejected_len, group="g", tie=False, margin=0.0):
    return EncodedPair(list(range(1, chosen_len + 1)), list(range(1, rejected_len + 1)),
                       margin, tie, group)


def test_collate_puts_chosen_rows_first_and_pads_to_the_longest_sequence():
    batch = collate([encoded(3, 5, margin=1.0), encoded(2, 1, tie=True)], pad_token_id=0)
    assert batch.input_ids.shape == (4, 5) and batch.num_pairs == 2
    assert batch.attention_mask.sum(dim=1).tolist() == [3, 2, 5, 1]  # chosen 0, 1; rejected 0, 1
    assert batch.input_ids[0].tolist() == [1, 2, 3, 0, 0]
    assert batch.margin.tolist() == [1.0, 0.0] and batch.is_tie.tolist() == [False, True]
    chosen, rejected = batch.split(torch.tensor([10.0, 11.0, 20.0, 21.0]))
    assert chosen.tolist() == [10.0, 11.0] and rejected.tolist() == [20.0, 21.0]


def test_pad_sequences_left_and_right():
    ids, mask = pad_sequences([[5, 6], [7]], pad_token_id=0, side="left")
    assert ids.tolist() == [[5, 6], [0, 7]] and mask.tolist() == [[1, 1], [0, 1]]
    ids, mask = pad_sequences([[5, 6], [7]], pad_token_id=0)
    assert ids.tolist() == [[5, 6], [7, 0]] and mask.tolist() == [[1, 1], [1, 0]]


def test_encode_pairs_drops_over_long_pairs_and_counts_them(smol_tokenizer):
    user = [{"role": "user", "content": "Hi"}]
    short = PreferencePair(user, [{"role": "assistant", "content": "Hello"}],
                           [{"role": "assistant", "content": "Go"}], margin=0.5)
    long = PreferencePair(user, [{"role": "assistant", "content": "word " * 300}],
                          [{"role": "assistant", "content": "Go"}])
    pairs, too_long = encode_pairs(smol_tokenizer, [short, long, short], max_length=64)
    assert too_long == 1 and len(pairs) == 2
    text = smol_tokenizer.apply_chat_template(short.chosen_conversation(), tokenize=False)
    assert pairs[0].chosen_ids == smol_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert smol_tokenizer.decode(pairs[0].chosen_ids).endswith("Hello<|im_end|>\n")
    assert pairs[0].margin == 0.5


def test_held_out_split_keeps_prompts_whole_and_is_deterministic():
    pairs = [encoded(2, 2, group=f"prompt{i % 10}") for i in range(40)]
    train, held = split_held_out(pairs, 0.2, seed=3)
    assert len({p.group for p in held}) == 2 and len(held) == 8
    assert not {p.group for p in train} & {p.group for p in held}
    assert split_held_out(pairs, 0.2, seed=3) == (train, held)
    assert split_held_out(pairs, 0.0, seed=3) == (pairs, [])
    # With very few prompts one still trains and one is held out.
    train, held = split_held_out(pairs[:2], 0.9, seed=0)
    assert len(train) == 1 and len(held) == 1


def test_global_batches_cover_each_pair_once_and_group_by_length():
    rng = random.Random(0)
    lengths = [rng.randint(5, 500) for _ in range(203)]
    batches = global_batches(lengths, 8, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(203))
    assert len(batches) == steps_per_epoch(203, 8, 1) == 26
    assert global_batches(lengths, 8, seed=1, epoch=0) == batches
    assert global_batches(lengths, 8, seed=1, epoch=1) != batches

    def padding(bs):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in bs)

    shuffled = list(range(203))
    random.Random(1).shuffle(shuffled)
    unsorted = [shuffled[i:i + 8] for i in range(0, 203, 8)]
    assert padding(batches) < padding(unsorted) / 3


def test_a_last_batch_too_small_for_every_micro_batch_is_left_out():
    lengths = [10] * 11
    def sizes(min_size):
        return sorted(len(b) for b in global_batches(lengths, 4, seed=0, epoch=0,
                                                     min_size=min_size))

    assert sizes(4) == [4, 4]
    assert steps_per_epoch(11, 4, 4) == 2
    assert sizes(2) == [3, 4, 4]
    assert steps_per_epoch(11, 4, 2) == 3


def test_micro_batches_are_non_empty_near_equal_and_sorted_by_length():
    lengths = [5, 50, 20, 40, 10]
    chunks = micro_batches([0, 1, 2, 3, 4], lengths, 2)
    assert chunks == [[1, 3, 2], [4, 0]]
    assert [len(c) for c in micro_batches(list(range(5)), lengths, 5)] == [1] * 5
    with pytest.raises(ValueError):
        micro_batches([0, 1], lengths, 3)
