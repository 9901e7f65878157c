"""Policy-optimization losses as pure functions over tensors (REBEL, DPO, IPO, PPO, KL
estimators).

Shapes: B = sequences (or pairs), T = response tokens. ``mask`` is 1.0 on real response
tokens and 0.0 on padding; every mean over tokens is a masked mean.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
                  eps: float = 1e-8,
                  reduce_sum: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """(values − mean) / std over the masked entries; padding keeps its value × 0 afterwards.
    ``shift_mean=False`` rescales only (used for rewards, whose sign matters).

    ``reduce_sum`` sums a tensor over every process holding a share of the values (e.g.
    ``lambda t: accelerator.reduce(t, reduction="sum")``): mean and variance are then those of
    the whole rollout, so the result does not depend on how it was split over processes. Every
    process must call it, with or without values of its own."""
    mask = mask.to(values.dtype)
    reduce_sum = reduce_sum or (lambda t: t)
    total, count = reduce_sum(torch.stack([(values * mask).sum(), mask.sum()]))
    count = count.clamp(min=1)
    mean = total / count
    variance = reduce_sum(((values - mean) ** 2 * mask).sum()) / count
    whitened = (values - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


# --- REBEL --------------------------------------------------------------------------------------

def rebel_loss(logp_chosen: torch.Tensor, logp_rejected: torch.Tensor,
               ref_logp_chosen: torch.Tensor, ref_logp_rejected: torch.Tensor,
               reward_chosen: torch.Tensor, reward_rejected: torch.Tensor,
               eta: float) -> torch.Tensor:
    """Per-pair REBEL loss ``[B]`` (take the mean over the batch):

        ((log π_θ(y|x) − log π_t(y|x)) − (log π_θ(y'|x) − log π_t(y'|x)) − η·(r(x,y) − r(x,y')))²

    All inputs are ``[B]``: summed response log-probs under the policy being trained (π_θ) and
    under the policy that sampled the pairs (π_t, computed once, no gradient), and rewards.

    This is what every REBEL reference script computes (``ratio_logprob − eta ·
    reward_gap``, squared). Only the paper's written objective divides instead, (Δ/η − Δr)²
    with Δ the log-ratio difference; that equals (Δ − η·Δr)² / η², this form times the
    constant 1/η² > 0, so both have the same minimizers (Δ = η·Δr) and differ only in gradient
    scale (an effective learning rate), by 1/η². η is the target log-ratio gap per unit of
    reward: a larger η moves the policy further from π_t for the same reward difference.
    """
    log_ratio_gap = (logp_chosen - ref_logp_chosen) - (logp_rejected - ref_logp_rejected)
    return (log_ratio_gap - eta * (reward_chosen - reward_rejected)) ** 2


# --- DPO ----------------------------------------------------------------------------------------

DPO_LOSSES = ("sigmoid", "ipo")


def dpo_loss(logp_chosen: torch.Tensor, logp_rejected: torch.Tensor,
             ref_logp_chosen: torch.Tensor, ref_logp_rejected: torch.Tensor, *, beta: float,
             loss_type: str = "sigmoid", chosen_lengths: torch.Tensor | None = None,
             rejected_lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pair DPO-family loss ``[B]`` (take the mean over the batch). All inputs ``[B]``:
    summed response log-probs under the policy being trained and under the frozen reference.

    With h = (log π_θ(y|x) − log π_ref(y|x)) − (log π_θ(y'|x) − log π_ref(y'|x)):

    - ``sigmoid`` (DPO, Rafailov et al. 2023): −log σ(β·h).
    - ``ipo`` (Azar et al. 2023): (h̄ − 1/(2β))², where h̄ uses each response's log-ratio
      divided by its number of tokens (``chosen_lengths``/``rejected_lengths``), as TRL does
      and as the IPO authors' results were computed.
    """
    ratio_chosen = logp_chosen - ref_logp_chosen
    ratio_rejected = logp_rejected - ref_logp_rejected
    if loss_type == "sigmoid":
        return -torch.nn.functional.logsigmoid(beta * (ratio_chosen - ratio_rejected))
    if loss_type == "ipo":
        if chosen_lengths is None or rejected_lengths is None:
            raise ValueError("the IPO loss needs the response lengths")
        gap = (ratio_chosen / chosen_lengths.clamp(min=1)
               - ratio_rejected / rejected_lengths.clamp(min=1))
        return (gap - 1 / (2 * beta)) ** 2
    raise ValueError(f"loss type must be one of {', '.join(DPO_LOSSES)}, not {loss_type!r}")


def dpo_implicit_rewards(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """β·(log π_θ(y|x) − log π_ref(y|x)) ``[B]``: the reward DPO's policy implicitly assigns."""
    return beta * (logp - ref_logp)


# --- KL estimators --------------------------------------------------------------------------------

def kl_estimators(logp: torch.Tensor, ref_logp: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-token estimates of KL(π ‖ π_ref) from tokens sampled from π (Schulman's k1, k2, k3),
    each the same shape as the inputs. With log r = log π_ref − log π:
    k1 = −log r (unbiased, can be negative), k2 = ½ (log r)² (biased, ≥ 0),
    k3 = (r − 1) − log r (unbiased, ≥ 0)."""
    log_r = ref_logp - logp
    return {"k1": -log_r, "k2": 0.5 * log_r ** 2, "k3": torch.expm1(log_r) - log_r}



def move_kl(log_ratio: torch.Tensor) -> torch.Tensor:
    """How far training has moved the policy on responses the starting policy sampled, in nats
    per response: ½·(log π_θ(y|x) − log π_start(y|x))², Schulman's k2 estimate of
    KL(π_start ‖ π_θ), same shape as ``log_ratio``. Never negative, equal to the KL to second
    order. Not k1 (−log-ratio): that is unbiased only on plain samples, while the pairs are each
    prompt's best and worst of k and training raises exactly the responses it fits, so k1 drifts
    below zero as the policy moves and a budget on it never fires. Not k3: e^(log-ratio) of a
    whole sequence overflows once a fitted response gains a few nats."""
    return 0.5 * log_ratio ** 2

# --- PPO ------------------------------------------------------------------------------------------

def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over response tokens.

    rewards, values, mask: ``[B, T]``, right-padded (a response's tokens come first). The value
    after a sequence's last token is 0 (the episode ends). Returns (advantages, returns), both
    ``[B, T]`` and 0 on padding: δ_t = r_t + γ V_{t+1} − V_t, A_t = δ_t + γλ A_{t+1},
    returns = A + V.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(values)
    next_advantage = torch.zeros_like(values[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        next_value = values[:, t]
        advantages[:, t] = next_advantage
    return advantages, (advantages + values) * mask


def ppo_clip_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                  mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate policy loss (scalar) and clip fraction (scalar), over ``[B, T]`` tokens:
    mean of max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)) with ρ = exp(logp − old_logp)."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_fraction


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss (scalar) and its clip fraction, over ``[B, T]``:
    ½ · mean of max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²)."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).float(), mask)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy ``[..., T]`` of the softmax over the last dimension."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


class AdaptiveKLController:
    """Ziegler et al. (2019): the KL coefficient moves so the measured KL tracks ``target``:
    β ← β · (1 + clip(KL/target − 1, −0.2, 0.2) · n / horizon)."""

    def __init__(self, init_coef: float, target: float, horizon: int):
        self.value = init_coef
        self.target = target
        self.horizon = horizon

    def update(self, kl: float, n_steps: int) -> None:
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


# --- listwise (whole rankings) ------------------------------------------------------------------
# Shapes: B = rankings, K = the most candidates in a ranking of the batch; ranks 1 = best, equal
# ranks tie; ``candidate_mask`` True on real candidates (padding's values are ignored).

def plackett_luce_dpo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, ranks: torch.Tensor,
                           candidate_mask: torch.Tensor, *, beta: float) -> torch.Tensor:
    """Plackett-Luce DPO (Rafailov et al. 2023, appendix A.3), per ranking ``[B]``: the
    negative log-likelihood of each ranking under Plackett-Luce over the implicit rewards
    β·(log π_θ(y|x) − log π_ref(y|x)) of its candidates, ties as grouped stages
    (``training.listwise``). For two candidates it equals ``dpo_loss`` (sigmoid); a tied pair
    gives the 50/50 cross-entropy, which pulls the two implicit rewards together.

    logp, ref_logp: ``[B, K]`` summed response log-probs; ranks ``[B, K]`` int; candidate_mask
    ``[B, K]`` bool.
    """
    from training.listwise import plackett_luce_nll

    return plackett_luce_nll(beta * (logp - ref_logp), ranks, candidate_mask)


def rebel_listwise_loss(logp: torch.Tensor, ref_logp: torch.Tensor, rewards: torch.Tensor,
                        ranks: torch.Tensor, candidate_mask: torch.Tensor, *,
                        eta: float) -> torch.Tensor:
    """REBEL over every pair of each ranking, per ranking ``[B]``: the mean over the ranking's
    pairs (y, y') of ``rebel_loss``'s ((log π_θ/π_t)(y) − (log π_θ/π_t)(y') − η·(r(y) − r(y')))².

    rewards ``[B, K]`` are the ranking's own rank-derived rewards
    (``data.scored_pairs.ranks_to_rewards``). Tied candidates form a pair too, with reward gap
    0: REBEL regresses their log-ratio gap onto 0, which is what a tie says. The mean (not the
    sum) keeps one ranking worth one example whatever its size, so the learning rate means the
    same as with pairs. For two candidates it equals ``rebel_loss``.

    logp, ref_logp (π_t's), rewards: ``[B, K]``; ranks ``[B, K]`` int; candidate_mask
    ``[B, K]`` bool.
    """
    from training.listwise import ranked_pairs

    pairs = ranked_pairs(ranks, candidate_mask, include_ties=True)
    ratio = logp - ref_logp
    residual = (ratio[:, :, None] - ratio[:, None, :]
                - eta * (rewards[:, :, None] - rewards[:, None, :]))
    squared = torch.where(pairs, residual ** 2, torch.zeros_like(residual))
    return squared.sum((1, 2)) / pairs.sum((1, 2)).clamp(min=1).to(squared.dtype)
