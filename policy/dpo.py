"""DPO (Rafailov et al. 2023) and IPO (Azar et al. 2023) on preference pairs: the recipe.

    rankloop train dpo --data pairs.jsonl --model M --output runs/dpo
    rankloop train dpo --db rankloop.db [--scorer bt:runs/rm] --loss ipo --beta 0.1 ...
    accelerate launch --config_file launch/configs/zero3-cpu2.yaml -m launch.cli \\
        train dpo --db rankloop.db --output runs/dpo

Each pair is a prompt x with a chosen and a rejected response y, y'. The policy π_θ starts as
the reference π_ref (``--model``) and lowers ``policy.losses.dpo_loss``: −log σ(β·h) for
``sigmoid`` or (h̄ − 1/(2β))² for ``ipo``, with h the gap between the chosen and rejected
log-ratios log π_θ/π_ref (h̄: each log-ratio per response token). Pairs are built exactly as
for REBEL (``policy.pair_batches``: files or the app's database, human ranks or a reward model's
scores; their rewards only pick which response is chosen). π_ref's log-probs are computed
once before training and kept with the pairs, so no second model stays in memory; dropout is
off, so π_θ equals π_ref at step 0 (loss log 2 for sigmoid).

The loop (batching, checkpoints, resume, saving) is ``policy.pair_training``'s, shared with
REBEL: this module is DPO's loss and what it reports.

``objective="listwise"`` is Plackett-Luce DPO (the DPO paper's appendix A.3): each vote's whole
ranking is one example, its loss the Plackett-Luce likelihood of the order over the implicit
rewards β·log π_θ/π_ref, ties as grouped stages (``policy.losses.plackett_luce_dpo_loss``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from data.errors import ConfigError
from data.scored_pairs import PairSet
from policy.logprobs import sequence_logprobs
from policy.losses import DPO_LOSSES
from policy.pair_training import PairObjective, PairSummary, PairTrainingConfig, train_on_pairs
from policy.pair_batches import PairBatch


# Default learning rate by model size (weights, rate): the recipe's 8B value 1e-6 (the DPO
# stages of Zephyr-7B and Tülu 3 8B use 5e-7 to 1e-6), and 1e-5 for SmolLM2-135M, which reaches
# the loop's KL budget within its steps.
LEARNING_RATES = ((134.5e6, 1e-5), (8.03e9, 1e-6))


@dataclass
class DPOConfig(PairTrainingConfig):
    loss_type: str = "sigmoid"
    """``sigmoid`` (DPO) or ``ipo``."""
    beta: float = 0.1
    """β: the strength of the pull toward π_ref (DPO's temperature; IPO's τ)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss_type not in DPO_LOSSES:
            raise ConfigError(f"loss type must be one of {', '.join(DPO_LOSSES)}")
        if self.beta <= 0:
            raise ConfigError("beta must be above 0")
        if self.objective == "listwise" and self.loss_type != "sigmoid":
            raise ConfigError("the listwise objective is Plackett-Luce DPO: use --loss sigmoid")


# ---------------------------------------------------------------------------------------------
# The loss on a batch, statistics, evaluation
# ---------------------------------------------------------------------------------------------

def batch_loss(model, batch: PairBatch, config: DPOConfig):
    """(per-pair loss ``[B]``, policy log-probs of chosen and rejected ``[B]`` each): one
    forward for chosen and rejected together. Rankings: (per-ranking loss ``[B]``, log-probs
    ``[B, K]``, None)."""
    from policy.losses import dpo_loss, plackett_luce_dpo_loss
    from policy.pair_batches import RankingPairBatch

    if isinstance(batch, RankingPairBatch):
        logp = batch.gather(sequence_logprobs(model, batch.tokens))
        loss = plackett_luce_dpo_loss(logp, batch.ref_logp, batch.ranks, batch.candidate_mask,
                                      beta=config.beta)
        return loss, logp, None

    logp_chosen, logp_rejected = batch.split(sequence_logprobs(model, batch.tokens))
    lengths_chosen, lengths_rejected = batch.split(batch.tokens.response_mask.sum(-1).float())
    loss = dpo_loss(logp_chosen, logp_rejected, batch.ref_logp_chosen, batch.ref_logp_rejected,
                    beta=config.beta, loss_type=config.loss_type,
                    chosen_lengths=lengths_chosen, rejected_lengths=lengths_rejected)
    return loss, logp_chosen, logp_rejected


