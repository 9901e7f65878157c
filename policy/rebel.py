"""REBEL (REgression to RElative REward Based RL, Gao et al. 2024): the recipe.

    rankloop train rebel --data pairs.jsonl --model M --output runs/rebel
    accelerate launch --config_file launch/configs/zero3-cpu2.yaml -m launch.cli \\
        train rebel --db rankloop.db --scorer bt:runs/rm --output runs/rebel

Each pair is a prompt x, a chosen and a rejected response y, y' sampled from the policy π_t,
and their rewards. The policy π_θ starts as a copy of π_t and regresses its log-ratio gap onto
the reward gap (``policy.losses.rebel_loss``, η documented there):

    ((log π_θ(y|x) − log π_t(y|x)) − (log π_θ(y'|x) − log π_t(y'|x)) − η·(r(x,y) − r(x,y')))²

Log-probs sum over response tokens only, with logits divided by the sampling temperature.
π_t's log-probs are computed once before training (batches spread over the ranks, summed
back) and kept with the pairs; dropout is off, since π_θ and π_t must be the same function
at step 0. Chosen and rejected run in one forward pass, padded to the longest sequence of the
micro-batch (no fixed-width padding).

Pairs are read and tokenized by ``policy.pair_batches``, and the loop (batching, checkpoints, resume,
saving) is ``policy.pair_training``'s, both shared with DPO: this module is REBEL's loss and
what it reports.

``objective="listwise"`` regresses every pair of each vote's ranking at once, with the vote's
own rank-derived rewards (``policy.losses.rebel_listwise_loss``: tied responses are a pair
with reward gap 0), one example per ranking.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from data.errors import ConfigError
from data.scored_pairs import PairSet
from policy.logprobs import sequence_logprobs
from policy.pair_training import PairObjective, PairSummary, PairTrainingConfig, train_on_pairs
from policy.pair_batches import PairBatch


# Default learning rate by model size (weights, rate): the REBEL reference's 3e-7 for
# Llama-3-8B, and 2e-5 for SmolLM2-135M, where 3e-7 moves the policy by a KL of about 0.01 in an
# iteration and 2e-5 reaches the loop's KL budget within its steps.
LEARNING_RATES = ((134.5e6, 2e-5), (8.03e9, 3e-7))


@dataclass
class RebelConfig(PairTrainingConfig):
    """REBEL's settings; the REBEL reference code uses AdamW weight decay 1e-6, betas
    (0.9, 0.95), ε 1e-8 and no gradient clipping."""

    eta: float = 1.0
    """Target log-ratio gap per unit of reward gap (see ``policy.losses.rebel_loss``)."""
    temperature: float = 1.0
    """The temperature the responses were sampled at; logits are divided by it."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.temperature <= 0:
            raise ConfigError("temperature must be above 0 (log-probs of greedy samples are 0)")


# ---------------------------------------------------------------------------------------------
# The loss on a batch, statistics
# ---------------------------------------------------------------------------------------------

def batch_loss(model, batch: PairBatch, config: RebelConfig):
    """(per-pair loss ``[B]``, policy log-probs of chosen and rejected ``[B]`` each): one
    forward for chosen and rejected together. Rankings: (per-ranking loss ``[B]``, log-probs
    ``[B, K]``, None)."""
    from policy.losses import rebel_listwise_loss, rebel_loss
    from policy.pair_batches import RankingPairBatch

    if isinstance(batch, RankingPairBatch):
        logp = batch.gather(sequence_logprobs(model, batch.tokens, config.temperature))
        loss = rebel_listwise_loss(logp, batch.ref_logp, batch.rewards, batch.ranks,
                                   batch.candidate_mask, eta=config.eta)
        return loss, logp, None

    logp_chosen, logp_rejected = batch.split(
        sequence_logprobs(model, batch.tokens, config.temperature))
    loss = rebel_loss(logp_chosen, logp_rejected, batch.ref_logp_chosen, batch.ref_logp_rejected,
                      batch.reward_chosen, batch.reward_rejected, config.eta)
    return loss, logp_chosen, logp_rejected


