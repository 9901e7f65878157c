"""Bradley-Terry reward model training: the recipe.

    rankloop train reward --data prefs.jsonl --output runs/rm
    accelerate launch --config_file launch/configs/zero3-cpu2.yaml -m launch.cli \\
        train reward --data prefs.jsonl --output runs/rm

Loss: −log σ(r_chosen − r_rejected − margin) per pair, plus an optional reward-centering term.
Ties are left out by default (``ties="exclude"``); ``ties="include"`` trains them with the 50/50
Bradley-Terry cross-entropy (``reward.losses.tie_loss``), which pulls the two rewards together.
Pairs longer than ``max_length`` are dropped and counted, never truncated.

``objective="listwise"`` trains instead on each vote's whole ranking (the database's): the
Plackett-Luce likelihood of its order, ties as grouped stages (``reward.losses.
plackett_luce_loss``), one example per ranking. ``annotator_weights="reliability"`` multiplies
each pair's or ranking's loss by its annotator's reliability weight (``data.reliability``),
rescaled to mean 1 over the training set; held-out metrics stay unweighted.

Every optimizer step sums the per-pair loss over its micro-batches and divides by the pairs in
the whole step (all ranks, all accumulation steps), so the update does not depend on how the
step is split. Checkpoints hold model, optimizer, scheduler and RNG state; the data position
follows from the step number, because each epoch's batches are a function of (seed, epoch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from data.errors import ConfigError
from data.preferences import PreferenceLoad, PreferenceSourceError
from reward.batches import EncodedPair, PreferenceBatch, collate, encode_pairs, sequence_rewards
from training.metrics import saved_line
from training.plan import StepPlan, split_held_out
from training.settings import ResumableTrainingSettings, require_at_least_one

TIES = ("exclude", "include")


@dataclass
class RewardTrainConfig(ResumableTrainingSettings):
    """Settings of the reward-model recipe (``training.settings`` has the shared ones)."""

    output: str
    """Folder for the trained model (a Hugging Face folder), its card, ``metrics.jsonl`` and
    ``checkpoints/``."""
    model: str = "default"
    """Starting weights: ``default`` (SmolLM2-135M-Instruct), a folder or a Hub id. A causal LM
    gets a new score head; a sequence classifier with one label keeps its own."""
    data: str | None = None
    """TRL-format preference file, ``save_to_disk`` folder or Hub id; None reads the app's
    ranked pairs from ``db``."""
    eval_data: str | None = None
    """Separate held-out pairs (same split as ``data``); None holds out ``eval_fraction`` of
    the prompts instead."""
    agreed_only: bool = False
    """Database pairs only: keep only pairs that ≥ 2 annotators judged, all the same way."""
    limit: int | None = None
    """Read at most this many pairs (files only)."""
    ties: str = "exclude"
    """``exclude`` drops tied pairs; ``include`` trains them with the 50/50 tie loss."""
    max_length: int = 1024
    """Pairs with a side longer than this many tokens are dropped (and counted)."""
    per_device_batch_size: int = 8
    eval_batch_size: int | None = None
    """Pairs per evaluation forward pass; None uses ``per_device_batch_size``."""
    learning_rate: float = 1e-5
    warmup_ratio: float = 0.03
    center_rewards_coefficient: float = 0.0
    """Weight of mean((r_chosen + r_rejected)²), which keeps rewards centred on 0 (0 = off;
    0.01 is the usual value)."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA adapters' input."""
    objective: str = "pairwise"
    """``pairwise``: Bradley-Terry on each vote's pairs; ``listwise``: Plackett-Luce on each
    vote's whole ranking, ties as grouped stages (database only; ``ties`` does not apply)."""
    annotator_weights: str = "none"
    """``none``: every vote counts the same; ``reliability``: each vote's loss is weighted by
    its annotator's estimated reliability (``data.reliability``; database only)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ties not in TIES:
            raise ConfigError(f"ties must be one of {', '.join(TIES)}, not {self.ties!r}")
        from data.scored_pairs import ANNOTATOR_WEIGHTS, OBJECTIVES

        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, "
                              f"not {self.objective!r}")
        if self.annotator_weights not in ANNOTATOR_WEIGHTS:
            raise ConfigError(f"annotator weights must be one of {', '.join(ANNOTATOR_WEIGHTS)}"
                              f", not {self.annotator_weights!r}")
        if self.objective == "listwise" and self.agreed_only:
            raise ConfigError("--agreed-only keeps pairs; the listwise objective trains on "
                              "each vote's whole ranking: drop one of them")
        if self.data and (self.objective != "pairwise" or self.annotator_weights != "none"):
            raise ConfigError("the listwise objective and annotator weights read the app's "
                              "database: use --db instead of --data")
        require_at_least_one(self, "max_length")


@dataclass
class TrainSummary:
    output: str
    steps: int
    train_pairs: int
    eval_pairs: int
    dropped: dict[str, int]
    eval_metrics: dict[str, float]
    train_seconds: float
    pairs_per_second: float
    resumed_from_step: int | None = None
    main_process: bool = True
    """False on the other ranks of a distributed run, which should stay quiet."""
    peak_memory: int | None = None
    """This process's peak memory in bytes (the GPU allocator's on a GPU, else resident)."""
    examples: str = "pairs"
    """What one training example is: ``pairs``, or ``rankings`` (the listwise objective)."""

    def line(self) -> str:
        from training.memory import peak_text

        parts = [f"{self.train_pairs} training {self.examples}, {self.eval_pairs} held out",
                 f"{self.steps} steps"]
        if "eval/accuracy" in self.eval_metrics:
            parts.append(f"eval accuracy {self.eval_metrics['eval/accuracy']:.3f}, "
                         f"loss {self.eval_metrics['eval/loss']:.4f}, "
                         f"margin {self.eval_metrics['eval/margin']:.3f}")
        parts.append(f"{self.pairs_per_second:.1f} pairs/s")
        if self.peak_memory is not None:
            parts.append(peak_text(self.peak_memory))
        return saved_line("reward model", self.output, parts, dropped=self.dropped,
                          resumed_from_step=self.resumed_from_step)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def read_pairs(config: RewardTrainConfig):
    """A ``PreferenceLoad`` (pairwise), or a ``data.scored_pairs.RankingSet`` (listwise), with
    the annotators' weights when asked for."""
    from data.preferences import load_db_pairs, load_preference_file

    if config.data:
        return load_preference_file(config.data, split=config.split, limit=config.limit)
    from data import store
    from data.scored_pairs import read_annotator_weights, rankings_from_db, with_weights

    db = store.open_store(config.db)
    weights = read_annotator_weights(db, config.annotator_weights)
    if config.objective == "listwise":
        rankings = rankings_from_db(db, demonstrations=True)
        return rankings if weights is None else with_weights(rankings, weights)
    load = load_db_pairs(db, agreed_only=config.agreed_only)
    if weights is not None:
        from data.scored_pairs import comparison_weights

        load.weights = comparison_weights(db, [p.source_id for p in load.pairs], weights)
    return load


