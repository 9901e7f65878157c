"""Reward-model losses as pure functions of reward tensors.

Every function returns one value per pair (shape ``[B]``) rather than a mean: the training
recipe divides the sum by the number of pairs in the whole optimizer step, which keeps
micro-batching, gradient accumulation and data parallelism exactly equivalent to one big batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | None = None
) -> torch.Tensor:
    """-log σ(r_chosen − r_rejected − margin), per pair.

    r_chosen, r_rejected: ``[B]`` scalar rewards. margin: ``[B]`` or None (zero); a positive
    margin asks for the chosen reward to lead by at least that much. Returns ``[B]``.
    """
    difference = r_chosen - r_rejected
    if margin is not None:
        difference = difference - margin
    return -F.logsigmoid(difference)


def tie_loss(r_a: torch.Tensor, r_b: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry cross-entropy against a 50/50 label, per pair.

    −½·log σ(r_a − r_b) − ½·log σ(r_b − r_a): symmetric in a and b, smallest (log 2) when the
    two rewards are equal, so ties pull rewards together without choosing a side.
    r_a, r_b: ``[B]``. Returns ``[B]``.
    """
    difference = r_a - r_b
    return -0.5 * (F.logsigmoid(difference) + F.logsigmoid(-difference))


def reward_centering_penalty(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """(r_chosen + r_rejected)², per pair (Eisenstein et al. 2023): keeps rewards near zero.

    Scaled by a coefficient and added to the loss; its mean over pairs equals TRL's
    ``mean((r_c + r_r)²)``. r_chosen, r_rejected: ``[B]``. Returns ``[B]``.
    """
    return (r_chosen + r_rejected) ** 2


def preference_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    *,
    is_tie: torch.Tensor | None = None,
    margin: torch.Tensor | None = None,
    centering_coefficient: float = 0.0,
) -> torch.Tensor:
    """The training loss per pair: Bradley-Terry for preferences, ``tie_loss`` for ties, plus
    ``centering_coefficient`` × the centering penalty for every pair.

    r_chosen, r_rejected: ``[B]``. is_tie: ``[B]`` bool or None (no ties). margin: ``[B]`` or
    None; ignored for ties. Returns ``[B]``.
    """
    loss = bradley_terry_loss(r_chosen, r_rejected, margin)
    if is_tie is not None and bool(is_tie.any()):
        loss = torch.where(is_tie, tie_loss(r_chosen, r_rejected), loss)
    if centering_coefficient:
        loss = loss + centering_coefficient * reward_centering_penalty(r_chosen, r_rejected)
    return loss


def plackett_luce_loss(rewards: torch.Tensor, ranks: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
    """Listwise reward-model loss, per ranking: the Plackett-Luce negative log-likelihood of
    each ranking's whole order, ties as grouped stages (``training.listwise``, where the tie
    rule is justified). For two candidates it equals ``bradley_terry_loss`` (strict) and
    ``tie_loss`` (tied).

    rewards ``[B, K]``; ranks ``[B, K]`` int, 1 = best, equal = tie; mask ``[B, K]`` bool, True
    on real candidates (rankings of different sizes are padded). Returns ``[B]``.
    """
    from training.listwise import plackett_luce_nll

    return plackett_luce_nll(rewards, ranks, mask)
