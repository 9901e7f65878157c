"""The settings every training recipe shares, as dataclasses the recipes' configs extend.

A recipe's config (``RewardTrainConfig``, ``PairTrainingConfig`` and through it REBEL's and
DPO's, ``SFTConfig``) adds its own fields, and redeclares a shared one only to give it another
default. Checks that hold for every recipe run here; a recipe's ``__post_init__`` calls
``super().__post_init__()`` and checks its own fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from data.errors import ConfigError
from training.metrics import check_report_to
from training.optim import SCHEDULES, check_optimizer_settings


def require_at_least_one(config, *names: str) -> None:
    for name in names:
        if getattr(config, name) < 1:
            raise ConfigError(f"{name.replace('_', ' ')} must be at least 1")


@dataclass
class TrainingSettings:
    output: str
    """Folder for the trained model (a Hugging Face folder), ``metrics.jsonl`` and the
    settings used."""
    model: str = "default"
    """Starting weights: ``default`` (SmolLM2-135M-Instruct), a folder or a Hub id."""
    data: str | None = None
    """Training data file, ``save_to_disk`` folder or Hub id; None reads the app's database
    ``db``."""
    db: str | None = None
    """The app's database, read when ``data`` is None."""
    split: str = "train"
    """Dataset split for ``data``."""
    eval_fraction: float = 0.1
    """Share of prompts (or documents) held out for the held-out metrics; all examples of a
    prompt stay on the same side."""
    per_device_batch_size: int = 4
    """Examples per micro-batch on each process (a pair runs two sequences)."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step on each process."""
    epochs: int = 1
    """Passes over the training data (ignored when ``max_steps`` is set)."""
    max_steps: int | None = None
    """Optimizer steps to run; overrides ``epochs``."""
    learning_rate: float = 1e-6
    """Peak AdamW learning rate, reached after the warm-up."""
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
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about a third more time."""
    bf16: bool | None = None
    """bf16 mixed precision; None follows the accelerate config, else on when a GPU exists."""
    report_to: tuple[str, ...] = ()
    """Trackers that receive the metrics too: ``tensorboard`` and/or ``wandb``
    (``metrics.jsonl`` is always written)."""
    seed: int = 0
    """Seeds the weights of new layers, the held-out split and the batch order."""
    log_every: int = 10
    """Log training metrics every this many steps."""
    eval_every: int | None = None
    """Evaluate every this many steps; None evaluates at the end of each epoch."""

    def __post_init__(self) -> None:
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {', '.join(SCHEDULES)}")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"eval fraction must be in [0, 1), got {self.eval_fraction}")
        require_at_least_one(self, "per_device_batch_size", "gradient_accumulation_steps",
                             "epochs", "log_every")
        check_optimizer_settings(self)
        self.report_to = check_report_to(self.report_to)


@dataclass
class ResumableTrainingSettings(TrainingSettings):
    """Settings of the recipes that write resumable checkpoints, can train LoRA adapters and
    pick memory-saving defaults by model size (``training.memory.efficient_defaults``)."""

    gradient_checkpointing: bool | None = None
    """Recompute activations in the backward pass: less memory, about a third more time.
    None: on for models of 50M weights or more (``training.memory.efficient_defaults``)."""
    bf16: bool | None = None
    """bf16 mixed precision; None follows the accelerate config, else on for models of 50M
    weights or more on a GPU or a CPU with bf16 instructions (AMX, AVX-512 BF16)."""
    lora_r: int = 0
    """LoRA rank; 0 trains every weight."""
    lora_alpha: float | None = None
    """LoRA scale numerator; None means 2 × lora_r."""
    save_every: int = 200
    """Write a resumable checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 1
    """How many of the newest complete checkpoints to keep."""
    resume: bool = True
    """Continue from the newest checkpoint in ``output/checkpoints`` when there is one."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lora_r < 0:
            raise ConfigError("lora r must be 0 (full fine-tuning) or more")
        require_at_least_one(self, "save_every", "keep_checkpoints")
