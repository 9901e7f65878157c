"""Listwise losses (Plackett-Luce reward and DPO, REBEL over a ranking's pairs) and the
per-example weighting, against values worked out by hand; for two candidates they equal the
pairwise losses."""

import math

import pytest
import torch

from data.scored_pairs import ranks_to_rewards
from policy.losses import dpo_loss, plackett_luce_dpo_loss, rebel_listwise_loss, rebel_loss
from reward.losses import bradley_terry_loss, plackett_luce_loss, tie_loss
from training.listwise import normalise_weights, ranked_pairs, weighted_mean

E = math.e


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def ranks(*rows):
    return torch.tensor(rows, dtype=torch.long)


def full(k, n=1):
    return torch.ones(n, k, dtype=torch.bool)


def test_plackett_luce_strict_order_by_hand():
    # a ≻ b ≻ c with rewards 2, 1, 0: first a from {a, b, c}, then b from {b, c}, then c alone.
    expected = (math.log(E ** 2 + E + 1) - 2) + (math.log(E + 1) - 1) + 0.0
    loss = plackett_luce_loss(t([2.0, 1.0, 0.0]), ranks([1, 2, 3]), full(3))
    assert loss.tolist() == pytest.approx([expected], abs=1e-12)


def test_plackett_luce_tied_groups_by_hand():
    # {a, b} ≻ c: one stage chooses the group from all three, each member weighing ½.
    top_tie = math.log(E ** 2 + E + 1) - (2 + 1) / 2
    # a ≻ {b, c}: a from all three, then the tied pair from {b, c}: log(e + 1) − (1 + 0)/2.
    bottom_tie = (math.log(E ** 2 + E + 1) - 2) + (math.log(E + 1) - 0.5)
    # all three tied: one stage, log(e² + e + 1) − mean(2, 1, 0).
    all_tied = math.log(E ** 2 + E + 1) - 1
    loss = plackett_luce_loss(t([2.0, 1.0, 0.0], [2.0, 1.0, 0.0], [2.0, 1.0, 0.0]),
                              ranks([1, 1, 3], [1, 2, 2], [1, 1, 1]), full(3, 3))
    assert loss.tolist() == pytest.approx([top_tie, bottom_tie, all_tied], abs=1e-12)


def test_plackett_luce_tie_is_smallest_at_equal_rewards():
    losses = [plackett_luce_loss(t([x, 0.0]), ranks([1, 1]), full(2)).item()
              for x in (-1.0, 0.0, 1.0)]
    assert losses[1] == pytest.approx(math.log(2), abs=1e-12)
    assert losses[0] > losses[1] and losses[2] > losses[1]


def test_two_candidates_equal_the_pairwise_reward_losses():
    r_a, r_b = t(2.0, -0.5, 0.3, 0.0), t(0.0, 1.5, 0.3, -4.0)
    scores = torch.stack([r_a, r_b], dim=1)
    strict = plackett_luce_loss(scores, ranks(*[[1, 2]] * 4), full(2, 4))
    torch.testing.assert_close(strict, bradley_terry_loss(r_a, r_b))
    swapped = plackett_luce_loss(scores, ranks(*[[2, 1]] * 4), full(2, 4))
    torch.testing.assert_close(swapped, bradley_terry_loss(r_b, r_a))
    tied = plackett_luce_loss(scores, ranks(*[[1, 1]] * 4), full(2, 4))
    torch.testing.assert_close(tied, tie_loss(r_a, r_b))


def test_two_candidates_equal_pairwise_dpo():
    logp_c, logp_r = t(-1.0, -4.0, -7.0), t(-3.0, -5.0, -2.0)
    ref_c, ref_r = t(-2.0, -4.0, -6.5), t(-2.5, -5.0, -2.2)
    listwise = plackett_luce_dpo_loss(torch.stack([logp_c, logp_r], 1),
                                      torch.stack([ref_c, ref_r], 1), ranks(*[[1, 2]] * 3),
                                      full(2, 3), beta=0.5)
    torch.testing.assert_close(listwise, dpo_loss(logp_c, logp_r, ref_c, ref_r, beta=0.5))
    # Candidates stored rejected-first with ranks [2, 1] give the same loss.
    reordered = plackett_luce_dpo_loss(torch.stack([logp_r, logp_c], 1),
                                       torch.stack([ref_r, ref_c], 1), ranks(*[[2, 1]] * 3),
                                       full(2, 3), beta=0.5)
    torch.testing.assert_close(reordered, listwise)


def test_plackett_luce_dpo_by_hand():
    # Implicit rewards β·(logp − ref) with β = 2: (2·1, 2·0, 2·−1) = (2, 0, −2), order a ≻ b ≻ c.
    expected = (math.log(E ** 2 + 1 + E ** -2) - 2) + (math.log(1 + E ** -2) - 0)
    loss = plackett_luce_dpo_loss(t([-1.0, -3.0, -6.0]), t([-2.0, -3.0, -5.0]),
                                  ranks([1, 2, 3]), full(3), beta=2.0)
    assert loss.tolist() == pytest.approx([expected], abs=1e-12)