def prepare_rankings(config: RewardTrainConfig, tokenizer, rankings
                     ) -> tuple[list, list, dict[str, int]]:
    """(train, held-out, dropped counts) for the listwise objective: ``EncodedRanking``s."""
    from reward.batches import encode_rankings
    from training.listwise import with_normalised_weights

    dropped = dict(rankings.dropped)
    encoded, too_long = encode_rankings(tokenizer, rankings.groups, config.max_length)
    dropped[f"rankings longer than {config.max_length} tokens"] = too_long
    train, held_out = split_held_out(encoded, config.eval_fraction, config.seed)
    if not train:
        raise PreferenceSourceError(
            f"no training rankings left from {rankings.source} "
            f"(dropped: {', '.join(f'{n} {k}' for k, n in dropped.items() if n) or 'none'})")
    return with_normalised_weights(train), held_out, {k: v for k, v in dropped.items() if v}


def prepare_pairs(
    config: RewardTrainConfig, tokenizer, load: PreferenceLoad, eval_load: PreferenceLoad | None
) -> tuple[list[EncodedPair], list[EncodedPair], dict[str, int]]:
    """(train, held-out, dropped counts by reason)."""
    from training.listwise import with_normalised_weights

    dropped = dict(load.dropped)
    pairs = load.pairs
    weights = load.weights
    if config.ties == "exclude":
        dropped["ties (--ties exclude)"] = sum(p.tie for p in pairs)
        if weights is not None:
            weights = [w for p, w in zip(pairs, weights) if not p.tie]
        pairs = [p for p in pairs if not p.tie]
    encoded, too_long = encode_pairs(tokenizer, pairs, config.max_length, weights)
    dropped[f"longer than {config.max_length} tokens"] = too_long
    if eval_load is not None:
        eval_pairs = [p for p in eval_load.pairs if config.ties == "include" or not p.tie]
        held_out, eval_too_long = encode_pairs(tokenizer, eval_pairs, config.max_length)
        dropped[f"held-out longer than {config.max_length} tokens"] = eval_too_long
        train = encoded
    else:
        train, held_out = split_held_out(encoded, config.eval_fraction, config.seed)
    if not train:
        raise PreferenceSourceError(
            f"no training pairs left from {load.source} "
            f"(dropped: {', '.join(f'{n} {k}' for k, n in dropped.items() if n) or 'none'})"
        )
    return with_normalised_weights(train), held_out, {k: v for k, v in dropped.items() if v}


