"""Listwise (whole-ranking) likelihoods shared by the reward model and the policy recipes, as
pure functions over padded tensors.

Shapes: B = rankings, K = the most candidates in one ranking of the batch. ``scores``
``[B, K]`` float (a reward, or DPO's β·log-ratio), ``ranks`` ``[B, K]`` int (1 = best, equal
ranks tie; any coding where a better candidate has a smaller number), ``mask`` ``[B, K]`` bool
(True on real candidates, False on padding). Padding's scores and ranks are ignored.

**Plackett-Luce with grouped ties.** Without ties, the Plackett-Luce likelihood of an order
y₁ ≻ y₂ ≻ … ≻ y_k is ∏ᵢ exp(sᵢ) / Σ_{j ≥ i} exp(s_j): the best is chosen from all, the next
from the rest, and so on. A ranking with ties is a sequence of tied groups G₁ ≻ G₂ ≻ … ≻ G_q;
each group is one stage, chosen from the candidates not yet placed (Rᵍ = G_g ∪ G_{g+1} ∪ …),
and its loss is the cross-entropy between a uniform distribution over the group's members and
the stage's choice distribution softmax(s over Rᵍ):

    NLL = Σ_g [ log Σ_{j ∈ Rᵍ} exp(s_j) − (1/|G_g|) Σ_{i ∈ G_g} s_i ]

This is Breslow's grouped-ties likelihood with each group's term divided by its size. Chosen
over Davidson's tie-aware Bradley-Terry because:

- for k = 2 it *is* the project's pairwise losses: a strict pair gives −log σ(s_a − s_b)
  (Bradley-Terry; DPO's sigmoid loss when s = β·log-ratio), a tie gives
  −½ log σ(s_a − s_b) − ½ log σ(s_b − s_a) (``reward.losses.tie_loss``, the 50/50 label), so
  switching to the listwise objective changes what is learnt from *more* candidates and not
  what a pair means;
- Davidson's model adds a tie parameter ν that enters every strict comparison too
  (P(a ≻ b) = e^{s_a} / (e^{s_a} + e^{s_b} + ν e^{(s_a+s_b)/2})), so a strict pair would no
  longer be Bradley-Terry, and ν must be fitted from how often people tie;
- it costs O(k²) per ranking, with no enumeration of the orders inside a tie.

A singleton last group costs nothing (log-sum-exp of one score minus itself); a tied last
group still asks its members to be equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from data.errors import ConfigError


def plackett_luce_nll(scores: torch.Tensor, ranks: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood ``[B]`` of each ranking under Plackett-Luce with grouped ties
    (module docstring). scores ``[B, K]``, ranks ``[B, K]``, mask ``[B, K]`` bool."""
    mask = mask.bool()
    # at_or_below[b, i, j]: candidate j is still unplaced when i's group is chosen.
    # Each candidate is in its own risk set, so padding's rows stay finite (no NaN gradient).
    eye = torch.eye(scores.shape[1], dtype=torch.bool, device=scores.device)
    at_or_below = (mask[:, None, :] & (ranks[:, None, :] >= ranks[:, :, None])) | eye
    same_group = mask[:, None, :] & (ranks[:, None, :] == ranks[:, :, None])
    expanded = scores[:, None, :].expand(-1, scores.shape[1], -1)
    log_denominator = torch.logsumexp(
        expanded.masked_fill(~at_or_below, float("-inf")), dim=-1)
    group_size = same_group.sum(-1).clamp(min=1).to(scores.dtype)
    per_candidate = (log_denominator - scores) / group_size
    per_candidate = torch.where(mask, per_candidate, torch.zeros_like(per_candidate))
    return per_candidate.sum(-1)


