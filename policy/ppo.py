"""PPO against a reward model, with a per-token KL penalty to the starting policy: the recipe.

    rankloop train ppo --scorer bt:runs/rm --model M --output runs/ppo

Each iteration: 1. sample one response per prompt from the current policy (through the
``Sampler`` interface; the transformers backend shares the policy's weights, so it always
samples the latest policy), 2. score the responses with the reward model, 3. compute per-token
rewards (−β·KL to the frozen reference, the score on the last token), values and GAE
advantages, 4. run several epochs of clipped policy and value updates over minibatches.

Sampled text is tokenized again to score it (``text + EOS`` when the sampler stopped on EOS),
so any backend works, vLLM included; log-probs always come from the same forward pass as the
update, with logits divided by the sampling temperature. The value head is a linear layer on
the policy's last hidden state (shared trunk). This recipe runs in one process; REBEL
(``policy/rebel.py``) is the one for ZeRO-3 across processes.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from policy.logprobs import TokenBatch, forward, pack, shifted_logprobs

RewardFn = Callable[[Sequence[list[dict]], Sequence[str]], list[float]]
"""(prompt conversations, response texts) → one reward per response."""


@dataclass
class PPOConfig:
    output: str
    """Folder for the trained policy (a Hugging Face folder), ``value_head.pt`` and
    ``metrics.jsonl``."""
    model: str = "default"
    """Starting policy, also the frozen KL reference."""
    prompts: str | None = None
    """Prompt source (file, ``save_to_disk`` folder, Hub id); None = the bundled prompts."""
    limit: int | None = None
    """Use at most this many prompts."""
    max_prompt_tokens: int = 1024
    """Prompts longer than this after chat formatting are dropped."""
    total_steps: int = 100
    """Rollout-and-update iterations."""
    rollout_batch_size: int = 16
    """Prompts per rollout (one response each)."""
    minibatch_size: int = 4
    """Responses per gradient step; must divide ``rollout_batch_size``."""
    ppo_epochs: int = 4
    """Passes over each rollout."""
    max_new_tokens: int = 64
    temperature: float = 0.7
    """Sampling temperature; logits are divided by it when scoring log-probs."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 keeps the log-probs those of the sampling distribution)."""
    kl_coef: float = 0.05
    """β of the per-token penalty −β·(log π − log π_ref)."""
    target_kl: float | None = None
    """When set, β adapts so the KL per response tracks this value (Ziegler et al.)."""
    kl_horizon: int = 10_000
    """Adaptive β: responses over which β can change by 20%."""
    gamma: float = 1.0
    lam: float = 0.95
    clip_range: float = 0.2
    """ε of the clipped policy objective."""
    value_clip_range: float = 0.2
    """ε of the clipped value loss."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    whiten_advantages: bool = True
    """Normalise advantages over each rollout to mean 0, std 1."""
    missing_eos_penalty: float | None = None
    """Subtracted from the score of responses cut by ``max_new_tokens``."""
    learning_rate: float = 1e-6
    max_grad_norm: float = 1.0
    seed: int = 0
    log_every: int = 1

    def __post_init__(self) -> None:
        for name in ("total_steps", "rollout_batch_size", "minibatch_size", "ppo_epochs",
                     "max_new_tokens", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be at least 1")
        if self.rollout_batch_size % self.minibatch_size:
            raise ValueError(f"minibatch size {self.minibatch_size} must divide the rollout "
                             f"batch size {self.rollout_batch_size}")
        if self.temperature <= 0:
            raise ValueError("temperature must be above 0")

    @property
    def minibatches_per_epoch(self) -> int:
        return self.rollout_batch_size // self.minibatch_size


class PolicyWithValueHead(torch.nn.Module):
    """A causal LM and a scalar value head on its last hidden state."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        self.value_head = torch.nn.Linear(lm.config.hidden_size, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, batch: TokenBatch):
        """(logits ``[N, T, V]``, values ``[N, T]``): value t estimates the return from token
        t+1 on, aligned with the log-prob of token t+1."""
        out = forward(self.lm, batch, output_hidden_states=True)
        values = self.value_head(out.hidden_states[-1].float()).squeeze(-1)
        return out.logits, values


@dataclass
class Rollout:
    """One rollout of N responses on the ``[N, T−1]`` next-token grid of ``tokens``.

    logprobs, ref_logprobs, values, rewards, advantages, returns, mask: ``[N, T−1]``;
    scores, lengths: ``[N]``.
    """

    tokens: TokenBatch
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    mask: torch.Tensor
    scores: torch.Tensor
    lengths: torch.Tensor

    def select(self, rows) -> Rollout:
        return Rollout(TokenBatch(*(t[rows] for t in (
            self.tokens.input_ids, self.tokens.attention_mask, self.tokens.position_ids,
            self.tokens.response_mask))), *(getattr(self, f)[rows] for f in (
                "logprobs", "ref_logprobs", "values", "rewards", "advantages", "returns",
                "mask", "scores", "lengths")))


