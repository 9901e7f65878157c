"""One held-out rule: reward training, policy pairs and the exported test split agree."""

from types import SimpleNamespace

import pytest

from data import export, scored_pairs
from data.splits import held_out_groups
from training import plan


@pytest.mark.parametrize("fraction,seed", [(0.1, 0), (0.25, 3), (0.5, 7), (0.0, 0), (0.99, 1)])
def test_every_consumer_holds_out_the_same_prompts(fraction, seed):
    prompts = [f"p{i}" for i in range(20)] * 2  # each prompt twice, as pairs of one prompt
    expected = held_out_groups(prompts, fraction, seed)
    examples = [SimpleNamespace(group=p) for p in prompts]
    _, held = plan.split_held_out(examples, fraction, seed)
    assert {e.group for e in held} == expected
    _, held_idx = scored_pairs.split_held_out(prompts, fraction, seed)
    assert {prompts[i] for i in held_idx} == expected
    assert export.held_out_prompts(prompts, fraction, seed) == expected
    if fraction > 0:
        assert 1 <= len(expected) <= 19 and len(expected) == min(19, max(1, round(20 * fraction)))
    else:
        assert expected == set()


def test_the_split_depends_on_the_seed_not_on_order():
    prompts = list(range(50))
    assert held_out_groups(prompts, 0.2, 0) == held_out_groups(reversed(prompts), 0.2, 0)
    assert len({frozenset(held_out_groups(prompts, 0.2, s)) for s in range(5)}) > 1
    assert held_out_groups(["only"], 0.5, 0) == set()  # never every prompt
