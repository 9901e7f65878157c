"""The optimizer-step loop of the training recipes (reward model, REBEL, DPO, SFT).

Each step takes one global batch of ``world × per_device × accumulation`` examples from the
epoch's batches (a function of seed and epoch, so the data position follows from the step
number on resume), cuts it into micro-batches, runs the recipe's forward and backward on this
process's share, then clips, updates and advances the schedule. The loss is normalised by the
examples of the whole step, so the update does not depend on how the step is split over
processes and accumulation steps (SFT normalises by the trained tokens of the step instead,
through ``example_sizes``). Metrics are logged every ``log_every`` steps, the held-out set
evaluated every ``eval_every`` steps (default: each epoch) and a resumable checkpoint written
every ``save_every`` steps, each also at the last step (a recipe whose config has no
``save_every`` writes none).

What differs between recipes, the forward pass and what it reports, comes in as functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from training.plan import StepPlan, global_batches, micro_batches


class StepSettings(Protocol):
    """The fields of a recipe's config that the loop reads."""

    seed: int
    gradient_accumulation_steps: int
    max_grad_norm: float | None
    log_every: int
    eval_every: int | None
    save_every: int
    """Absent or None: no checkpoints (SFT)."""
    keep_checkpoints: int


@dataclass(frozen=True)
class StepsDone:
    train_seconds: float
    """Time spent in the steps this run took (resumed steps are not counted)."""
    trained_examples: int
    trained_tokens: float
    eval_metrics: dict[str, float]
    """The last held-out metrics ({} without a held-out set)."""
    stopped_early: str | None = None
    """Why ``should_stop`` ended the run before its last planned step (None: it ran them all)."""
    last_step: int | None = None
    """The step the run ended at (None: resumed after its last step)."""

    @property
    def examples_per_second(self) -> float:
        return self.trained_examples / self.train_seconds if self.train_seconds else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.trained_tokens / self.train_seconds if self.train_seconds else 0.0


