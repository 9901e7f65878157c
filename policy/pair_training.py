"""The training loop that REBEL and DPO share: offline preference pairs against a frozen start.

Both recipes take pairs (a prompt, a chosen and a rejected response), compute the starting
policy's log-probs of every response once, then lower a per-pair loss of the policy's
log-ratios. They differ only in that loss and in what they report, which each recipe passes in
as a ``PairObjective`` (``policy/rebel.py``, ``policy/dpo.py``); the settings they share are
``PairTrainingConfig``'s, which each recipe's config extends.

Batching, checkpoints, resume and saving are the training layer's (``training.plan``,
``training.checkpoints``, ``training.models``): every optimizer step takes one global batch of
``world × per_device × accumulation`` pairs, the loss is normalised by the pairs of the whole
step (so the update does not depend on how the step is split over processes and accumulation
steps), and the data position follows from the step number.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from data.errors import ConfigError
from data.scored_pairs import ANNOTATOR_WEIGHTS, MODES, OBJECTIVES, PairSet, require_pairs
from policy.pair_batches import collate, prepare_pairs, read_pairs, reference_logprobs
from training.metrics import saved_line
from training.plan import StepPlan
from training.settings import ResumableTrainingSettings, require_at_least_one


@dataclass
class PairTrainingConfig(ResumableTrainingSettings):
    """Settings of the pair recipes (``training.settings`` has the shared ones)."""

    model: str = "default"
    """The starting weights, and the fixed policy the log-ratios are taken against (REBEL's
    π_t, DPO's π_ref): ``default`` (SmolLM2-135M-Instruct), a folder or a Hub id. With LoRA
    the log-ratios are still taken against the starting model."""
    data: str | None = None
    """TRL-format preference file (optional ``score_chosen``/``score_rejected``) or the app's
    database file; None reads the database ``db``."""
    scorer: str | None = None
    """Database only: use this reward model's stored scores (``bt:DIR``/``armorm:DIR`` as
    written by ``rankloop score``); None uses the human rankings."""
    run_id: int | None = None
    """Database only: only candidates of this generation run."""
    pair_mode: str = "best_worst"
    """``best_worst``: one pair per prompt (highest vs lowest reward); ``all``: every pair."""
    limit: int | None = None
    """Read at most this many pairs (files only)."""
    max_prompt_tokens: int = 1024
    """Pairs whose chat-formatted prompt is longer are dropped (and counted)."""
    max_response_tokens: int = 2048
    """Pairs with a response longer than this (EOS included) are dropped (and counted)."""
    learning_rate: float | None = None
    """None: from the model's size, interpolated between the recipe's anchors
    (``LEARNING_RATES`` in its module: its reference value at 8B, and the value that moves
    SmolLM2-135M within a KL budget of 0.8 nats in the loop's steps)."""
    kl_budget: float | None = None
    """How far training may move the policy, in nats per response: KL(start ‖ policy),
    estimated (``policy.losses.move_kl``) on the held-out prompts' responses, which the
    starting policy sampled and no step trains on, every ``kl_check_every`` steps. Training
    stops at the check that reaches it, and says so. Without held-out pairs, the estimate is
    the mean over the last ``kl_window`` training pairs' responses (log-ratios taken before
    each update), which runs ahead of the held-out one since the steps fit exactly those
    responses. None: no budget, every planned step runs."""
    kl_check_every: int | None = None
    """Steps between held-out KL checks. None: the held-out pairs' count in global batches
    (at least 1), so that a check, a forward pass only, costs about a third of the steps
    it follows."""
    kl_window: int = 16
    """Without held-out pairs: training pairs the KL estimate averages over (at least one
    step's)."""
    objective: str = "pairwise"
    """``pairwise``: the recipe's pairs (``pair_mode``); ``listwise``: each vote's whole
    ranking of a prompt's responses, ties kept, as one example (the database's human rankings
    only; the recipe's module says what its listwise loss is)."""
    annotator_weights: str = "none"
    """``none``: every vote counts the same; ``reliability``: each example's loss is weighted
    by its annotators' estimated reliability (``data.reliability``; database rankings only)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pair_mode not in MODES:
            raise ConfigError(f"pair mode must be one of {', '.join(MODES)}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {', '.join(OBJECTIVES)}")
        if self.annotator_weights not in ANNOTATOR_WEIGHTS:
            raise ConfigError(f"annotator weights must be one of {', '.join(ANNOTATOR_WEIGHTS)}")
        require_at_least_one(self, "max_prompt_tokens", "max_response_tokens", "kl_window")
        if self.kl_check_every is not None:
            require_at_least_one(self, "kl_check_every")
        if self.learning_rate is not None and self.learning_rate < 0:
            raise ConfigError("learning rate must be 0 or more")
        if self.kl_budget is not None and self.kl_budget <= 0:
            raise ConfigError("kl budget must be above 0 (or unset: no budget)")


@dataclass(frozen=True)
class PairObjective:
    """What one pair recipe brings to the shared loop."""

    name: str
    """Shown on the progress bar; the saved settings go to ``<name>_training.json``."""
    loss: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    """``(model, PairBatch) -> (per-pair loss [B], log π_θ(chosen) [B], log π_θ(rejected)
    [B])``: one forward for chosen and rejected together."""
    stats: Callable[..., torch.Tensor]
    """``(per-pair loss, logp chosen, logp rejected, PairBatch) -> sums [n]``, summed across
    processes and steps; the last entry is the batch's token count."""
    num_stats: int
    metrics: Callable[[torch.Tensor, str], dict[str, float]]
    """``(summed stats, prefix) -> {"<prefix>/loss": ..., ...}``."""
    describe_eval: Callable[[dict[str, float]], str]
    """The held-out metrics as a phrase for the closing line."""
    reference_temperature: float = 1.0
    """Logits are divided by this for every log-prob, the starting policy's included."""
    fingerprint: dict = field(default_factory=dict)
    """The objective's settings that must match for a checkpoint to be resumed."""
    kl_stat: int | None = None
    """Index of the stats' KL sum (per pair, ``policy.losses.move_kl`` on its two responses); the
    pair count is always index 1. Needed for a KL budget."""
    learning_rates: tuple[tuple[float, float], ...] = ()
    """(weights, learning rate) anchors the default learning rate is interpolated between."""


class HeldOutKLBudget:
    """``run_steps``'s ``should_stop`` for a KL budget on held-out prompts: every ``every``
    steps, ``measure()`` (the held-out metrics, ``eval/kl`` among them, the same on every
    process); a reason to stop once the KL reaches ``budget``. ``measured_step`` is the last
    step checked, for ``run_steps`` to log that evaluation."""

    def __init__(self, budget: float, every: int, measure: Callable[[], dict[str, float]]):
        self.budget, self.every, self.measure = budget, every, measure
        self.reached: float | None = None
        self.measured_step: int | None = None

    def __call__(self, step: int, stats: torch.Tensor) -> str | None:
        if step % self.every:
            return None
        metrics = self.measure()
        self.measured_step = step
        kl = metrics["eval/kl"]
        if kl < self.budget:
            return None
        self.reached = kl
        return (f"stopped at step {step}: held-out KL {kl:.3f} reached the budget of "
                f"{self.budget:g} nats")


class KLBudget:
    """``run_steps``'s ``should_stop`` for a KL budget without held-out pairs: the mean of the
    KL estimate over the last ``window`` pairs of training steps; a reason to stop once it
    reaches ``budget``."""

    def __init__(self, budget: float, window: int, kl_stat: int):
        from collections import deque

        self.budget, self.window, self.kl_stat = budget, window, kl_stat
        self.recent: deque[tuple[float, float]] = deque()
        self.reached: float | None = None

    def __call__(self, step: int, stats: torch.Tensor) -> str | None:
        self.recent.append((float(stats[self.kl_stat]), float(stats[1])))
        while len(self.recent) > 1 and sum(n for _, n in list(self.recent)[1:]) >= self.window:
            self.recent.popleft()
        pairs = sum(n for _, n in self.recent)
        if pairs < self.window:
            return None
        kl = sum(k for k, _ in self.recent) / pairs
        if kl < self.budget:
            return None
        self.reached = kl
        return (f"stopped at step {step}: KL {kl:.3f} on training pairs (no held-out ones) "
                f"reached the budget of {self.budget:g} nats")


@dataclass
class PairSummary:
    output: str
    steps: int
    train_pairs: int
    eval_pairs: int
    dropped: dict[str, int]
    eval_metrics: dict[str, float]
    train_seconds: float
    tokens_per_second: float
    eval_description: str = ""
    resumed_from_step: int | None = None
    main_process: bool = True
    """False on the other ranks of a distributed run, which should stay quiet."""
    peak_memory: int | None = None
    """This process's peak memory in bytes (the GPU allocator's on a GPU, else resident)."""
    examples: str = "pairs"
    """What one training example is: ``pairs``, or ``rankings`` (the listwise objective)."""
    learning_rate: float | None = None
    """The learning rate trained with (the set one, or the model size's default)."""
    stopped_early: str | None = None
    """Set when the KL budget ended training before its planned steps: at which step, why."""
    planned_steps: int | None = None

    def line(self) -> str:
        from training.memory import peak_text

        parts = [f"{self.train_pairs} training {self.examples}, {self.eval_pairs} held out",
                 f"{self.steps} steps" + (f" of {self.planned_steps} planned ("
                                          f"{self.stopped_early})" if self.stopped_early else "")]
        if self.eval_description:
            parts.append(self.eval_description)
        parts.append(f"{self.tokens_per_second:.0f} tokens/s")
        if self.peak_memory is not None:
            parts.append(peak_text(self.peak_memory))
        return saved_line("policy", self.output, parts, dropped=self.dropped,
                          resumed_from_step=self.resumed_from_step)


def evaluate(model, accelerator, pairs, ref_logps, *, batch_size: int, pad_token_id: int,
             objective: PairObjective) -> dict[str, float]:
    """The objective's held-out metrics under the current policy."""
    from training.steps import held_out_stats

    if not pairs:
        return {}

    def stats_of(indices: list[int]) -> torch.Tensor:
        batch = collate([pairs[i] for i in indices], ref_logps[indices], pad_token_id)
        batch = batch.to(accelerator.device)
        return objective.stats(*objective.loss(model, batch), batch)

    stats = held_out_stats(model, accelerator, [p.length for p in pairs], batch_size=batch_size,
                           num_stats=objective.num_stats, stats_of=stats_of)
    return objective.metrics(stats, "eval")


def plan_fingerprint(config: PairTrainingConfig, plan: StepPlan,
                     objective: PairObjective) -> dict:
    """What must match for a checkpoint to be resumed."""
    return {"model": config.model, "train_pairs": plan.train_pairs,
            "global_batch_size": plan.global_batch_size, "total_steps": plan.total_steps,
            "seed": config.seed, "lora_r": config.lora_r, **objective.fingerprint}


def train_on_pairs(config: PairTrainingConfig, objective: PairObjective, *,
                   pairs: PairSet | None = None, eval_pairs: PairSet | None = None,
                   progress: bool = True) -> PairSummary:
    """Trains the policy on the pairs; ``pairs`` (and held-out ``eval_pairs``) let a caller
    such as the loop pass pairs directly instead of reading ``config.data``/``config.db``."""
    from policy.logprobs import LOGIT_CHUNK_ELEMENTS
    from training.checkpoints import resume_checkpoint
    from training.memory import check_training_memory, efficient_defaults, peak_bytes
    from training.metrics import MetricsLog
    from training.models import (
        LoraSettings,
        check_tokenizer_matches,
        load_policy,
        load_tokenizer,
        resolve_model,
        save_trained_model,
    )
    from training.steps import plan_run, prepare_optimization, run_steps

    # 1. Pairs, tokenized and filtered; the plan, checked before any model loads.
    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    output = Path(config.output)
    pairs = pairs if pairs is not None else read_pairs(config)
    require_pairs(pairs)
    model_path = resolve_model(config.model)
    tokenizer = load_tokenizer(model_path, padding_side="right")
    check_tokenizer_matches(model_path, tokenizer)
    train, held_out, dropped = prepare_pairs(config, tokenizer, pairs, eval_pairs)
    if config.learning_rate is None:
        from dataclasses import replace

        from training.models import model_parameters, size_scaled_learning_rate

        config = replace(config, learning_rate=size_scaled_learning_rate(
            objective.learning_rates, model_parameters(model_path)))
    config = efficient_defaults(config, model_path)
    accelerator, plan = plan_run(config, len(train), output)
    world = accelerator.num_processes
    say = accelerator.print
    longest = max(p.length for p in train + held_out)
    # Sequences per example: a pair's two, a ranking's k (the largest).
    sequences = max(getattr(p, "size", 2) for p in train + held_out)
    memory = check_training_memory(
        accelerator, model_path,
        micro_batch_tokens=sequences * config.per_device_batch_size * longest,
        gradient_checkpointing=config.gradient_checkpointing, lora=config.lora_r > 0,
        logit_chunk_elements=LOGIT_CHUNK_ELEMENTS, what=f"this {objective.name} training")
    examples = "rankings" if config.objective == "listwise" else "pairs"
    say(f"rankloop: {len(train)} training {examples}, {len(held_out)} held out; "
        f"{plan.describe()}; {memory}")

    # 2. π_θ = the starting policy, dropout off (π_θ and it must be the same function at
    #    step 0); optimizer and schedule.
    lora = LoraSettings.from_rank(config.lora_r, config.lora_alpha)
    model = load_policy(model_path, lora=lora,
                        gradient_checkpointing=config.gradient_checkpointing)
    model, optimizer, scheduler = prepare_optimization(accelerator, model, config,
                                                       plan.total_steps)
    pad_id = tokenizer.pad_token_id

    # 3. The starting policy's log-probs, once, before any checkpoint is loaded: no second
    #    model stays in memory.
    ref = reference_logprobs(model, accelerator, train + held_out,
                             batch_size=config.per_device_batch_size, pad_token_id=pad_id,
                             temperature=objective.reference_temperature)
    train_ref, held_ref = ref[:len(train)], ref[len(train):]

    # Measured once per state of the weights: a KL-budget check and the step's evaluation
    # read the same pass over the held-out pairs.
    held_out_cache: dict[str, dict[str, float]] = {}

    def held_out_metrics() -> dict[str, float]:
        if "metrics" not in held_out_cache:
            held_out_cache["metrics"] = evaluate(
                model, accelerator, held_out, held_ref, batch_size=config.per_device_batch_size,
                pad_token_id=pad_id, objective=objective)
        return held_out_cache["metrics"]

    # 4. Resume from the newest checkpoint when its plan matches this one.
    fingerprint = plan_fingerprint(config, plan, objective)
    state = resume_checkpoint(accelerator, output, fingerprint, resume=config.resume, say=say)
    start_step = state["step"] if state else 0
    if state and state.get("stopped_early"):
        start_step = plan.total_steps  # the budget ended that run: nothing is left to train
    resumed_from = state["step"] if state else None
    log = MetricsLog(output / "metrics.jsonl", enabled=accelerator.is_main_process,
                     keep_up_to_step=resumed_from, accelerator=accelerator,
                     settings=asdict(config))

    # 5. Train (training.steps: one global batch a step; log, evaluate, checkpoint).
    def forward(indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        held_out_cache.clear()  # this step changes the weights
        batch = collate([train[i] for i in indices], train_ref[indices], pad_id)
        batch = batch.to(accelerator.device)
        per_pair, logp_chosen, logp_rejected = objective.loss(model, batch)
        stats = objective.stats(per_pair, logp_chosen, logp_rejected, batch)
        # Weights have mean 1 over the training set: all-1 weights leave the loss as it was.
        return per_pair * batch.weight, stats

    budget = None
    if config.kl_budget is not None:
        if objective.kl_stat is None:
            raise ConfigError(f"{objective.name} does not estimate a KL: unset --kl-budget")
        if held_out:
            every = config.kl_check_every or max(
                1, -(-len(held_out) // plan.global_batch_size))
            budget = HeldOutKLBudget(config.kl_budget, every, held_out_metrics)
        else:
            budget = KLBudget(config.kl_budget, config.kl_window, objective.kl_stat)
    done = run_steps(
        accelerator=accelerator, model=model, optimizer=optimizer, scheduler=scheduler,
        plan=plan, config=config, lengths=[p.length for p in train], start_step=start_step,
        forward=forward, num_stats=objective.num_stats, metrics=objective.metrics,
        evaluate=held_out_metrics if held_out else None, log=log, output=output,
        fingerprint=fingerprint, desc=objective.name, progress=progress,
        tokens_stat=objective.num_stats - 1, should_stop=budget)
    eval_metrics = done.eval_metrics
    stopped_early = done.stopped_early or (state or {}).get("stopped_early")
    steps_taken = done.last_step or (state["step"] if state else plan.total_steps)
    if done.stopped_early:
        log.log(steps_taken, {"train/kl_budget_reached": budget.reached,
                              "train/kl_budget": config.kl_budget})

    # 6. Save a plain Hugging Face folder (gathered from ZeRO-3 shards, LoRA merged in), left
    #    padded for batched generation.
    if save_trained_model(accelerator, model, tokenizer, output, lora=lora, padding_side="left"):
        settings = {k: v for k, v in asdict(config).items() if k != "output"}
        settings.update(train_pairs=len(train), eval_pairs=len(held_out),
                        steps=steps_taken, planned_steps=plan.total_steps,
                        stopped_early=stopped_early, world_size=world, dropped=dropped)
        (output / f"{objective.name}_training.json").write_text(json.dumps(
            {"base_model": config.model, "metrics": eval_metrics, "settings": settings},
            indent=2, sort_keys=True, default=str) + "\n")
    accelerator.wait_for_everyone()
    log.close()
    return PairSummary(
        output=str(output), steps=steps_taken, train_pairs=len(train),
        eval_pairs=len(held_out), dropped=dropped, eval_metrics=eval_metrics,
        train_seconds=done.train_seconds, tokens_per_second=done.tokens_per_second,
        eval_description=objective.describe_eval(eval_metrics) if eval_metrics else "",
        resumed_from_step=resumed_from, main_process=accelerator.is_main_process,
        examples=examples,
        peak_memory=peak_bytes(accelerator.device), learning_rate=config.learning_rate,
        stopped_early=stopped_early, planned_steps=plan.total_steps)