# Sums reduced across processes: loss, pairs, reward accuracy, reward margin, chosen and
# rejected implicit rewards, KL, tokens.
_STATS = 8


def batch_stats(per_pair_loss, logp_chosen, logp_rejected, batch: PairBatch,
                beta: float) -> torch.Tensor:
    from policy.losses import dpo_implicit_rewards, move_kl
    from policy.pair_batches import RankingPairBatch

    if isinstance(batch, RankingPairBatch):
        return ranking_stats(per_pair_loss, logp_chosen, batch, beta)

    reward_chosen = dpo_implicit_rewards(logp_chosen.detach().float(), batch.ref_logp_chosen, beta)
    reward_rejected = dpo_implicit_rewards(logp_rejected.detach().float(),
                                           batch.ref_logp_rejected, beta)
    return torch.stack([
        per_pair_loss.detach().float().sum(),
        torch.tensor(float(batch.num_pairs), device=reward_chosen.device),
        (reward_chosen > reward_rejected).float().sum(),
        (reward_chosen - reward_rejected).sum(),
        reward_chosen.sum(),
        reward_rejected.sum(),
        # KL(π_ref ‖ π_θ) per response, averaged over the pair's two responses (``move_kl``).
        ((move_kl(reward_chosen / beta) + move_kl(reward_rejected / beta)) / 2).sum(),
        batch.tokens.attention_mask.sum().float(),
    ]).cpu()


def ranking_stats(per_ranking_loss, logp, batch, beta: float) -> torch.Tensor:
    """The same sums per ranking: accuracy over its strictly ordered pairs, the margin and
    "chosen"/"rejected" rewards of its best and worst group, KL over its responses."""
    from policy.losses import move_kl
    from training.listwise import ranking_summary

    mask = batch.candidate_mask
    reward = beta * (logp.detach().float() - batch.ref_logp) * mask
    correct, chosen, rejected = ranking_summary(reward, batch.ranks, mask)
    return torch.stack([
        per_ranking_loss.detach().float().sum(),
        torch.tensor(float(batch.num_pairs), device=reward.device),
        correct.sum(),
        (chosen - rejected).sum(),
        chosen.sum(),
        rejected.sum(),
        ((move_kl(reward / beta) * mask).sum(-1) / mask.sum(-1)).sum(),
        batch.tokens.attention_mask.sum().float(),
    ]).cpu()


def stats_to_metrics(stats, prefix: str) -> dict[str, float]:
    loss, pairs, correct, margin, chosen, rejected, kl, tokens = (float(x) for x in stats)
    n = max(pairs, 1.0)
    return {f"{prefix}/loss": loss / n, f"{prefix}/reward_accuracy": correct / n,
            f"{prefix}/reward_margin": margin / n, f"{prefix}/reward_chosen": chosen / n,
            f"{prefix}/reward_rejected": rejected / n, f"{prefix}/kl": kl / n,
            f"{prefix}/pairs": pairs, f"{prefix}/tokens": tokens}


def _describe_eval(metrics: dict[str, float]) -> str:
    return (f"held-out loss {metrics['eval/loss']:.4f}, reward accuracy "
            f"{metrics['eval/reward_accuracy']:.3f}, margin {metrics['eval/reward_margin']:.4f}, "
            f"KL {metrics['eval/kl']:.4f}")


def dpo_objective(config: DPOConfig) -> PairObjective:
    return PairObjective(
        name="dpo", loss=lambda model, batch: batch_loss(model, batch, config),
        stats=lambda loss, chosen, rejected, batch: batch_stats(loss, chosen, rejected, batch,
                                                                config.beta),
        num_stats=_STATS, metrics=stats_to_metrics, describe_eval=_describe_eval,
        fingerprint={"loss_type": config.loss_type, "beta": config.beta}, kl_stat=6,
        learning_rates=LEARNING_RATES)


def train_dpo(config: DPOConfig, *, pairs: PairSet | None = None,
              eval_pairs: PairSet | None = None, progress: bool = True) -> PairSummary:
    """Runs the recipe; ``pairs`` (and held-out ``eval_pairs``) let a caller such as the loop
    pass pairs directly instead of reading ``config.data``/``config.db``."""
    return train_on_pairs(config, dpo_objective(config), pairs=pairs, eval_pairs=eval_pairs,
                          progress=progress)
