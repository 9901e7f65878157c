"""Policy losses against hand-computed tensors."""

import math

import pytest
import torch

from policy.losses import (
    AdaptiveKLController,
    clipped_value_loss,
    dpo_implicit_rewards,
    dpo_loss,
    gae,
    kl_estimators,
    masked_mean,
    masked_whiten,
    move_kl,
    ppo_clip_loss,
    rebel_loss,
)


def test_rebel_loss_by_hand():
    # Pair 1: log-ratio gap (−1 − −2) − (−3 − −2.5) = 1 + 0.5 = 1.5; η·Δr = 2·(1 − 0.25) = 1.5 → 0.
    # Pair 2: gap (0 − 0) − (0 − 0) = 0; η·Δr = 2·(0.5 − 1) = −1 → (0 + 1)² = 1.
    loss = rebel_loss(torch.tensor([-1.0, 0.0]), torch.tensor([-3.0, 0.0]),
                      torch.tensor([-2.0, 0.0]), torch.tensor([-2.5, 0.0]),
                      torch.tensor([1.0, 0.5]), torch.tensor([0.25, 1.0]), eta=2.0)
    torch.testing.assert_close(loss, torch.tensor([0.0, 1.0]))


def test_dpo_sigmoid_loss_by_hand():
    # Pair 1: log-ratios chosen −1 − (−2) = 1, rejected −3 − (−2.5) = −0.5; h = 1.5;
    #   β = 0.5 → −log σ(0.75) = log(1 + e^−0.75).
    # Pair 2: policy equals the reference: h = 0 → log 2.
    args = (torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -5.0]), torch.tensor([-2.0, -4.0]),
            torch.tensor([-2.5, -5.0]))
    loss = dpo_loss(*args, beta=0.5)
    torch.testing.assert_close(loss, torch.tensor([math.log1p(math.exp(-0.75)), math.log(2)]))
    rewards = dpo_implicit_rewards(args[0], args[2], beta=0.5)
    torch.testing.assert_close(rewards, torch.tensor([0.5, 0.0]))


def test_ipo_loss_by_hand_uses_log_ratios_per_token():
    # Chosen log-ratio 1 over 4 tokens = 0.25; rejected −0.5 over 2 tokens = −0.25;
    # h̄ = 0.5; β = 0.25 → 1/(2β) = 2 → (0.5 − 2)² = 2.25. Policy = reference → (0 − 2)² = 4.
    loss = dpo_loss(torch.tensor([-1.0, -4.0]), torch.tensor([-3.0, -5.0]),
                    torch.tensor([-2.0, -4.0]), torch.tensor([-2.5, -5.0]), beta=0.25,
                    loss_type="ipo", chosen_lengths=torch.tensor([4.0, 3.0]),
                    rejected_lengths=torch.tensor([2.0, 9.0]))
    torch.testing.assert_close(loss, torch.tensor([2.25, 4.0]))
    with pytest.raises(ValueError, match="needs the response lengths"):
        dpo_loss(*(torch.zeros(1),) * 4, beta=0.1, loss_type="ipo")
    with pytest.raises(ValueError, match="loss type must be one of sigmoid, ipo"):
        dpo_loss(*(torch.zeros(1),) * 4, beta=0.1, loss_type="hinge")


def test_rebel_reference_form_has_the_same_minimizer():
    """The paper's form (Δ/η − Δr)² is the multiplied form divided by η²: same minimizer."""
    eta = 0.5
    gap = torch.linspace(-3, 3, 601)
    zeros = torch.zeros_like(gap)
    ours = rebel_loss(gap, zeros, zeros, zeros, torch.full_like(gap, 0.7), zeros, eta=eta)
    reference = (gap / eta - 0.7) ** 2
    assert gap[ours.argmin()].item() == pytest.approx(eta * 0.7, abs=0.006)
    assert ours.argmin() == reference.argmin()
    torch.testing.assert_close(reference, ours / eta ** 2)


def test_rebel_gradient_pushes_chosen_up_when_below_target():
    logp_chosen = torch.tensor([-5.0], requires_grad=True)
    loss = rebel_loss(logp_chosen, torch.tensor([-5.0]), torch.tensor([-5.0]),
                      torch.tensor([-5.0]), torch.tensor([1.0]), torch.tensor([0.0]), eta=1.0)
    loss.sum().backward()
    assert logp_chosen.grad.item() == pytest.approx(-2.0)  # d/dx (x+5 − 1)² at x=−5


