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

Pairs are read and tokenized by ``policy.pairs`` (shared with DPO). Batching, checkpoints and
saving are the training layer's (``training.plan``, ``training.checkpoints``,
``training.models``): every optimizer step takes one global batch of
``world × per_device × accumulation`` pairs, the loss is normalised by the pairs in the whole
step, and the data position follows from the step number.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from data.policy_pairs import MODES, PairSet, require_pairs
from policy.logprobs import sequence_logprobs
from policy.pairs import PairBatch, collate, prepare_pairs, read_pairs, reference_logprobs
from training.metrics import check_report_to
from training.optim import SCHEDULES, check_optimizer_settings
from training.plan import StepPlan, spread


@dataclass
class RebelConfig:
    output: str
    """Folder for the trained policy (a Hugging Face folder), ``metrics.jsonl`` and
    ``checkpoints/``."""
    model: str = "default"
    """π_t, the policy that sampled the pairs and the starting weights: ``default``
    (SmolLM2-135M-Instruct), a folder or a Hub id."""
    data: str | None = None
    """TRL-format preference file (optional ``score_chosen``/``score_rejected``) or the app's
    database file; None reads the database ``db``."""
    db: str | None = None
    """The app's database, read when ``data`` is None."""
    scorer: str | None = None
    """Database only: use this reward model's stored scores (``bt:DIR``/``armorm:DIR`` as
    written by ``rankloop score``); None uses the human rankings."""
    run_id: int | None = None
    """Database only: only candidates of this generation run."""
    pair_mode: str = "best_worst"
    """``best_worst``: one pair per prompt (highest vs lowest reward); ``all``: every pair."""
    split: str = "train"
    """Dataset split for ``data``."""
    limit: int | None = None
    """Read at most this many pairs (files only)."""
    max_prompt_tokens: int = 1024
    """Pairs whose chat-formatted prompt is longer are dropped (and counted)."""
    max_response_tokens: int = 2048
    """Pairs with a response longer than this (EOS included) are dropped (and counted)."""
    eval_fraction: float = 0.1
    """Share of prompts held out for the held-out loss (all pairs of a prompt together)."""
    eta: float = 1.0
    """Target log-ratio gap per unit of reward gap (see ``policy.losses.rebel_loss``)."""
    temperature: float = 1.0
    """The temperature the responses were sampled at; logits are divided by it."""
    per_device_batch_size: int = 4
    """Pairs per micro-batch on each process; one forward runs 2× this many sequences."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step on each process."""
    epochs: int = 1
    """Passes over the training pairs (ignored when ``max_steps`` is set)."""
    max_steps: int | None = None
    """Optimizer steps to run; overrides ``epochs``."""
    learning_rate: float = 3e-7
    weight_decay: float = 0.0
    """AdamW weight decay (the REBEL reference: 1e-6)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (β1, β2) (the REBEL reference: (0.9, 0.95))."""
    adam_eps: float = 1e-8
    """AdamW ε (the REBEL reference: 1e-8)."""
    warmup_ratio: float = 0.1
    """Share of steps with a linear learning-rate warm-up from 0."""
    lr_schedule: str = "cosine"
    """After warm-up: ``cosine`` or ``linear`` decay to 0, or ``constant``."""
    max_grad_norm: float | None = 1.0
    """Gradients are clipped to this global norm; 0 or None: no clipping (the REBEL reference
    does not clip)."""
    lora_r: int = 0
    """LoRA rank; 0 trains every weight."""
    lora_alpha: float | None = None
    """LoRA scale numerator; None means 2 × lora_r."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more time."""
    bf16: bool | None = None
    """bf16 mixed precision; None follows the accelerate config, else on when a GPU exists."""
    report_to: tuple[str, ...] = ()
    """Trackers that receive the metrics too: ``tensorboard`` and/or ``wandb``
    (``metrics.jsonl`` is always written)."""
    seed: int = 0
    log_every: int = 10
    eval_every: int | None = None
    """Evaluate every this many steps; None evaluates at the end of each epoch."""
    save_every: int = 200
    """Write a resumable checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 1
    resume: bool = True
    """Continue from the newest checkpoint in ``output/checkpoints`` when there is one."""

    def __post_init__(self) -> None:
        if self.pair_mode not in MODES:
            raise ValueError(f"pair mode must be one of {', '.join(MODES)}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(SCHEDULES)}")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval fraction must be in [0, 1), got {self.eval_fraction}")
        if self.temperature <= 0:
            raise ValueError("temperature must be above 0 (log-probs of greedy samples are 0)")
        check_optimizer_settings(self)
        self.report_to = check_report_to(self.report_to)
        for name in ("per_device_batch_size", "gradient_accumulation_steps", "epochs",
                     "max_prompt_tokens", "max_response_tokens", "log_every", "save_every",
                     "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be at least 1")


# ---------------------------------------------------------------------------------------------
# Statistics and evaluation
# ---------------------------------------------------------------------------------------------

# Sums reduced across processes: loss, pairs, sign agreements, KL, chosen and rejected
# log-ratios, tokens.
_STATS = 7


def batch_stats(per_pair_loss, logp_chosen, logp_rejected, batch: PairBatch) -> torch.Tensor:
    ratio_chosen = (logp_chosen - batch.ref_logp_chosen).detach().float()
    ratio_rejected = (logp_rejected - batch.ref_logp_rejected).detach().float()
    gap = ratio_chosen - ratio_rejected
    reward_gap = batch.reward_chosen - batch.reward_rejected
    return torch.stack([
        per_pair_loss.detach().float().sum(),
        torch.tensor(float(batch.num_pairs), device=gap.device),
        (torch.sign(gap) == torch.sign(reward_gap)).float().sum(),
        # k1 estimate of KL(π_t ‖ π_θ) per response (they were sampled from π_t), averaged
        # over the pair's two responses.
        (-(ratio_chosen + ratio_rejected) / 2).sum(),
        ratio_chosen.sum(),
        ratio_rejected.sum(),
        batch.tokens.attention_mask.sum().float(),
    ]).cpu()


def stats_to_metrics(stats, prefix: str) -> dict[str, float]:
    loss, pairs, agree, kl, chosen, rejected, tokens = (float(x) for x in stats)
    n = max(pairs, 1.0)
    return {f"{prefix}/loss": loss / n, f"{prefix}/sign_agreement": agree / n,
            f"{prefix}/kl": kl / n, f"{prefix}/logratio_chosen": chosen / n,
            f"{prefix}/logratio_rejected": rejected / n, f"{prefix}/pairs": pairs,
            f"{prefix}/tokens": tokens}


def evaluate(model, accelerator, pairs, ref_logps, *, batch_size: int, pad_token_id: int,
             config: RebelConfig) -> dict[str, float]:
    """Held-out REBEL loss, sign agreement and KL under the current policy."""
    from policy.losses import rebel_loss

    if not pairs:
        return {}
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].length, reverse=True)
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    stats = torch.zeros(_STATS)
    model.eval()
    with torch.no_grad():
        for index, real in spread(len(chunks), accelerator.num_processes,
                                   accelerator.process_index):
            chunk = chunks[index]
            batch = collate([pairs[i] for i in chunk], ref_logps[chunk], pad_token_id)
            batch = batch.to(accelerator.device)
            logp_chosen, logp_rejected = batch.split(
                sequence_logprobs(model, batch.tokens, config.temperature))
            if real:
                loss = rebel_loss(logp_chosen, logp_rejected, batch.ref_logp_chosen,
                                  batch.ref_logp_rejected, batch.reward_chosen,
                                  batch.reward_rejected, config.eta)
                stats += batch_stats(loss, logp_chosen, logp_rejected, batch)
    model.train()
    stats = accelerator.reduce(stats.to(accelerator.device), reduction="sum").cpu()
    return stats_to_metrics(stats, "eval")


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

def plan_fingerprint(config: RebelConfig, plan: StepPlan) -> dict:
    """What must match for a checkpoint to be resumed."""
    return {"model": config.model, "train_pairs": plan.train_pairs,
            "global_batch_size": plan.global_batch_size, "total_steps": plan.total_steps,
            "seed": config.seed, "lora_r": config.lora_r, "eta": config.eta}


# ---------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------

@dataclass
class RebelSummary:
    output: str
    steps: int
    train_pairs: int
    eval_pairs: int
    dropped: dict[str, int]
    eval_metrics: dict[str, float]
    train_seconds: float
    tokens_per_second: float
    resumed_from_step: int | None = None
    main_process: bool = True
    """False on the other ranks of a distributed run, which should stay quiet."""

    def line(self) -> str:
        parts = [f"{self.train_pairs} training pairs, {self.eval_pairs} held out",
                 f"{self.steps} steps"]
        if "eval/loss" in self.eval_metrics:
            parts.append(f"held-out loss {self.eval_metrics['eval/loss']:.4f}, sign agreement "
                         f"{self.eval_metrics['eval/sign_agreement']:.3f}, "
                         f"KL {self.eval_metrics['eval/kl']:.4f}")
        parts.append(f"{self.tokens_per_second:.0f} tokens/s")
        if self.resumed_from_step is not None:
            parts.append(f"resumed at step {self.resumed_from_step}")
        dropped = ", ".join(f"{n} {why}" for why, n in sorted(self.dropped.items()) if n)
        parts.append(f"dropped: {dropped or 'none'}")
        return f"policy saved to {self.output}: " + "; ".join(parts)


def train_rebel(config: RebelConfig, *, pairs: PairSet | None = None,
                eval_pairs: PairSet | None = None, progress: bool = True) -> RebelSummary:
    """Runs the recipe; ``pairs`` (and held-out ``eval_pairs``) let a caller such as the loop
    pass pairs directly instead of reading ``config.data``/``config.db``."""
    from accelerate.utils import set_seed
    from tqdm import tqdm

    from policy.losses import rebel_loss
    from training.accel import configure_deepspeed, make_accelerator
    from training.checkpoints import resume_checkpoint, save_checkpoint
    from training.metrics import MetricsLog
    from training.models import (
        LoraSettings,
        check_tokenizer_matches,
        load_policy,
        load_tokenizer,
        resolve_model,
        save_trained_model,
    )
    from training.optim import adamw, clip_gradients, lr_scheduler
    from training.plan import global_batches, micro_batches

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
    accelerator = make_accelerator(gradient_accumulation_steps=config.gradient_accumulation_steps,
                                   bf16=config.bf16, report_to=config.report_to, output=output)
    rank, world = accelerator.process_index, accelerator.num_processes
    say = accelerator.print
    set_seed(config.seed)
    plan = StepPlan(len(train), world, config.per_device_batch_size,
                    config.gradient_accumulation_steps, config.epochs, config.max_steps)
    plan.check()
    lengths = [p.length for p in train]
    eval_every = config.eval_every or plan.steps_per_epoch
    say(f"rankloop: {len(train)} training pairs, {len(held_out)} held out; "
        f"{plan.total_steps} steps of {plan.global_batch_size} pairs "
        f"({world} processes × {config.per_device_batch_size} pairs × "
        f"{config.gradient_accumulation_steps} accumulation)")

    # 2. π_θ = π_t with dropout off; optimizer and schedule.
    lora = LoraSettings.from_rank(config.lora_r, config.lora_alpha)
    model = load_policy(model_path, lora=lora,
                        gradient_checkpointing=config.gradient_checkpointing)
    optimizer = adamw([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate,
                      weight_decay=config.weight_decay, betas=config.adam_betas,
                      eps=config.adam_eps)
    scheduler = lr_scheduler(config.lr_schedule, optimizer, warmup_ratio=config.warmup_ratio,
                             total_steps=plan.total_steps)
    configure_deepspeed(accelerator, micro_batch_size=config.per_device_batch_size,
                        gradient_accumulation_steps=config.gradient_accumulation_steps,
                        max_grad_norm=config.max_grad_norm)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    pad_id = tokenizer.pad_token_id

    # 3. π_t's log-probs, once, from the starting weights (before any checkpoint is loaded).
    all_pairs = train + held_out
    ref = reference_logprobs(model, accelerator, all_pairs,
                             batch_size=config.per_device_batch_size, pad_token_id=pad_id,
                             temperature=config.temperature)
    train_ref, held_ref = ref[:len(train)], ref[len(train):]

    # 4. Resume from the newest checkpoint when its plan matches this one.
    fingerprint = plan_fingerprint(config, plan)
    state = resume_checkpoint(accelerator, output, fingerprint, resume=config.resume, say=say)
    start_step = state["step"] if state else 0
    resumed_from = state["step"] if state else None
    log = MetricsLog(output / "metrics.jsonl", enabled=accelerator.is_main_process,
                     keep_up_to_step=resumed_from, accelerator=accelerator,
                     settings=asdict(config))

    # 5. Train: each step is one global batch cut into world × accumulation micro-batches.
    model.train()
    epoch_batches: tuple[int, list[list[int]]] | None = None
    window = torch.zeros(_STATS)
    train_seconds, trained_tokens = 0.0, 0.0
    eval_metrics: dict[str, float] = {}
    bar = tqdm(total=plan.total_steps, initial=start_step, desc="rebel",
               disable=not (progress and accelerator.is_main_process))
    for step in range(start_step, plan.total_steps):
        started = time.perf_counter()
        epoch, position = divmod(step, plan.steps_per_epoch)
        if epoch_batches is None or epoch_batches[0] != epoch:
            epoch_batches = (epoch, global_batches(lengths, plan.global_batch_size, config.seed,
                                                   epoch, plan.micro_batches_per_step))
        global_batch = epoch_batches[1][position]
        chunks = micro_batches(global_batch, lengths, plan.micro_batches_per_step)
        # Backends average gradients over processes and accumulation steps; this factor turns
        # that average into the mean over every pair of the step.
        loss_scale = plan.micro_batches_per_step / len(global_batch)

        # 5a. One forward for chosen and rejected together; backward each micro-batch.
        step_stats = torch.zeros(_STATS)
        for accumulation_step in range(config.gradient_accumulation_steps):
            mine = chunks[accumulation_step * world + rank]
            batch = collate([train[i] for i in mine], train_ref[mine], pad_id)
            batch = batch.to(accelerator.device)
            with accelerator.accumulate(model):
                logp = sequence_logprobs(model, batch.tokens, config.temperature)
                logp_chosen, logp_rejected = batch.split(logp)
                per_pair = rebel_loss(logp_chosen, logp_rejected, batch.ref_logp_chosen,
                                      batch.ref_logp_rejected, batch.reward_chosen,
                                      batch.reward_rejected, config.eta)
                accelerator.backward(per_pair.sum() * loss_scale)
            step_stats += batch_stats(per_pair, logp_chosen, logp_rejected, batch)

        # 5b. Clip, update, advance the schedule.
        grad_norm = clip_gradients(accelerator, model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()

        step_stats = accelerator.reduce(step_stats.to(accelerator.device), reduction="sum").cpu()
        window += step_stats
        trained_tokens += float(step_stats[6])
        train_seconds += time.perf_counter() - started
        done = step + 1
        bar.update(1)

        # 5c. Log, evaluate, checkpoint.
        if done % config.log_every == 0 or done == plan.total_steps:
            metrics = stats_to_metrics(window, "train")
            metrics.update({"train/epoch": done / plan.steps_per_epoch,
                            "train/learning_rate": scheduler.get_last_lr()[0],
                            "train/tokens_per_second": trained_tokens / max(train_seconds, 1e-9)})
            if grad_norm is not None:
                metrics["train/grad_norm"] = float(grad_norm)
            log.log(done, metrics)
            bar.set_postfix(loss=f"{metrics['train/loss']:.4f}")
            window.zero_()
        if held_out and (done % eval_every == 0 or done == plan.total_steps):
            eval_metrics = evaluate(model, accelerator, held_out, held_ref,
                                    batch_size=config.per_device_batch_size,
                                    pad_token_id=pad_id, config=config)
            log.log(done, eval_metrics)
        if done % config.save_every == 0 or done == plan.total_steps:
            save_checkpoint(accelerator, output, done,
                            {"plan": fingerprint, "epoch": epoch,
                             "position_in_epoch": position + 1},
                            keep=config.keep_checkpoints)
    bar.close()
    if held_out and not eval_metrics:  # resumed after the last step
        eval_metrics = evaluate(model, accelerator, held_out, held_ref,
                                batch_size=config.per_device_batch_size, pad_token_id=pad_id,
                                config=config)

    # 6. Save a plain Hugging Face folder (gathered from ZeRO-3 shards, LoRA merged in).
    # Left padding: the folder is ready for batched generation.
    if save_trained_model(accelerator, model, tokenizer, output, lora=lora, padding_side="left"):
        settings = {k: v for k, v in asdict(config).items() if k != "output"}
        settings.update(train_pairs=len(train), eval_pairs=len(held_out),
                        steps=plan.total_steps, world_size=world, dropped=dropped)
        (output / "rebel_training.json").write_text(json.dumps(
            {"base_model": config.model, "metrics": eval_metrics, "settings": settings},
            indent=2, sort_keys=True, default=str) + "\n")
    accelerator.wait_for_everyone()
    log.close()
    return RebelSummary(
        output=str(output), steps=plan.total_steps, train_pairs=len(train),
        eval_pairs=len(held_out), dropped=dropped, eval_metrics=eval_metrics,
        train_seconds=train_seconds,
        tokens_per_second=trained_tokens / train_seconds if train_seconds else 0.0,
        resumed_from_step=resumed_from, main_process=accelerator.is_main_process)