@dataclass
class PPOSummary:
    output: str
    steps: int
    first_reward: float
    last_reward: float
    last_kl: float
    seconds: float

    def line(self) -> str:
        return (f"policy saved to {self.output}: {self.steps} PPO steps in {self.seconds:.0f} s; "
                f"mean reward {self.first_reward:.4f} (first step) → {self.last_reward:.4f} "
                f"(last); KL to the start {self.last_kl:.4f}")


def scorer_reward(spec: str, *, batch_size: int = 8) -> RewardFn:
    """A reward function over a ``bt:DIR``/``armorm:DIR`` reward model."""
    from reward.score import load_scorer

    scorer = load_scorer(spec)

    def reward(prompts: Sequence[list[dict]], responses: Sequence[str]) -> list[float]:
        return scorer.score([list(p) + [{"role": "assistant", "content": r}]
                             for p, r in zip(prompts, responses)], batch_size=batch_size)
    return reward


def load_prompt_messages(config: PPOConfig, tokenizer) -> list[list[dict]]:
    from data.chat import format_and_filter
    from data.prompts import load_prompts

    loaded = load_prompts(config.prompts, limit=config.limit)
    kept, _ = format_and_filter(tokenizer, loaded.prompts, config.max_prompt_tokens)
    if not kept:
        raise ValueError("no prompts left to train on")
    return [k.prompt.messages for k in kept]