def test_kl_estimators_by_hand():
    logp = torch.tensor([-1.0, -2.0])
    ref = torch.tensor([-1.5, -1.0])
    kl = kl_estimators(logp, ref)
    # log r = ref − logp = [−0.5, 1.0]
    torch.testing.assert_close(kl["k1"], torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(kl["k2"], torch.tensor([0.125, 0.5]))
    torch.testing.assert_close(kl["k3"], torch.tensor([math.exp(-0.5) - 1 + 0.5,
                                                       math.exp(1.0) - 1 - 1.0]))
    assert (kl["k3"] >= 0).all()


def test_move_kl_by_hand_counts_a_pair_moved_apart():
    """A fitted pair moved symmetrically apart (chosen +1 nat, rejected −1) has a mean
    log-ratio of 0, so −log-ratio (k1) says the policy has not moved; the budget's estimate
    says ½ nat per response."""
    ratio = torch.tensor([1.0, -1.0, 0.0, 2.0])
    torch.testing.assert_close(move_kl(ratio), torch.tensor([0.5, 0.5, 0.0, 2.0]))
    assert -ratio[:2].mean() == 0 and move_kl(ratio[:2]).mean() == 0.5
    # Its sign does not depend on which way a response moved.
    assert (move_kl(-ratio) == move_kl(ratio)).all()


def test_kl_estimators_match_the_true_kl_on_samples():
    torch.manual_seed(0)
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.5, 0.3])
    true_kl = float((p * (p / q).log()).sum())
    samples = torch.multinomial(p, 200_000, replacement=True)
    kl = kl_estimators(p.log()[samples], q.log()[samples])
    assert kl["k1"].mean().item() == pytest.approx(true_kl, abs=0.01)
    assert kl["k3"].mean().item() == pytest.approx(true_kl, abs=0.01)


def test_gae_by_hand():
    # One sequence of 3 tokens and one of 2 (padded), γ = 0.9, λ = 0.5.
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, 9.0]])
    values = torch.tensor([[0.1, 0.2, 0.3], [1.0, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    # Sequence 1: δ2 = 1 − 0.3 = 0.7; δ1 = 0 + 0.9·0.3 − 0.2 = 0.07; δ0 = 0.9·0.2 − 0.1 = 0.08
    a2 = 0.7
    a1 = 0.07 + 0.45 * a2
    a0 = 0.08 + 0.45 * a1
    # Sequence 2: δ1 = 2 − 0.5 = 1.5 (nothing after the end); δ0 = 0.5 + 0.9·0.5 − 1 = −0.05
    b1 = 1.5
    b0 = -0.05 + 0.45 * b1
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, a2], [b0, b1, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[a0 + 0.1, a1 + 0.2, a2 + 0.3],
                                                  [b0 + 1.0, b1 + 0.5, 0.0]]))


def test_gae_with_lambda_one_and_gamma_one_is_reward_to_go_minus_value():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 0.5, 0.5]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([[6.0, 5.0, 3.0]]))
    torch.testing.assert_close(adv, torch.tensor([[5.5, 4.5, 2.5]]))


def test_ppo_clip_loss_by_hand():
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 2.0]]))
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, clip_fraction = ppo_clip_loss(logp, old, adv, mask, clip=0.2)
    # token 0: ratio 1.5, A=1 → max(−1.5, −1.2) = −1.2 (clipped)
    # token 1: ratio 0.5, A=1 → max(−0.5, −0.8) = −0.5
    # token 2: ratio 1.1, A=−1 → max(1.1, 1.1) = 1.1; token 3 is padding
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.1) / 3)
    assert clip_fraction.item() == pytest.approx(1 / 3)


def test_clipped_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[0.0, 0.0]])
    returns = torch.tensor([[2.0, 1.0]])
    loss, clip_fraction = clipped_value_loss(values, old, returns, torch.ones(1, 2), clip=0.2)
    # token 0: unclipped (1−2)² = 1, clipped (0.2−2)² = 3.24 → 3.24; token 1: both 1 → 1
    assert loss.item() == pytest.approx(0.5 * (3.24 + 1.0) / 2)
    assert clip_fraction.item() == pytest.approx(0.5)


def test_masked_mean_and_whiten_ignore_padding():
    values = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 0]])
    assert masked_mean(values, mask).item() == 2.0
    white = masked_whiten(values, mask)
    torch.testing.assert_close(white, torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-4, rtol=0)


def test_adaptive_kl_moves_toward_the_target():
    ctl = AdaptiveKLController(0.1, target=1.0, horizon=10)
    ctl.update(kl=5.0, n_steps=1)  # error clipped to +0.2
    assert ctl.value == pytest.approx(0.1 * 1.02)
    ctl.update(kl=0.0, n_steps=1)
    assert ctl.value == pytest.approx(0.1 * 1.02 * 0.98)


def _whiten_share(rank: int, world: int, init_file: str, values, mask, out) -> None:
    """One process of a gloo group: whitens its share of the rows with sums over the group."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)

    def reduce_sum(t):
        t = t.clone()
        dist.all_reduce(t)
        return t

    rows = slice(rank * len(values) // world, (rank + 1) * len(values) // world)
    out[rows] = masked_whiten(values[rows], mask[rows], reduce_sum=reduce_sum)
    dist.destroy_process_group()


def test_whitening_over_processes_equals_whitening_the_whole_rollout(tmp_path):
    torch.manual_seed(0)
    values = torch.randn(6, 5) * 3 + 2
    mask = torch.ones(6, 5)
    mask[1, 3:] = mask[4, 1:] = mask[5, 2:] = 0  # uneven lengths: shares differ in size
    whole = masked_whiten(values, mask)
    out = torch.zeros_like(values).share_memory_()
    torch.multiprocessing.spawn(_whiten_share, args=(2, str(tmp_path / "init"), values, mask, out),
                                nprocs=2, join=True)
    torch.testing.assert_close(out, whole, atol=1e-6, rtol=0)
    # Whitening each share on its own, as before, gives other advantages.
    alone = torch.cat([masked_whiten(values[:3], mask[:3]), masked_whiten(values[3:], mask[3:])])
    assert (alone - whole).abs().max() > 0.1
