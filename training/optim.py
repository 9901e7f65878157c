"""Optimizer, learning-rate schedule and gradient clipping shared by the training recipes.

Every recipe's optimizer is AdamW with its betas, ε and weight decay exposed. The REBEL
reference scripts use betas (0.9, 0.95), ε 1e-8 and weight decay 1e-6 and never clip
gradients; RankLoop's defaults are torch's betas (0.9, 0.999) with no weight decay and a
clipping norm of 1.0, and each can be set to the reference's values.
"""

from __future__ import annotations

import math

from data.errors import ConfigError

SCHEDULES = ("cosine", "linear", "constant")


def adamw(params, *, lr: float, weight_decay: float = 0.0,
          betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
    """AdamW with the fused kernel where torch has one for the device: on CPU it is over ten
    times faster than the per-tensor loop for a 135M model, and the same arithmetic."""
    import torch

    params = list(params)
    options = dict(lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps)
    try:
        return torch.optim.AdamW(params, fused=True, **options)
    except RuntimeError:
        return torch.optim.AdamW(params, **options)


def lr_scheduler(name: str, optimizer, *, warmup_ratio: float, total_steps: int):
    """Linear warm-up over ``warmup_ratio`` of the steps, then ``cosine`` or ``linear`` decay
    to 0, or ``constant``. The recipe steps it once per optimizer step."""
    from transformers import get_scheduler

    if name not in SCHEDULES:
        raise ConfigError(f"lr_schedule must be one of {', '.join(SCHEDULES)}")
    kind = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[name]
    return get_scheduler(kind, optimizer, num_warmup_steps=math.ceil(warmup_ratio * total_steps),
                         num_training_steps=total_steps)


def clip_gradients(accelerator, parameters, max_grad_norm: float | None):
    """Clips the global gradient norm to ``max_grad_norm`` (None or 0: no clipping) and returns
    the norm before clipping. Under DeepSpeed, which clips inside its own step
    (``training.accel.configure_deepspeed``), this only reads the norm back."""
    return accelerator.clip_grad_norm_(parameters, max_grad_norm or math.inf)


def check_optimizer_settings(config) -> None:
    """Refuses optimizer settings of a recipe config that AdamW would take silently."""
    betas = tuple(config.adam_betas)
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"adam betas must be two numbers in [0, 1), got {config.adam_betas}")
    if config.weight_decay < 0:
        raise ConfigError("weight decay must be 0 or more")
    if config.max_grad_norm is not None and config.max_grad_norm < 0:
        raise ConfigError("max grad norm must be 0 (no clipping) or more")
