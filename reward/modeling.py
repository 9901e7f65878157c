"""Loading and saving Bradley-Terry reward models: ``AutoModelForSequenceClassification`` with
one label, optionally with LoRA adapters (``training.models.LoraSettings``) that are merged
into the weights on save."""

from __future__ import annotations

import json
import os
from pathlib import Path

from training.models import LoraSettings, ModelNotFoundError, first_line, load_tokenizer


def load_reward_tokenizer(model: str):
    """The model's tokenizer, right-padded, with a pad token (eos when it has none)."""
    return load_tokenizer(model, padding_side="right")


def load_reward_model(model: str, tokenizer, *, lora: LoraSettings | None = None, dtype=None,
                      gradient_checkpointing: bool = False):
    """A one-label sequence classifier on ``model``'s weights. A causal LM checkpoint gets a new
    score head; a reward model checkpoint keeps its own. With ``lora``, only adapters and the
    score head train."""
    import torch
    from transformers import AutoModelForSequenceClassification

    try:
        reward_model = AutoModelForSequenceClassification.from_pretrained(
            model, num_labels=1, dtype=dtype or torch.float32
        )
    except OSError as exc:
        raise ModelNotFoundError(first_line(f"cannot load model {model!r}: {exc}")) from None
    # Without a pad id the classifier cannot find the last real token of a padded row.
    reward_model.config.pad_token_id = tokenizer.pad_token_id
    if gradient_checkpointing:
        # Non-reentrant checkpointing passes gradients to LoRA adapters without extra hooks.
        reward_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})
        reward_model.config.use_cache = False
    if lora is not None:
        from peft import LoraConfig, TaskType, get_peft_model

        reward_model = get_peft_model(reward_model, LoraConfig(
            task_type=TaskType.SEQ_CLS, r=lora.r, lora_alpha=lora.alpha,
            lora_dropout=lora.dropout, target_modules=lora.target_modules,
        ))
    return reward_model


def write_model_card(output: Path, *, base_model: str, metrics: dict, settings: dict) -> None:
    """README.md with the metrics and settings, plus ``reward_training.json`` for programs."""
    rows = "\n".join(f"| `{k}` | {v:.4f} |" if isinstance(v, float) else f"| `{k}` | {v} |"
                     for k, v in sorted(metrics.items()))
    card = f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [reward-model, bradley-terry, rankloop]
base_model: {base_model}
---

# Bradley-Terry reward model

Trained with `rankloop train reward` from `{base_model}`. Load it with
`AutoModelForSequenceClassification.from_pretrained(...)`: the single logit is the reward of a
whole conversation, formatted with this folder's chat template (no generation prompt).

## Held-out metrics

| metric | value |
| --- | --- |
{rows}

## Settings

```json
{json.dumps(settings, indent=2, sort_keys=True, default=str)}
```
"""
    (output / "README.md").write_text(card)
    (output / "reward_training.json").write_text(
        json.dumps({"base_model": base_model, "metrics": metrics, "settings": settings},
                   indent=2, sort_keys=True, default=str) + "\n"
    )


def is_complete_model_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))
