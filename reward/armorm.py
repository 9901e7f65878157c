"""ArmoRM (Wang et al. 2024, "Interpretable Preferences via Multi-Objective Reward Modeling and
Mixture-of-Experts"), implemented natively so the public ``RLHFlow/ArmoRM-Llama3-8B-v0.1``
checkpoint loads without ``trust_remote_code``.

For a conversation whose hidden states are h ``[T, H]``:

    rewards = regression_layer(h[last token])                          [K]  objective rewards
    gate    = logit_scale · softmax(MLP(h[prompt end]) / temperature)  [K]  mixture weights
    score   = Σ_k gate_k · (rewards @ reward_transform_matrix)_k       scalar

with K = 19 objectives, a 3-hidden-layer ReLU MLP and temperature 10. The prompt end is the
``<|eot_id|>`` that closes the last user turn: the last place where
``<|eot_id|><|start_header_id|>assistant<|end_header_id|>`` occurs, so in a multi-turn
conversation the gate sees everything up to the reply being scored.

Parameter names are the checkpoint's: ``model.*`` (the Llama backbone), ``regression_layer``,
``reward_transform_matrix``, ``gating.layers.{i}``, ``gating.logit_scale``. Its config is a
plain Llama config (``model_type: llama``) plus optional ``num_objectives``,
``gating_temperature``, ``gating_hidden_dim``, ``gating_n_hidden`` and, written by RankLoop for
tokenizers other than Llama 3's, ``gating_token_pattern``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

ARCHITECTURE = "LlamaForRewardModelWithGating"
# The 19 objectives in the checkpoint's output order, as listed on its model card.
ARMORM_OBJECTIVES = (
    "helpsteer-helpfulness", "helpsteer-correctness", "helpsteer-coherence",
    "helpsteer-complexity", "helpsteer-verbosity", "ultrafeedback-overall_score",
    "ultrafeedback-instruction_following", "ultrafeedback-truthfulness",
    "ultrafeedback-honesty", "ultrafeedback-helpfulness", "beavertails-is_safe",
    "prometheus-score", "argilla-overall_quality", "argilla-judge_lm", "code-complexity",
    "code-style", "code-explanation", "code-instruction-following", "code-readability",
)
GATING_PATTERN_TEXT = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
# GATING_PATTERN_TEXT in the Llama 3 tokenizer, for configs that do not carry their own.
LLAMA3_GATING_PATTERN = (128009, 128006, 78191, 128007)


class GatingNetwork(nn.Module):
    """ReLU MLP → softmax(x / temperature) × logit_scale: one weight per objective."""

    def __init__(self, in_features: int, out_features: int, *, hidden_dim: int, n_hidden: int,
                 temperature: float):
        super().__init__()
        self.temperature = temperature
        self.logit_scale = nn.Parameter(torch.ones(1))
        widths = [in_features] + [hidden_dim] * n_hidden + [out_features]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[B, H]`` → gate ``[B, K]``."""
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        x = self.layers[-1](x)
        return F.softmax(x / self.temperature, dim=-1) * self.logit_scale[0]


@dataclass
class ArmoRMOutput(ModelOutput):
    """score ``[B]``; rewards ``[B, K]`` (per-objective, before the transform); gating_output
    ``[B, K]``; gate_positions and last_positions ``[B]``; logits ``[B, 1]`` (= score)."""

    score: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    gating_output: torch.Tensor | None = None
    gate_positions: torch.Tensor | None = None
    last_positions: torch.Tensor | None = None
    logits: torch.Tensor | None = None


def last_token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` mask → ``[B]`` index of each row's last real token (left or right padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=1)


def find_gate_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        pattern: tuple[int, ...] | list[int]) -> torch.Tensor:
    """``[B]`` start of the last occurrence of ``pattern`` in each row's real tokens."""
    width = len(pattern)
    if input_ids.shape[1] < width:
        raise ValueError("sequence shorter than the gating token pattern")
    windows = input_ids.unfold(1, width, 1)  # [B, T-width+1, width]
    real = attention_mask.long().unfold(1, width, 1).all(dim=-1)
    target = torch.tensor(list(pattern), device=input_ids.device)
    hits = (windows == target).all(dim=-1) & real
    missing = (~hits.any(dim=1)).nonzero().flatten().tolist()
    if missing:
        raise ValueError(
            f"row {missing[0]} has no assistant turn after a user turn in the Llama 3 chat format "
            f"({GATING_PATTERN_TEXT!r}), which ArmoRM needs to place its gate"
        )
    starts = torch.arange(hits.shape[1], device=input_ids.device)
    return (starts * hits.long()).argmax(dim=1)


class LlamaForRewardModelWithGating(LlamaPreTrainedModel):
    """ArmoRM; the class name matches the checkpoint's ``architectures`` entry."""

    def __init__(self, config):
        super().__init__(config)
        self.num_objectives = getattr(config, "num_objectives", len(ARMORM_OBJECTIVES))
        self.model = LlamaModel(config)
        self.regression_layer = nn.Linear(config.hidden_size, self.num_objectives, bias=False)
        # A fixed (not trained) mixing of objectives; a Parameter because the checkpoint has it.
        self.reward_transform_matrix = nn.Parameter(torch.eye(self.num_objectives),
                                                    requires_grad=False)
        self.gating = GatingNetwork(
            config.hidden_size, self.num_objectives,
            hidden_dim=getattr(config, "gating_hidden_dim", 1024),
            n_hidden=getattr(config, "gating_n_hidden", 3),
            temperature=getattr(config, "gating_temperature", 10),
        )
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, GatingNetwork):
            init.ones_(module.logit_scale)
        elif isinstance(module, LlamaForRewardModelWithGating):
            init.eye_(module.reward_transform_matrix)

    @property
    def gating_token_pattern(self) -> tuple[int, ...]:
        return tuple(getattr(self.config, "gating_token_pattern", None) or LLAMA3_GATING_PATTERN)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, **kwargs) -> ArmoRMOutput:
        """input_ids, attention_mask ``[B, T]``, padded on either side."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:
            # Real tokens count from 0 whichever side the padding is on.
            position_ids = (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids, use_cache=False, **kwargs).last_hidden_state
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        last = last_token_positions(attention_mask)
        gate_at = find_gate_positions(input_ids, attention_mask, self.gating_token_pattern)
        rewards = self.regression_layer(hidden[rows, last])
        gate = self.gating(hidden[rows, gate_at])
        transformed = rewards.float() @ self.reward_transform_matrix.float()
        score = (gate.float() * transformed).sum(dim=-1)
        return ArmoRMOutput(score=score, rewards=rewards, gating_output=gate,
                            gate_positions=gate_at, last_positions=last, logits=score[:, None])


def objective_names(num_objectives: int) -> tuple[str, ...]:
    if num_objectives == len(ARMORM_OBJECTIVES):
        return ARMORM_OBJECTIVES
    return tuple(f"objective_{i}" for i in range(num_objectives))