def train_ppo(config: PPOConfig, *, reward_fn: RewardFn,
              prompts: Sequence[list[dict]] | None = None, sampler=None) -> PPOSummary:
    """Runs the recipe. ``prompts`` replaces reading ``config.prompts``; ``sampler`` replaces
    the transformers sampler that shares the policy's weights (a sampler of another backend
    must be given the new weights by its caller)."""
    from data.chat import format_chat
    from policy.losses import (
        AdaptiveKLController,
        clipped_value_loss,
        entropy_from_logits,
        gae,
        masked_mean,
        masked_whiten,
        ppo_clip_loss,
    )
    from policy.models import resolve_model
    from policy.rebel import load_policy, response_token_ids
    from policy.sampling import SamplingConfig, TransformersSampler
    from reward.metrics import MetricsLog

    torch.manual_seed(config.seed)
    output = Path(config.output)
    model_path = resolve_model(config.model)

    # 1. Policy with value head, frozen reference, prompts, sampler.
    lm = load_policy(model_path)
    policy = PolicyWithValueHead(lm)
    reference = copy.deepcopy(lm).eval().requires_grad_(False)
    own_sampler = sampler is None
    if own_sampler:
        sampler = TransformersSampler(model_path, seed=config.seed,
                                      batch_size=config.rollout_batch_size)
        sampler.model = lm  # generation always sees the latest weights
    tokenizer = sampler.tokenizer if own_sampler else None
    if tokenizer is None:
        from policy.models import load_tokenizer

        tokenizer = load_tokenizer(model_path)
    messages = list(prompts) if prompts is not None else load_prompt_messages(config, tokenizer)
    formatted = [format_chat(tokenizer, m) for m in messages]
    prompt_ids = tokenizer(formatted, add_special_tokens=False)["input_ids"]
    optimizer = torch.optim.AdamW(policy.parameters(), lr=config.learning_rate, eps=1e-5)
    kl_ctl = AdaptiveKLController(config.kl_coef, config.target_kl or 1.0, config.kl_horizon)
    sampling = SamplingConfig(k=1, temperature=config.temperature, top_p=config.top_p,
                              max_new_tokens=config.max_new_tokens, seed=config.seed)
    log = MetricsLog(output / "metrics.jsonl")
    order_rng = random.Random(config.seed)
    order: list[int] = []
    first_reward = last_reward = last_kl = float("nan")
    started = time.perf_counter()

    for step in range(1, config.total_steps + 1):
        # 2. Rollout: one response per prompt from the current policy.
        if len(order) < config.rollout_batch_size:
            fresh = list(range(len(messages)))
            order_rng.shuffle(fresh)
            order += fresh * max(1, -(-config.rollout_batch_size // len(fresh)))
        chosen, order = order[:config.rollout_batch_size], order[config.rollout_batch_size:]
        lm.eval()
        samples = [s[0] for s in sampler.generate([formatted[i] for i in chosen], sampling)]
        texts = [s.text for s in samples]
        responses = [ids if s.finish_reason == "stop" else ids[:-1] for s, ids in
                     zip(samples, response_token_ids(tokenizer, texts))]
        responses = [r if r else [tokenizer.eos_token_id] for r in responses]

        # 3. Score, penalise missing EOS.
        scores = torch.tensor(reward_fn([messages[i] for i in chosen], texts),
                              dtype=torch.float32)
        if config.missing_eos_penalty is not None:
            cut = torch.tensor([s.finish_reason != "stop" for s in samples])
            scores = scores - config.missing_eos_penalty * cut.float()

        # 4. Old log-probs, reference log-probs, values; per-token rewards; GAE.
        tokens = pack([prompt_ids[i] for i in chosen], responses, tokenizer.pad_token_id)
        with torch.no_grad():
            logits, values = policy(tokens)
            logprobs, mask = shifted_logprobs(logits, tokens, config.temperature)
            ref_logprobs, _ = shifted_logprobs(forward(reference, tokens).logits, tokens,
                                               config.temperature)
            values = values[:, :-1] * mask
            kl = (logprobs - ref_logprobs) * mask
            rewards = -kl_ctl.value * kl
            last = mask.cumsum(-1).argmax(-1)  # the last response token of each row
            rewards[torch.arange(len(chosen)), last] += scores
            advantages, returns = gae(rewards, values, mask, config.gamma, config.lam)
            if config.whiten_advantages:
                advantages = masked_whiten(advantages, mask)
        rollout = Rollout(tokens, logprobs, ref_logprobs, values, rewards, advantages, returns,
                          mask, scores, mask.sum(-1))

        # 5. PPO epochs over shuffled minibatches.
        lm.train()
        stats: dict[str, list[float]] = {k: [] for k in (
            "policy_loss", "value_loss", "clipfrac", "value_clipfrac", "approx_kl", "entropy")}
        for _ in range(config.ppo_epochs):
            permutation = torch.randperm(config.rollout_batch_size)
            for start in range(0, config.rollout_batch_size, config.minibatch_size):
                mb = rollout.select(permutation[start:start + config.minibatch_size])
                logits, new_values = policy(mb.tokens)
                new_logprobs, _ = shifted_logprobs(logits, mb.tokens, config.temperature)
                new_values = new_values[:, :-1]
                policy_loss, clipfrac = ppo_clip_loss(new_logprobs, mb.logprobs, mb.advantages,
                                                      mb.mask, config.clip_range)
                value_loss, value_clipfrac = clipped_value_loss(
                    new_values, mb.values, mb.returns, mb.mask, config.value_clip_range)
                loss = policy_loss + config.vf_coef * value_loss
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
                optimizer.step()
                with torch.no_grad():
                    log_ratio = new_logprobs - mb.logprobs
                    stats["approx_kl"].append(float(masked_mean(0.5 * log_ratio ** 2, mb.mask)))
                    entropy = entropy_from_logits(logits[:, :-1] / config.temperature)
                    stats["entropy"].append(float(masked_mean(entropy, mb.mask)))
                for key, value in (("policy_loss", policy_loss), ("value_loss", value_loss),
                                   ("clipfrac", clipfrac), ("value_clipfrac", value_clipfrac)):
                    stats[key].append(float(value.detach()))

        # 6. Adapt β, log.
        kl_per_response = float(kl.sum(-1).mean())
        if config.target_kl is not None:
            kl_ctl.update(kl_per_response, config.rollout_batch_size)
        mean_score = float(scores.mean())
        first_reward = mean_score if step == 1 else first_reward
        last_reward, last_kl = mean_score, kl_per_response
        if step % config.log_every == 0 or step == config.total_steps:
            metrics = {"objective/reward": mean_score, "objective/kl": kl_per_response,
                       "objective/kl_coef": kl_ctl.value,
                       "objective/non_score_reward": float((rewards.sum(-1) - scores).mean()),
                       "response/length": float(rollout.lengths.mean()),
                       "response/missing_eos": sum(s.finish_reason != "stop" for s in samples)
                       / len(samples)}
            metrics.update({f"policy/{k}" if k in ("clipfrac", "approx_kl", "entropy")
                            else f"loss/{k}": sum(v) / len(v) for k, v in stats.items()})
            log.log(step, metrics)

    # 7. Save the policy as a plain Hugging Face folder, the value head beside it.
    lm.config.use_cache = True
    lm.save_pretrained(output, safe_serialization=True)
    tokenizer.save_pretrained(output)
    torch.save(policy.value_head.state_dict(), output / "value_head.pt")
    (output / "ppo_training.json").write_text(json.dumps(
        {"base_model": config.model, "settings": asdict(config)}, indent=2, default=str) + "\n")
    log.close()
    if own_sampler:
        sampler.close()
    return PPOSummary(str(output), config.total_steps, first_reward, last_reward, last_kl,
                      time.perf_counter() - started)
