"""One scoring API for both kinds of reward model.

    scorer = load_scorer("bt:runs/rm")            # or "armorm:/models/ArmoRM-Llama3-8B-v0.1"
    scorer.score([[{"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello!"}]])        # -> [0.73]

A conversation is a chat message list ending with the reply to score (formatted with the
model's chat template) or a string of already formatted text. Conversations are scored in
batches of similar length with dynamic padding, and returned in the order given. One longer
than ``max_length`` tokens keeps its last ``max_length`` tokens (the reply and the end of the
prompt, where both kinds of model read) and is counted in ``truncated``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.models import ModelNotFoundError

KINDS = ("bt", "armorm")
DEFAULT_MAX_LENGTH = 4096


class ScorerSpecError(ValueError):
    """A ``--scorer`` value that names no usable reward model."""


@dataclass(frozen=True)
class ScorerSpec:
    kind: str
    """``bt`` (a one-label sequence classifier) or ``armorm``."""
    path: str
    """Absolute path of the model folder."""

    @property
    def name(self) -> str:
        """How scores from this model are labelled in the store."""
        return f"{self.kind}:{self.path}"


@dataclass(frozen=True)
class Scored:
    score: float
    objectives: dict[str, float] | None = None
    """ArmoRM's per-objective rewards, when asked for."""


def parse_scorer(spec: str) -> ScorerSpec:
    """``bt:DIR``, ``armorm:DIR``, or a bare ``DIR`` whose config says which kind it is."""
    kind, sep, rest = spec.partition(":")
    if sep and kind in KINDS:
        path = Path(rest).expanduser()
    elif sep and not Path(spec).exists() and "/" not in kind:
        raise ScorerSpecError(f"unknown scorer kind {kind!r} in {spec!r}; use bt:DIR or armorm:DIR")
    else:
        kind, path = "", Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise ScorerSpecError(f"reward model folder {path} does not exist or has no config.json")
    config = json.loads((path / "config.json").read_text())
    from reward.armorm import ARCHITECTURE

    is_armorm = ARCHITECTURE in (config.get("architectures") or [])
    if not kind:
        kind = "armorm" if is_armorm else "bt"
    if kind == "armorm" and not is_armorm:
        raise ScorerSpecError(f"{path} is not an ArmoRM checkpoint (architectures: "
                              f"{config.get('architectures')})")
    if kind == "bt" and (is_armorm or len(config.get("id2label") or {}) != 1):
        raise ScorerSpecError(f"{path} is not a one-label reward model; train one with "
                              "`rankloop train reward`, or use armorm:DIR for ArmoRM")
    return ScorerSpec(kind, str(path.resolve()))


class RewardScorer:
    """A loaded reward model with its tokenizer; see the module docstring."""

    def __init__(self, spec: ScorerSpec, model, tokenizer, *, max_length: int = DEFAULT_MAX_LENGTH):
        self.spec = spec
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.truncated = 0
        """Conversations cut to ``max_length`` since this scorer was loaded."""

    @property
    def name(self) -> str:
        return self.spec.name

    def score(self, conversations: Sequence[list[dict] | str], *,
              batch_size: int = 8) -> list[float]:
        return [s.score for s in self.score_detailed(conversations, batch_size=batch_size,
                                                     objectives=False)]

    def score_detailed(self, conversations: Sequence[list[dict] | str], *, batch_size: int = 8,
                       objectives: bool = True) -> list[Scored]:
        """Scores plus, for ArmoRM when ``objectives``, the per-objective rewards."""
        import torch

        from reward.data import pad_sequences, sequence_rewards, tokenize_conversations

        for n, conversation in enumerate(conversations):
            if not isinstance(conversation, str) and (
                    not conversation or conversation[-1].get("role") != "assistant"):
                raise ValueError(f"conversation {n + 1} must end with the assistant reply to score")
        ids = tokenize_conversations(self.tokenizer, list(conversations))
        for n, seq in enumerate(ids):
            if len(seq) > self.max_length:
                ids[n] = seq[-self.max_length:]
                self.truncated += 1
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        results: list[Scored | None] = [None] * len(ids)
        device = next(self.model.parameters()).device
        names = None
        if self.spec.kind == "armorm":
            from reward.armorm import objective_names

            names = objective_names(self.model.num_objectives)
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                input_ids, attention_mask = pad_sequences([ids[i] for i in chunk],
                                                          self.tokenizer.pad_token_id)
                input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
                if self.spec.kind == "armorm":
                    out = self.model(input_ids=input_ids, attention_mask=attention_mask)
                    scores = out.score.float().cpu().tolist()
                    per_objective = out.rewards.float().cpu().tolist()
                    for i, s, r in zip(chunk, scores, per_objective):
                        results[i] = Scored(s, dict(zip(names, r)) if objectives else None)
                else:
                    scores = sequence_rewards(self.model, input_ids, attention_mask).cpu().tolist()
                    for i, s in zip(chunk, scores):
                        results[i] = Scored(s)
        return results


def load_scorer(spec: str | ScorerSpec, *, device: str | None = None,
                max_length: int = DEFAULT_MAX_LENGTH, dtype=None) -> RewardScorer:
    """Loads a ``bt:DIR`` or ``armorm:DIR`` reward model (bf16 on a GPU, else fp32)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from reward.armorm import GATING_PATTERN_TEXT, LlamaForRewardModelWithGating
    from reward.modeling import load_reward_tokenizer

    spec = spec if isinstance(spec, ScorerSpec) else parse_scorer(spec)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    tokenizer = load_reward_tokenizer(spec.path)
    try:
        if spec.kind == "armorm":
            model = LlamaForRewardModelWithGating.from_pretrained(spec.path, dtype=dtype)
            pattern = tokenizer.encode(GATING_PATTERN_TEXT, add_special_tokens=False)
            if not getattr(model.config, "gating_token_pattern", None):
                model.config.gating_token_pattern = pattern
        else:
            model = AutoModelForSequenceClassification.from_pretrained(spec.path, dtype=dtype)
            if model.config.pad_token_id is None:
                model.config.pad_token_id = tokenizer.pad_token_id
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load reward model {spec.path}: "
                                 f"{str(exc).strip().splitlines()[0]}") from None
    return RewardScorer(spec, model.to(device), tokenizer, max_length=max_length)