def test_two_candidates_equal_pairwise_rebel():
    logp_c, logp_r = t(-1.0, 0.0, -3.0), t(-3.0, 0.0, -1.0)
    ref_c, ref_r = t(-2.0, 0.0, -2.0), t(-2.5, 0.0, -2.0)
    rewards = torch.tensor([ranks_to_rewards([1, 2])] * 3, dtype=torch.float64)
    listwise = rebel_listwise_loss(torch.stack([logp_c, logp_r], 1),
                                   torch.stack([ref_c, ref_r], 1), rewards,
                                   ranks(*[[1, 2]] * 3), full(2, 3), eta=2.0)
    expected = rebel_loss(logp_c, logp_r, ref_c, ref_r, rewards[:, 0], rewards[:, 1], eta=2.0)
    torch.testing.assert_close(listwise, expected)


def test_rebel_listwise_by_hand():
    zeros = torch.zeros(3, 3, dtype=torch.float64)
    order = [[1, 2, 3], [1, 1, 3], [1, 2, 3]]
    rewards = torch.tensor([ranks_to_rewards(r) for r in order], dtype=torch.float64)
    assert rewards.tolist() == [[1.0, 0.5, 0.0], [1.0, 1.0, 0.0], [1.0, 0.5, 0.0]]
    logp = zeros.clone()
    logp[2] = torch.tensor([0.5, 0.0, -0.5])
    loss = rebel_listwise_loss(logp, zeros, rewards, ranks(*order), full(3, 3), eta=2.0)
    # Row 1: log-ratios all 0, η·Δr over (a,b), (a,c), (b,c) = 1, 2, 1 → mean(1, 4, 1) = 2.
    # Row 2: the tied pair (a,b) has gap 0 → residual 0; (a,c), (b,c): 2 each → mean(0, 4, 4).
    # Row 3: log-ratio gaps 0.5, 1, 0.5 against 1, 2, 1 → mean(0.25, 1, 0.25) = 0.5.
    assert loss.tolist() == pytest.approx([2.0, 8 / 3, 0.5], abs=1e-12)


def test_padding_changes_nothing_and_keeps_gradients_finite():
    scores = t([2.0, 1.0, 0.0], [0.5, -1.0, 123.0]).requires_grad_()
    mask = torch.tensor([[True, True, True], [True, True, False]])
    order = ranks([2, 1, 3], [1, 2, 0])
    loss = plackett_luce_loss(scores, order, mask)
    assert loss[1].item() == pytest.approx(bradley_terry_loss(t(0.5), t(-1.0)).item(), abs=1e-12)
    loss.sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert scores.grad[1, 2].item() == 0.0
    rebel = rebel_listwise_loss(scores.detach(), torch.zeros(2, 3, dtype=torch.float64),
                                t([0.5, 1.0, 0.0], [1.0, 0.0, 7.0]), order, mask, eta=1.0)
    assert rebel[1].item() == pytest.approx((1.5 - 1.0) ** 2, abs=1e-12)


def test_candidate_order_does_not_matter():
    scores, order = t([0.3, -1.0, 2.0, 0.7]), ranks([2, 4, 1, 2])
    permutation = [3, 0, 2, 1]
    a = plackett_luce_loss(scores, order, full(4))
    b = plackett_luce_loss(scores[:, permutation], order[:, permutation], full(4))
    torch.testing.assert_close(a, b)


def test_ranked_pairs_count_each_pair_once():
    pairs = ranked_pairs(ranks([1, 1, 3]), full(3), include_ties=True)
    assert pairs.sum().item() == 3
    strict = ranked_pairs(ranks([1, 1, 3]), full(3), include_ties=False)
    assert strict[0].nonzero().tolist() == [[0, 2], [1, 2]]


def test_weights_of_one_give_the_unweighted_mean_and_zero_drops_an_example():
    losses = t(0.5, 2.0, 4.0)
    assert weighted_mean(losses, torch.ones(3)).item() == losses.mean().item()
    assert weighted_mean(losses, None).item() == losses.mean().item()
    assert weighted_mean(losses, t(1.0, 0.0, 3.0)).item() == pytest.approx((0.5 + 12) / 4)
    # Normalised to mean 1, a plain mean of weight × loss is the weighted mean.
    w = normalise_weights([1.0, 0.0, 3.0])
    assert w == pytest.approx([0.75, 0.0, 2.25])
    assert (losses * torch.tensor(w, dtype=torch.float64)).mean().item() == pytest.approx(
        weighted_mean(losses, t(1.0, 0.0, 3.0)).item())
    assert normalise_weights([0.3, 0.3]) == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match=">= 0"):
        normalise_weights([1.0, -0.1])
    with pytest.raises(ValueError, match="all zero"):
        normalise_weights([0.0, 0.0])


def test_ranking_layout_pads_rankings_of_different_sizes():
    from training.listwise import PADDING_RANK, padded_ranks, ranking_layout

    index, mask = ranking_layout([2, 3, 1])
    assert index.tolist() == [[0, 1, 0], [2, 3, 4], [5, 0, 0]]
    assert mask.tolist() == [[True, True, False], [True, True, True], [True, False, False]]
    assert padded_ranks([[2, 1], [1, 1, 3], [1]], 3).tolist() == [
        [2, 1, PADDING_RANK], [1, 1, 3], [1, PADDING_RANK, PADDING_RANK]]