def _collate(examples: list, pad_token_id: int):
    """A ``PreferenceBatch`` of pairs or a ``RankingBatch`` of rankings."""
    from reward.batches import EncodedRanking, collate_rankings

    if isinstance(examples[0], EncodedRanking):
        return collate_rankings(examples, pad_token_id)
    return collate(examples, pad_token_id)


# ---------------------------------------------------------------------------------------------
# Statistics shared by training and evaluation
# ---------------------------------------------------------------------------------------------

# Sums reduced across processes: loss, pairs, correct, non-tie pairs, margin, mean reward.
_STATS = 6


def batch_stats(per_pair_loss, r_chosen, r_rejected, batch: PreferenceBatch):
    import torch

    from reward.batches import RankingBatch

    if isinstance(batch, RankingBatch):
        return ranking_stats(per_pair_loss, r_chosen, batch)
    preference = ~batch.is_tie
    margin = (r_chosen - r_rejected).detach().float()
    return torch.stack([
        per_pair_loss.detach().float().sum(),
        torch.tensor(float(batch.num_pairs), device=margin.device),
        ((margin > 0) & preference).sum().float(),
        preference.sum().float(),
        margin[preference].sum(),
        ((r_chosen + r_rejected).detach().float() / 2).sum(),
    ]).cpu()


def ranking_stats(per_ranking_loss, rewards, batch):
    """The same sums for rankings (``rewards`` ``[B, K]``): rankings count as the examples;
    accuracy and margin are over every strictly ordered pair of each ranking."""
    import torch

    from training.listwise import ranked_pairs

    rewards = rewards.detach().float()
    strict = ranked_pairs(batch.ranks, batch.candidate_mask, include_ties=False)
    margin = rewards[:, :, None] - rewards[:, None, :]
    mask = batch.candidate_mask
    return torch.stack([
        per_ranking_loss.detach().float().sum(),
        torch.tensor(float(batch.num_rankings), device=rewards.device),
        ((margin > 0) & strict).sum().float(),
        strict.sum().float(),
        margin[strict].sum(),
        ((rewards * mask).sum(-1) / mask.sum(-1)).sum(),
    ]).cpu()


