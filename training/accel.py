"""Accelerate setup shared by training recipes: one process, DDP, or DeepSpeed ZeRO-3 (the
configs in ``launch/configs``), on GPUs or on CPU. Nothing here imports deepspeed."""

from __future__ import annotations

import os


def launched_with_deepspeed() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def mixed_precision(bf16: bool | None) -> str:
    """``bf16`` True/False decides; None follows the launcher's config, else bf16 on a GPU."""
    import torch

    if bf16 is not None:
        return "bf16" if bf16 else "no"
    return os.environ.get("ACCELERATE_MIXED_PRECISION") or (
        "bf16" if torch.cuda.is_available() else "no")


def make_accelerator(*, gradient_accumulation_steps: int, bf16: bool | None = None,
                     report_to=(), output=None):
    """The recipe's Accelerator. ``report_to``: tracker names (``tensorboard``, ``wandb``)
    that ``training.metrics.MetricsLog`` sends metrics to, writing under ``output``."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    from training.metrics import make_trackers

    handlers = []
    if launched_with_deepspeed() and not torch.cuda.is_available():
        # Without a GPU, accelerate finds no collective backend for DeepSpeed ranks and would
        # report a world of one process on every rank; gloo is what DeepSpeed uses on CPU.
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    trackers = make_trackers(report_to, output) if report_to else None
    return Accelerator(gradient_accumulation_steps=gradient_accumulation_steps,
                       mixed_precision=mixed_precision(bf16), kwargs_handlers=handlers,
                       log_with=trackers)


def configure_deepspeed(accelerator, *, micro_batch_size: int, gradient_accumulation_steps: int,
                        max_grad_norm: float | None) -> None:
    """Writes the batch numbers into the DeepSpeed config, which cannot infer them because
    recipes batch their own data instead of handing accelerate a DataLoader. DeepSpeed clips
    gradients itself inside its step, so the clipping norm goes here too (0: no clipping)."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        return
    config = plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = micro_batch_size
    config["gradient_accumulation_steps"] = gradient_accumulation_steps
    config["train_batch_size"] = (
        micro_batch_size * gradient_accumulation_steps * accelerator.num_processes)
    config["gradient_clipping"] = max_grad_norm or 0.0