# Sums reduced across processes: loss, pairs, sign agreements, KL, chosen and rejected
# log-ratios, tokens.
_STATS = 7


def batch_stats(per_pair_loss, logp_chosen, logp_rejected, batch: PairBatch) -> torch.Tensor:
    from policy.losses import move_kl
    from policy.pair_batches import RankingPairBatch

    if isinstance(batch, RankingPairBatch):
        return ranking_stats(per_pair_loss, logp_chosen, batch)
    ratio_chosen = (logp_chosen - batch.ref_logp_chosen).detach().float()
    ratio_rejected = (logp_rejected - batch.ref_logp_rejected).detach().float()
    gap = ratio_chosen - ratio_rejected
    reward_gap = batch.reward_chosen - batch.reward_rejected
    return torch.stack([
        per_pair_loss.detach().float().sum(),
        torch.tensor(float(batch.num_pairs), device=gap.device),
        (torch.sign(gap) == torch.sign(reward_gap)).float().sum(),
        # KL(π_t ‖ π_θ) per response, averaged over the pair's two responses (``move_kl``).
        ((move_kl(ratio_chosen) + move_kl(ratio_rejected)) / 2).sum(),
        ratio_chosen.sum(),
        ratio_rejected.sum(),
        batch.tokens.attention_mask.sum().float(),
    ]).cpu()


def ranking_stats(per_ranking_loss, logp, batch) -> torch.Tensor:
    """The same sums per ranking: sign agreement over its strictly ordered pairs, KL over its
    responses, "chosen"/"rejected" the mean log-ratio of its best and worst group."""
    from policy.losses import move_kl
    from training.listwise import ranking_summary

    mask = batch.candidate_mask
    ratio = (logp.detach().float() - batch.ref_logp) * mask
    agree, best, worst = ranking_summary(ratio, batch.ranks, mask)
    n = mask.sum(-1).float()
    return torch.stack([
        per_ranking_loss.detach().float().sum(),
        torch.tensor(float(batch.num_pairs), device=ratio.device),
        agree.sum(),
        ((move_kl(ratio) * mask).sum(-1) / n).sum(),
        best.sum(),
        worst.sum(),
        batch.tokens.attention_mask.sum().float(),
    ]).cpu()


def stats_to_metrics(stats, prefix: str) -> dict[str, float]:
    loss, pairs, agree, kl, chosen, rejected, tokens = (float(x) for x in stats)
    n = max(pairs, 1.0)
    return {f"{prefix}/loss": loss / n, f"{prefix}/sign_agreement": agree / n,
            f"{prefix}/kl": kl / n, f"{prefix}/logratio_chosen": chosen / n,
            f"{prefix}/logratio_rejected": rejected / n, f"{prefix}/pairs": pairs,
            f"{prefix}/tokens": tokens}


def _describe_eval(metrics: dict[str, float]) -> str:
    return (f"held-out loss {metrics['eval/loss']:.4f}, sign agreement "
            f"{metrics['eval/sign_agreement']:.3f}, KL {metrics['eval/kl']:.4f}")


def rebel_objective(config: RebelConfig) -> PairObjective:
    return PairObjective(
        name="rebel", loss=lambda model, batch: batch_loss(model, batch, config),
        stats=batch_stats, num_stats=_STATS, metrics=stats_to_metrics,
        describe_eval=_describe_eval, reference_temperature=config.temperature,
        fingerprint={"eta": config.eta}, kl_stat=3, learning_rates=LEARNING_RATES)


def train_rebel(config: RebelConfig, *, pairs: PairSet | None = None,
                eval_pairs: PairSet | None = None, progress: bool = True) -> PairSummary:
    """Runs the recipe; ``pairs`` (and held-out ``eval_pairs``) let a caller such as the loop
    pass pairs directly instead of reading ``config.data``/``config.db``."""
    return train_on_pairs(config, rebel_objective(config), pairs=pairs, eval_pairs=eval_pairs,
                          progress=progress)