def run_steps(
    *, accelerator, model, optimizer, scheduler, plan: StepPlan, config: StepSettings,
    lengths: Sequence[int], start_step: int,
    forward: Callable[[list[int]], tuple[torch.Tensor, torch.Tensor]],
    num_stats: int, metrics: Callable[[torch.Tensor, str], dict[str, float]],
    evaluate: Callable[[], dict[str, float]] | None, log, output: Path, fingerprint: dict,
    desc: str, progress: bool, tokens_stat: int | None = None,
    should_stop: Callable[[int, torch.Tensor], str | None] | None = None,
    example_sizes: Sequence[float] | None = None, unit: str = "pairs",
) -> StepsDone:
    """Runs steps ``start_step`` … ``plan.total_steps - 1``.

    ``forward(indices)`` returns (per-example loss ``[B]``, stats ``[num_stats]``) for the
    training examples at ``indices``; the stats are summed over micro-batches, processes and
    the logging window and turned into ``train/…`` values by ``metrics(stats, "train")``.
    ``tokens_stat`` is the index of the stats' token count, for a tokens/s figure.
    ``evaluate()`` gives the held-out metrics (None: no held-out set).
    ``example_sizes``: what each training example's loss is a sum over (SFT: its trained
    tokens); the step's loss is divided by their sum over the global batch (None: one per
    example, the mean over examples). ``unit`` names the examples in ``train/<unit>_per_second``.
    ``should_stop(step, step_stats)``, after each step: a reason to end the run there (it is
    logged, evaluated and checkpointed as a last step), or None to go on; one with a
    ``measured_step`` attribute equal to the step has evaluated there, and that evaluation is
    logged (``evaluate`` should then give the same metrics without measuring again).
    """
    from tqdm.auto import tqdm

    from training.checkpoints import save_checkpoint
    from training.optim import clip_gradients

    rank, world = accelerator.process_index, accelerator.num_processes
    eval_every = config.eval_every or plan.steps_per_epoch
    model.train()
    epoch_batches: tuple[int, list[list[int]]] | None = None
    window = torch.zeros(num_stats)
    train_seconds, trained_examples, trained_tokens = 0.0, 0, 0.0
    eval_metrics: dict[str, float] = {}
    stopped, last_step = None, None
    bar = tqdm(total=plan.total_steps, initial=start_step, desc=desc,
               disable=not (progress and accelerator.is_main_process))
    for step in range(start_step, plan.total_steps):
        started = time.perf_counter()
        epoch, position = plan.epoch_and_position(step)
        if epoch_batches is None or epoch_batches[0] != epoch:
            epoch_batches = (epoch, global_batches(lengths, plan.global_batch_size, config.seed,
                                                   epoch, plan.micro_batches_per_step))
        global_batch = epoch_batches[1][position]
        chunks = micro_batches(global_batch, lengths, plan.micro_batches_per_step)
        # Backends average gradients over processes and accumulation steps; this factor turns
        # that average into the mean over every example of the step.
        step_size = (len(global_batch) if example_sizes is None
                     else sum(example_sizes[i] for i in global_batch))
        loss_scale = plan.micro_batches_per_step / max(step_size, 1)

        # a. Forward and backward this process's micro-batches.
        step_stats = torch.zeros(num_stats)
        for accumulation_step in range(config.gradient_accumulation_steps):
            mine = chunks[accumulation_step * world + rank]
            with accelerator.accumulate(model):
                per_example, stats = forward(mine)
                accelerator.backward(per_example.sum() * loss_scale)
            step_stats += stats

        # b. Clip, update, advance the schedule.
        grad_norm = clip_gradients(accelerator, model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()

        step_stats = accelerator.reduce(step_stats.to(accelerator.device), reduction="sum").cpu()
        window += step_stats
        trained_examples += len(global_batch)
        if tokens_stat is not None:
            trained_tokens += float(step_stats[tokens_stat])
        train_seconds += time.perf_counter() - started
        done = last_step = step + 1
        bar.update(1)
        stopped = should_stop(done, step_stats) if should_stop is not None else None
        last = done == plan.total_steps or stopped is not None

        # c. Log, evaluate, checkpoint.
        if done % config.log_every == 0 or last:
            values = metrics(window, "train")
            values.update({"train/epoch": done / plan.steps_per_epoch,
                           "train/learning_rate": scheduler.get_last_lr()[0],
                           f"train/{unit}_per_second": trained_examples / max(train_seconds,
                                                                              1e-9)})
            if tokens_stat is not None:
                values["train/tokens_per_second"] = trained_tokens / max(train_seconds, 1e-9)
            if grad_norm is not None:
                values["train/grad_norm"] = float(grad_norm)
            log.log(done, values)
            bar.set_postfix(loss=f"{values['train/loss']:.4f}")
            window.zero_()
        # A stop rule that measured held-out metrics at this step has them logged here too.
        measured = getattr(should_stop, "measured_step", None) == done
        if evaluate is not None and (done % eval_every == 0 or last or measured):
            eval_metrics = evaluate()
            log.log(done, eval_metrics)
        save_every = getattr(config, "save_every", None)
        if save_every and (done % save_every == 0 or last):
            save_checkpoint(accelerator, output, done,
                            {"plan": fingerprint, "epoch": epoch,
                             "position_in_epoch": position + 1, "stopped_early": stopped},
                            keep=config.keep_checkpoints)
        if stopped is not None:
            break
    bar.close()
    if evaluate is not None and not eval_metrics:  # resumed after the last step
        eval_metrics = evaluate()
    return StepsDone(train_seconds, trained_examples, trained_tokens, eval_metrics, stopped,
                     last_step)


def held_out_stats(model, accelerator, lengths: Sequence[int], *, batch_size: int,
                   num_stats: int, stats_of: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
    """The recipe's stats summed over every held-out example, under the current weights.

    ``stats_of(indices)`` runs the forward on the held-out examples at ``indices``. Longest
    first; the batches are spread over the processes and summed back, and a process with no
    batch left runs a copy of one and discards it, since ZeRO-3 needs every rank in every
    forward pass.
    """
    from training.plan import spread

    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    total = torch.zeros(num_stats)
    model.eval()
    with torch.no_grad():
        for index, real in spread(len(chunks), accelerator.num_processes,
                                  accelerator.process_index):
            stats = stats_of(chunks[index])
            if real:
                total += stats
    model.train()
    return accelerator.reduce(total.to(accelerator.device), reduction="sum").cpu()


def prepare_optimization(accelerator, model, config, total_steps: int, *,
                         micro_batch_size: int | None = None):
    """(model, optimizer, scheduler), ready for a recipe's loop: AdamW over the trainable
    weights, the learning-rate schedule, DeepSpeed's batch settings, then accelerate's
    wrapping. The schedule is saved with each checkpoint: it steps once per optimizer step,
    by the loop, whatever the backend. A config without a schedule (PPO) keeps its learning
    rate constant; ``micro_batch_size`` stands in for ``config.per_device_batch_size`` where a
    recipe counts its micro-batches otherwise."""
    from training.accel import configure_deepspeed
    from training.optim import adamw, lr_scheduler

    optimizer = adamw([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate,
                      weight_decay=config.weight_decay, betas=config.adam_betas,
                      eps=config.adam_eps)
    scheduler = lr_scheduler(getattr(config, "lr_schedule", "constant"), optimizer,
                             warmup_ratio=getattr(config, "warmup_ratio", 0.0),
                             total_steps=total_steps)
    configure_deepspeed(
        accelerator, micro_batch_size=micro_batch_size or config.per_device_batch_size,
        gradient_accumulation_steps=getattr(config, "gradient_accumulation_steps", 1),
        max_grad_norm=config.max_grad_norm)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    return model, optimizer, scheduler


def plan_run(config, n_examples: int, output: Path):
    """(accelerator, plan) of a run over ``n_examples`` training examples: the accelerator
    (DeepSpeed when launched so, trackers), the seed set on every process, and the step plan,
    checked before any model loads."""
    from accelerate.utils import set_seed

    from training.accel import make_accelerator

    accelerator = make_accelerator(gradient_accumulation_steps=config.gradient_accumulation_steps,
                                   bf16=config.bf16, report_to=config.report_to, output=output)
    set_seed(config.seed)
    plan = StepPlan(n_examples, accelerator.num_processes, config.per_device_batch_size,
                    config.gradient_accumulation_steps, config.epochs, config.max_steps)
    plan.check()
    return accelerator, plan