def stats_to_metrics(stats, prefix: str) -> dict[str, float]:
    loss, pairs, correct, preferences, margin, reward = (float(x) for x in stats)
    metrics = {f"{prefix}/loss": loss / max(pairs, 1),
               f"{prefix}/reward_mean": reward / max(pairs, 1), f"{prefix}/pairs": pairs}
    if preferences:
        metrics[f"{prefix}/accuracy"] = correct / preferences
        metrics[f"{prefix}/margin"] = margin / preferences
    return metrics


def batch_loss(model, batch: PreferenceBatch, config: RewardTrainConfig):
    """(per-pair loss ``[B]``, rewards of chosen and rejected ``[B]`` each): one forward for
    chosen and rejected together."""
    from reward.batches import RankingBatch
    from reward.losses import plackett_luce_loss, preference_loss

    if isinstance(batch, RankingBatch):  # (per-ranking loss [B], rewards [B, K], None)
        rewards = batch.gather(sequence_rewards(model, batch.input_ids, batch.attention_mask))
        return plackett_luce_loss(rewards, batch.ranks, batch.candidate_mask), rewards, None
    r_chosen, r_rejected = batch.split(
        sequence_rewards(model, batch.input_ids, batch.attention_mask))
    loss = preference_loss(r_chosen, r_rejected, is_tie=batch.is_tie, margin=batch.margin,
                           centering_coefficient=config.center_rewards_coefficient)
    return loss, r_chosen, r_rejected


def evaluate(model, accelerator, pairs: list[EncodedPair], *, batch_size: int, pad_token_id: int,
             config: RewardTrainConfig) -> dict[str, float]:
    """Held-out loss, accuracy (chosen scored higher, ties left out) and mean margin."""
    from training.steps import held_out_stats

    if not pairs:
        return {}

    def stats_of(indices: list[int]):
        batch = _collate([pairs[i] for i in indices], pad_token_id).to(accelerator.device)
        return batch_stats(*batch_loss(model, batch, config), batch)

    stats = held_out_stats(model, accelerator, [p.length for p in pairs], batch_size=batch_size,
                           num_stats=_STATS, stats_of=stats_of)
    return stats_to_metrics(stats, "eval")


# ---------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------

def plan_fingerprint(config: RewardTrainConfig, plan: StepPlan) -> dict:
    """What must match for a checkpoint to be resumed."""
    return {"model": config.model, "train_pairs": plan.train_pairs,
            "global_batch_size": plan.global_batch_size, "total_steps": plan.total_steps,
            "seed": config.seed, "lora_r": config.lora_r}