def ranked_pairs(ranks: torch.Tensor, mask: torch.Tensor, *,
                 include_ties: bool) -> torch.Tensor:
    """``[B, K, K]`` bool: True at [b, i, j] when i is ranked strictly above j in ranking b,
    or (``include_ties``) when i and j tie and i comes first, so each unordered pair of a
    ranking counts once."""
    mask = mask.bool()
    both = mask[:, :, None] & mask[:, None, :]
    above = ranks[:, :, None] < ranks[:, None, :]
    if include_ties:
        k = ranks.shape[1]
        first = torch.ones(k, k, dtype=torch.bool, device=ranks.device).triu(1)
        above = above | ((ranks[:, :, None] == ranks[:, None, :]) & first)
    return both & above


def ranking_summary(values: torch.Tensor, ranks: torch.Tensor, mask: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per ranking ``[B]``, for ``values`` ``[B, K]`` that are 0 on padding: the fraction of
    its strictly ordered pairs whose values are ordered the same way (0 without any), and
    the mean value of its best group and of its worst group."""
    strict = ranked_pairs(ranks, mask, include_ties=False)
    gap = values[:, :, None] - values[:, None, :]
    agree = ((gap > 0) & strict).sum((1, 2)).float() / strict.sum((1, 2)).clamp(min=1)
    real_ranks = ranks.masked_fill(~mask, -1)
    best = mask & (ranks == ranks.min(-1, keepdim=True).values)
    worst = mask & (real_ranks == real_ranks.max(-1, keepdim=True).values)
    return agree, (values * best).sum(-1) / best.sum(-1), (values * worst).sum(-1) / worst.sum(-1)


def weighted_mean(per_example: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Σ wᵢ·lossᵢ / Σ wᵢ (scalar); ``weights`` None or all equal gives the plain mean.
    per_example, weights: ``[B]``, weights ≥ 0 with a positive sum."""
    if weights is None:
        return per_example.mean()
    weights = weights.to(per_example.dtype)
    return (per_example * weights).sum() / weights.sum()


def normalise_weights(weights: list[float]) -> list[float]:
    """Per-example weights rescaled to mean 1 over the training set, so the training loop's
    mean over a step (which divides by the number of examples) is a weighted mean whose scale
    does not depend on the weights' unit, and weights all equal give exactly the unweighted
    loss. Raises ValueError for negative weights or a zero total."""
    if any(w < 0 for w in weights):
        raise ValueError("annotator weights must be >= 0")
    total = sum(weights)
    if weights and total <= 0:
        raise ValueError("annotator weights are all zero: nothing would be learnt")
    mean = total / len(weights) if weights else 1.0
    return [w / mean for w in weights]


def with_normalised_weights(examples: list) -> list:
    """Dataclass examples with a ``weight`` field, their weights rescaled by
    ``normalise_weights`` (unchanged when all are 1.0); bad weights raise ConfigError."""
    if all(e.weight == 1.0 for e in examples):
        return examples
    try:
        weights = normalise_weights([e.weight for e in examples])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return [replace(e, weight=w) for e, w in zip(examples, weights)]


# --- layout of a batch of rankings ---------------------------------------------------------

PADDING_RANK = 1_000_000
"""The rank padding candidates hold: below every real one (masked out in any case)."""


def ranking_layout(sizes: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(index ``[B, K]``, mask ``[B, K]``) for rankings of ``sizes`` candidates laid out in
    consecutive rows."""
    width = max(sizes)
    index = torch.zeros(len(sizes), width, dtype=torch.long)
    mask = torch.zeros(len(sizes), width, dtype=torch.bool)
    row = 0
    for b, k in enumerate(sizes):
        index[b, :k] = torch.arange(row, row + k)
        mask[b, :k] = True
        row += k
    return index, mask


def padded_ranks(ranks: Sequence[Sequence[int]], width: int) -> torch.Tensor:
    out = torch.full((len(ranks), width), PADDING_RANK, dtype=torch.long)
    for b, r in enumerate(ranks):
        out[b, :len(r)] = torch.tensor(list(r), dtype=torch.long)
    return out
