"""Reward losses against values worked out by hand."""

import math

import pytest
import torch

from reward.losses import bradley_terry_loss, preference_loss, reward_centering_penalty, tie_loss

LOG2 = math.log(2)


def nll_sigmoid(x: float) -> float:
    """−log σ(x) = log(1 + e^−x)."""
    return math.log1p(math.exp(-x))


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_bradley_terry_per_pair():
    loss = bradley_terry_loss(t(2.0, 0.0, -1.0), t(0.0, 0.0, 1.0))
    # −log σ(2) = log(1 + e^−2) = 0.126928; σ(0) = ½; −log σ(−2) = 2.126928
    assert loss.tolist() == pytest.approx([0.126928011, LOG2, 2.126928011], abs=1e-8)


def test_bradley_terry_margin_is_subtracted_from_the_difference():
    loss = bradley_terry_loss(t(2.0, 2.0), t(0.0, 0.0), margin=t(1.0, 3.0))
    assert loss.tolist() == pytest.approx([nll_sigmoid(1.0), nll_sigmoid(-1.0)], abs=1e-12)
    assert loss[1] > loss[0]  # a larger required lead costs more at the same rewards


def test_bradley_terry_gradient():
    r_chosen, r_rejected = t(1.0).requires_grad_(), t(0.0).requires_grad_()
    bradley_terry_loss(r_chosen, r_rejected).sum().backward()
    # d/dr_c −log σ(r_c − r_r) = −(1 − σ(1)) = −0.268941; opposite for r_r
    assert r_chosen.grad.item() == pytest.approx(-0.268941421, abs=1e-8)
    assert r_rejected.grad.item() == pytest.approx(0.268941421, abs=1e-8)


def test_tie_loss_is_symmetric_and_smallest_at_equal_rewards():
    loss = tie_loss(t(1.0, 3.0, 1.0), t(1.0, 1.0, 3.0))
    # equal: −½(log ½ + log ½) = log 2; difference ±2: ½(0.126928 + 2.126928) = 1.126928
    assert loss.tolist() == pytest.approx([LOG2, 1.126928011, 1.126928011], abs=1e-8)
    r_a, r_b = t(0.5).requires_grad_(), t(0.5).requires_grad_()
    tie_loss(r_a, r_b).sum().backward()
    assert r_a.grad.item() == pytest.approx(0.0) and r_b.grad.item() == pytest.approx(0.0)


def test_centering_penalty():
    assert reward_centering_penalty(t(1.0, -2.0), t(2.0, 2.0)).tolist() == [9.0, 0.0]


def test_preference_loss_mixes_ties_margin_and_centering():
    loss = preference_loss(
        t(2.0, 1.0, 0.0), t(0.0, 3.0, 0.0),
        is_tie=torch.tensor([False, True, False]),
        margin=t(1.0, 5.0, 0.0),  # the tie's margin is ignored
        centering_coefficient=0.1,
    )
    expected = [
        nll_sigmoid(2.0 - 0.0 - 1.0) + 0.1 * 4.0,
        1.126928011 + 0.1 * 16.0,
        LOG2 + 0.0,
    ]
    assert loss.tolist() == pytest.approx(expected, abs=1e-8)


def test_preference_loss_without_ties_equals_bradley_terry():
    r_chosen, r_rejected = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    assert torch.equal(preference_loss(r_chosen, r_rejected),
                       bradley_terry_loss(r_chosen, r_rejected))