def train_reward_model(
    config: RewardTrainConfig,
    *,
    pairs: PreferenceLoad | None = None,
    eval_pairs: PreferenceLoad | None = None,
    progress: bool = True,
) -> TrainSummary:
    """Trains, evaluates and saves a Bradley-Terry reward model; see the module docstring.

    ``pairs``/``eval_pairs`` replace reading ``config.data``/``config.db``/``config.eval_data``.
    """
    from reward.modeling import load_reward_model, load_reward_tokenizer, write_model_card
    from training.checkpoints import resume_checkpoint
    from training.memory import check_training_memory, efficient_defaults, peak_bytes
    from training.metrics import MetricsLog
    from training.models import LoraSettings, resolve_model, save_trained_model
    from training.steps import plan_run, prepare_optimization, run_steps

    output = Path(config.output)
    # 1. Data: read (bad input fails here, before anything heavy starts), drop ties and
    #    over-long pairs, hold out prompts, plan the steps.
    load = pairs or read_pairs(config)
    if eval_pairs is None and config.eval_data:
        from data.preferences import load_preference_file

        eval_pairs = load_preference_file(config.eval_data, split=config.split)
    model_path = resolve_model(config.model)
    tokenizer = load_reward_tokenizer(model_path)
    if config.objective == "listwise":
        if eval_pairs is not None:
            raise ConfigError("the listwise objective holds out prompts of the database; "
                              "unset --eval-data")
        train, held_out, dropped = prepare_rankings(config, tokenizer, load)
    else:
        train, held_out, dropped = prepare_pairs(config, tokenizer, load, eval_pairs)
    config = efficient_defaults(config, model_path)
    accelerator, plan = plan_run(config, len(train), output)
    world = accelerator.num_processes
    say = accelerator.print
    eval_batch_size = config.eval_batch_size or config.per_device_batch_size
    longest = max(p.length for p in train + held_out)
    # Sequences per example: a pair's two, a ranking's k (the largest).
    sequences = max(getattr(p, "size", 2) for p in train + held_out)
    memory = check_training_memory(
        accelerator, model_path,
        micro_batch_tokens=sequences * config.per_device_batch_size * longest,
        gradient_checkpointing=config.gradient_checkpointing, lora=config.lora_r > 0,
        what="this reward model training")
    examples = "rankings" if config.objective == "listwise" else "pairs"
    say(f"rankloop: {len(train)} training {examples}, {len(held_out)} held out; "
        f"{plan.describe()}; {memory}")

    # 2. Model, optimizer, schedule.
    lora = LoraSettings.from_rank(config.lora_r, config.lora_alpha, config.lora_dropout)
    model = load_reward_model(model_path, tokenizer, lora=lora,
                              gradient_checkpointing=config.gradient_checkpointing)
    model, optimizer, scheduler = prepare_optimization(accelerator, model, config,
                                                       plan.total_steps)

    # 3. Resume from the newest checkpoint when its plan matches this one.
    fingerprint = plan_fingerprint(config, plan)
    state = resume_checkpoint(accelerator, output, fingerprint, resume=config.resume, say=say)
    start_step = state["step"] if state else 0
    resumed_from = state["step"] if state else None
    log = MetricsLog(output / "metrics.jsonl", enabled=accelerator.is_main_process,
                     keep_up_to_step=resumed_from, accelerator=accelerator,
                     settings=asdict(config))

    # 4. Train (training.steps: one global batch a step; log, evaluate, checkpoint).
    pad_id = tokenizer.pad_token_id

    def forward(indices: list[int]):
        batch = _collate([train[i] for i in indices], pad_id).to(accelerator.device)
        per_pair, r_chosen, r_rejected = batch_loss(model, batch, config)
        # Weights have mean 1 over the training set, so all-1 weights leave the loss as it was.
        return per_pair * batch.weight, batch_stats(per_pair, r_chosen, r_rejected, batch)

    def held_out_metrics() -> dict[str, float]:
        return evaluate(model, accelerator, held_out, batch_size=eval_batch_size,
                        pad_token_id=pad_id, config=config)

    done = run_steps(
        accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler,
        plan=plan, config=config, lengths=[p.length for p in train], start_step=start_step,
        forward=forward, num_stats=_STATS, metrics=stats_to_metrics,
        evaluate=held_out_metrics if held_out else None, log=log, output=output,
        fingerprint=fingerprint, desc="reward model", progress=progress)
    eval_metrics = done.eval_metrics

    # 5. Save a plain Hugging Face folder (LoRA merged in), the tokenizer and a card.
    if save_trained_model(accelerator, model, tokenizer, output, lora=lora):
        settings = {k: v for k, v in asdict(config).items() if k not in ("output",)}
        settings.update(train_pairs=len(train), eval_pairs=len(held_out), steps=plan.total_steps,
                        world_size=world, dropped=dropped)
        write_model_card(output, base_model=config.model if config.model != "default"
                         else "HuggingFaceTB/SmolLM2-135M-Instruct",
                         metrics=eval_metrics, settings=settings)
    accelerator.wait_for_everyone()
    log.close()
    return TrainSummary(
        output=str(output), steps=plan.total_steps, train_pairs=len(train),
        eval_pairs=len(held_out), dropped=dropped, eval_metrics=eval_metrics,
        train_seconds=done.train_seconds, pairs_per_second=done.examples_per_second,
        resumed_from_step=resumed_from, main_process=accelerator.is_main_process,
        examples=examples,
        peak_memory=peak_bytes(accelerator.device),
    )
