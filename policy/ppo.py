"""PPO against a reward model, with a per-token KL penalty to the starting policy: the recipe.

    rankloop train ppo --scorer bt:runs/rm --model M --output runs/ppo
    accelerate launch --config_file launch/configs/zero3-8gpu.yaml -m launch.cli \\
        train ppo --scorer bt:runs/rm --output runs/ppo

Each step: 1. every process samples one response for each of its share of the step's prompts
from the current policy (through the ``Sampler`` interface: the transformers backend runs on
the policy's own weights, a vLLM engine gets the new weights after every update), 2. scores
them with the reward model, 3. computes per-token rewards (−β·KL to the frozen reference, the
score on the last token), values and GAE advantages, 4. runs several epochs of clipped policy
and value updates over minibatches; gradients are averaged over the processes.

Sampled text is tokenized again to score it (``text + EOS`` when the sampler stopped on EOS),
so any backend works; log-probs always come from the same forward pass as the update, with
logits divided by the sampling temperature. The value head is a linear layer on the policy's
last hidden state (shared trunk). Under ZeRO-3 the policy and value head are partitioned; the
frozen reference is a whole copy on every process (loaded before DeepSpeed starts, in bf16 on
GPUs), which costs memory but no communication. Advantages are whitened over the whole
rollout, across processes.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from data.errors import ConfigError
from policy.logprobs import TokenBatch, forward, pack, response_window, shifted_logprobs
from training.metrics import check_report_to
from training.optim import check_optimizer_settings

RewardFn = Callable[[Sequence[list[dict]], Sequence[str]], list[float]]
"""(prompt conversations, response texts) → one reward per response."""



# Default learning rate by model size (weights, rate) where the loop trains PPO: 1e-6 for 8B
# (the recipe's reference), and 1e-5 for SmolLM2-135M, at which the reward rises within a few
# steps at a KL of about 0.4 (``training.models.size_scaled_learning_rate``).
LEARNING_RATES = ((134.5e6, 1e-5), (8.03e9, 1e-6))


@dataclass
class PPOConfig:
    output: str
    """Folder for the trained policy (a Hugging Face folder), ``value_head.pt``,
    ``metrics.jsonl`` and ``checkpoints/``."""
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
    """Prompts per rollout over all processes (one response each)."""
    minibatch_size: int = 4
    """Responses per gradient step over all processes; must divide ``rollout_batch_size``."""
    ppo_epochs: int = 4
    """Passes over each rollout."""
    max_new_tokens: int = 64
    """Longest response sampled, in tokens."""
    temperature: float = 0.7
    """Sampling temperature; logits are divided by it when scoring log-probs."""
    top_p: float = 1.0
    """Nucleus sampling mass (1.0 keeps the log-probs those of the sampling distribution)."""
    backend: str = "transformers"
    """Rollout sampler: ``transformers`` (on the policy's weights) or ``vllm`` (an engine given
    the new weights after every update; one process only)."""
    vllm_memory_fraction: float = 0.3
    """vLLM: share of the GPU's memory (of RAM on CPU) its KV cache takes; the rest is left to
    training, which shares the device."""
    kl_coef: float = 0.05
    """β of the per-token penalty −β·(log π − log π_ref)."""
    target_kl: float | None = None
    """When set, β adapts so the KL per response tracks this value (Ziegler et al.)."""
    kl_horizon: int = 10_000
    """Adaptive β: responses over which β can change by 20%."""
    gamma: float = 1.0
    """GAE discount per token."""
    lam: float = 0.95
    """GAE λ: how far advantages look ahead (1: Monte Carlo, 0: one step)."""
    clip_range: float = 0.2
    """ε of the clipped policy objective."""
    value_clip_range: float = 0.2
    """ε of the clipped value loss."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    whiten_advantages: bool = True
    """Normalise advantages to mean 0, std 1 over the whole rollout (every process's share)."""
    missing_eos_penalty: float | None = None
    """Subtracted from the score of responses cut by ``max_new_tokens``."""
    learning_rate: float = 1e-6
    """AdamW learning rate (constant)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (β1, β2)."""
    adam_eps: float = 1e-5
    """AdamW ε (1e-5, as in TRL's and cleanrl's PPO)."""
    max_grad_norm: float | None = 1.0
    """Gradients are clipped to this global norm; 0 or None: no clipping."""
    bf16: bool | None = None
    """bf16 mixed precision; None follows the accelerate config, else on when a GPU exists."""
    report_to: tuple[str, ...] = ()
    """Trackers that receive the metrics too: ``tensorboard`` and/or ``wandb``
    (``metrics.jsonl`` is always written)."""
    seed: int = 0
    """Seeds the value head, the prompt order and sampling."""
    log_every: int = 1
    """Log metrics every this many steps."""
    save_every: int = 50
    """Write a resumable checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 1
    """How many of the newest complete checkpoints to keep."""
    resume: bool = True
    """Continue from the newest checkpoint in ``output/checkpoints`` when there is one."""

    def __post_init__(self) -> None:
        for name in ("total_steps", "rollout_batch_size", "minibatch_size", "ppo_epochs",
                     "max_new_tokens", "log_every", "save_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', ' ')} must be at least 1")
        if self.rollout_batch_size % self.minibatch_size:
            raise ConfigError(f"minibatch size {self.minibatch_size} must divide the rollout "
                             f"batch size {self.rollout_batch_size}")
        if self.temperature <= 0:
            raise ConfigError("temperature must be above 0")
        if self.backend not in ("transformers", "vllm"):
            raise ConfigError(f"backend must be transformers or vllm, not {self.backend!r}")
        check_optimizer_settings(self)
        self.report_to = check_report_to(self.report_to)


@dataclass(frozen=True)
class PPOPlan:
    """The batch arithmetic, computed once: every process derives the same plan."""

    world_size: int
    rollout_batch_size: int
    minibatch_size: int

    @property
    def per_device_rollout(self) -> int:
        return self.rollout_batch_size // self.world_size

    @property
    def per_device_minibatch(self) -> int:
        return self.minibatch_size // self.world_size

    @property
    def minibatches_per_epoch(self) -> int:
        return self.per_device_rollout // self.per_device_minibatch

    def check(self) -> None:
        if self.minibatch_size % self.world_size:
            raise ConfigError(f"minibatch size {self.minibatch_size} must be a multiple of the "
                             f"{self.world_size} processes")
        assert self.rollout_batch_size == self.world_size * self.per_device_rollout
        assert self.minibatch_size == self.world_size * self.per_device_minibatch
        assert self.per_device_rollout == self.minibatches_per_epoch * self.per_device_minibatch


def rollout_prompts(step: int, n_prompts: int, batch_size: int, seed: int) -> list[int]:
    """Prompt indices of 0-based ``step``: consecutive slices of a stream of seeded
    permutations (one per pass over the prompts), so the data position follows from the step
    alone and a resumed run continues where it stopped."""
    picked: list[int] = []
    position = step * batch_size
    while len(picked) < batch_size:
        epoch, offset = divmod(position, n_prompts)
        permutation = list(range(n_prompts))
        random.Random(f"{seed}-{epoch}").shuffle(permutation)
        take = min(batch_size - len(picked), n_prompts - offset)
        picked += permutation[offset:offset + take]
        position += take
    return picked


class PolicyWithValueHead(torch.nn.Module):
    """A causal LM and a scalar value head on its last hidden state."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        self.value_head = torch.nn.Linear(lm.config.hidden_size, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, batch: TokenBatch, keep: int):
        """(logits ``[N, keep, V]``, values ``[N, keep]``) of the last ``keep`` positions:
        value t estimates the return from token t+1 on, aligned with the log-prob of token
        t+1."""
        out = forward(self.lm, batch, output_hidden_states=True, logits_to_keep=keep)
        values = self.value_head(out.hidden_states[-1][:, -keep:].float()).squeeze(-1)
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
    resumed_from_step: int | None = None
    main_process: bool = True
    """False on the other ranks of a distributed run, which should stay quiet."""

    def line(self) -> str:
        resumed = ("" if self.resumed_from_step is None
                   else f" (resumed at step {self.resumed_from_step})")
        return (f"policy saved to {self.output}: {self.steps} PPO steps in {self.seconds:.0f} s"
                f"{resumed}; mean reward {self.first_reward:.4f} (first step) → "
                f"{self.last_reward:.4f} (last); KL to the start {self.last_kl:.4f}")


def scorer_reward(spec: str, *, batch_size: int = 8) -> RewardFn:
    """A reward function over a ``bt:DIR``/``armorm:DIR`` reward model, on this process's GPU
    (``LOCAL_RANK``) when there is one."""
    from reward.score import load_scorer

    device = (f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available()
              else "cpu")
    scorer = load_scorer(spec, device=device)

    def reward(prompts: Sequence[list[dict]], responses: Sequence[str]) -> list[float]:
        return scorer.score([list(p) + [{"role": "assistant", "content": r}]
                             for p, r in zip(prompts, responses)], batch_size=batch_size)
    return reward


def function_reward(spec: str) -> RewardFn:
    """A reward written in Python, ``MODULE:FUNCTION`` (importable from the working directory),
    called as ``function(prompts, responses) -> list[float]``: for rule-based rewards such as
    format checks or unit tests."""
    from data.score_functions import load_score_function

    return load_score_function(spec, what="reward function", noun="rewards")


def load_prompt_messages(config: PPOConfig, tokenizer) -> list[list[dict]]:
    from data.chat import format_and_filter
    from data.prompts import load_prompts

    loaded = load_prompts(config.prompts, limit=config.limit)
    kept, _ = format_and_filter(tokenizer, loaded.prompts, config.max_prompt_tokens)
    if not kept:
        raise ConfigError("no prompts left to train on")
    return [k.prompt.messages for k in kept]


def push_weights(lm, sampler) -> None:
    """Hands the policy's current weights to a sampler that keeps its own copy (vLLM), all in
    one call (vLLM reloads whole fused layers); under ZeRO-3 they are gathered from their
    shards for the call."""
    named = list(lm.named_parameters())
    if not any(hasattr(p, "ds_id") for _, p in named):  # whole weights on this process
        sampler.sync_weights((name, p.detach()) for name, p in named)
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters([p for _, p in named]):
        sampler.sync_weights([(name, p.detach()) for name, p in named])


def _plan_fingerprint(config: PPOConfig, plan: PPOPlan, n_prompts: int) -> dict:
    """What must match for a checkpoint to be resumed."""
    return {"model": config.model, "prompts": n_prompts, "seed": config.seed,
            "rollout_batch_size": plan.rollout_batch_size, "world_size": plan.world_size,
            "total_steps": config.total_steps}


def train_ppo(config: PPOConfig, *, reward_fn: RewardFn,
              prompts: Sequence[list[dict]] | None = None, sampler=None,
              progress: bool = False) -> PPOSummary:
    """Runs the recipe on this process's share of every rollout. Build ``reward_fn`` before
    calling (a reward model loaded after DeepSpeed starts would be partitioned). ``prompts``
    replaces reading ``config.prompts``; ``sampler`` replaces the one ``config.backend``
    names (single process; it must offer ``sync_weights`` unless it shares the policy's
    weights)."""
    from accelerate.utils import set_seed
    from tqdm import tqdm

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
    from policy.pair_batches import response_token_ids
    from policy.sampling import SamplingConfig, TransformersSampler, make_sampler
    from training.accel import make_accelerator, mixed_precision
    from training.checkpoints import resume_checkpoint, save_checkpoint
    from training.metrics import MetricsLog
    from training.models import check_tokenizer_matches, load_policy, load_tokenizer, resolve_model
    from training.optim import clip_gradients
    from training.steps import prepare_optimization

    started = time.perf_counter()
    output = Path(config.output)
    model_path = resolve_model(config.model)

    # 1. Tokenizer, prompts and the frozen reference, before DeepSpeed starts: the reference
    #    stays whole on every process.
    tokenizer = load_tokenizer(model_path, padding_side="left")
    check_tokenizer_matches(model_path, tokenizer)
    messages = list(prompts) if prompts is not None else load_prompt_messages(config, tokenizer)
    if not messages:
        raise ConfigError("no prompts to train on")
    formatted = [format_chat(tokenizer, m) for m in messages]
    prompt_ids = tokenizer(formatted, add_special_tokens=False)["input_ids"]
    half = mixed_precision(config.bf16) == "bf16"
    reference = load_policy(model_path, dtype=torch.bfloat16 if half else None)
    reference.eval().requires_grad_(False)

    # 2. Processes, the batch plan, the policy with its value head (partitioned under ZeRO-3).
    accelerator = make_accelerator(gradient_accumulation_steps=1, bf16=config.bf16,
                                   report_to=config.report_to, output=output)
    rank, world, say = accelerator.process_index, accelerator.num_processes, accelerator.print
    plan = PPOPlan(world, config.rollout_batch_size, config.minibatch_size)
    plan.check()
    if config.backend == "vllm" and sampler is None and world > 1:
        raise ConfigError("vLLM rollouts run in one process; under accelerate launch use "
                         "--backend transformers")
    say(f"rankloop: {len(messages)} prompts; {config.total_steps} PPO steps of "
        f"{config.rollout_batch_size} responses ({world} processes × {plan.per_device_rollout}),"
        f" minibatches of {config.minibatch_size} ({world} processes × "
        f"{plan.per_device_minibatch})")
    set_seed(config.seed + rank)  # processes sample different responses
    reference.to(accelerator.device)
    policy = PolicyWithValueHead(load_policy(model_path))
    policy, optimizer, _ = prepare_optimization(accelerator, policy, config, config.total_steps,
                                                micro_batch_size=plan.per_device_minibatch)
    lm = accelerator.unwrap_model(policy).lm
    kl_ctl = AdaptiveKLController(config.kl_coef, config.target_kl or 1.0, config.kl_horizon)

    # 3. Resume from the newest checkpoint when its plan matches this one.
    fingerprint = _plan_fingerprint(config, plan, len(messages))
    state = resume_checkpoint(accelerator, output, fingerprint, resume=config.resume, say=say)
    start_step = state["step"] if state else 0
    resumed_from = state["step"] if state else None
    if state:
        kl_ctl.value = state["kl_coef"]
    log = MetricsLog(output / "metrics.jsonl", enabled=accelerator.is_main_process,
                     keep_up_to_step=resumed_from, accelerator=accelerator,
                     settings=asdict(config))

    # 4. The sampler: transformers on the policy's own weights, or an engine kept in sync.
    own_sampler = sampler is None
    if own_sampler and config.backend == "transformers":
        sampler = TransformersSampler.from_model(
            lm, tokenizer, batch_size=plan.per_device_rollout,
            # ZeRO-3 gathers weights layer by layer in every forward, on all processes
            # together: each one must keep stepping until the longest response is done.
            generate_options={"synced_gpus": world > 1})
    elif own_sampler:
        sampler = make_sampler("vllm", model_path, SamplingConfig(k=1, seed=config.seed + rank),
                               gpu_memory_utilization=config.vllm_memory_fraction,
                               max_model_len=config.max_prompt_tokens + config.max_new_tokens)
    shares_weights = getattr(sampler, "model", None) is lm
    if not shares_weights and start_step:
        push_weights(lm, sampler)
    sampling = SamplingConfig(k=1, temperature=config.temperature, top_p=config.top_p,
                              max_new_tokens=config.max_new_tokens, seed=config.seed)

    first_reward = last_reward = last_kl = float("nan")
    bar = tqdm(total=config.total_steps, initial=start_step, desc="ppo",
               disable=not (progress and accelerator.is_main_process))
    for step in range(start_step + 1, config.total_steps + 1):
        # 5. Rollout: one response for each of this process's prompts.
        chosen = rollout_prompts(step - 1, len(messages), config.rollout_batch_size,
                                 config.seed)
        chosen = chosen[rank * plan.per_device_rollout:(rank + 1) * plan.per_device_rollout]
        policy.eval()
        samples = [s[0] for s in sampler.generate([formatted[i] for i in chosen], sampling)]
        texts = [s.text for s in samples]
        responses = [ids if s.finish_reason == "stop" else ids[:-1] for s, ids in
                     zip(samples, response_token_ids(tokenizer, texts))]
        responses = [r if r else [tokenizer.eos_token_id] for r in responses]

        # 6. Score, penalise missing EOS.
        scores = torch.tensor(reward_fn([messages[i] for i in chosen], texts),
                              dtype=torch.float32)
        cut = torch.tensor([s.finish_reason != "stop" for s in samples], dtype=torch.float32)
        if config.missing_eos_penalty is not None:
            scores = scores - config.missing_eos_penalty * cut
        scores = scores.to(accelerator.device)

        # 7. Old log-probs, reference log-probs, values; per-token rewards; GAE.
        tokens = pack([prompt_ids[i] for i in chosen], responses,
                      tokenizer.pad_token_id).to(accelerator.device)
        # Every tensor below covers only the positions from the first response token on.
        keep = response_window(tokens)
        with torch.no_grad():
            logits, values = policy(tokens, keep)
            logprobs, mask = shifted_logprobs(logits.float(), tokens, config.temperature)
            ref_logits = forward(reference, tokens, logits_to_keep=keep).logits
            ref_logprobs, _ = shifted_logprobs(ref_logits.float(), tokens, config.temperature)
            mask = mask.float()
            values = values[:, :-1] * mask
            kl = (logprobs - ref_logprobs) * mask
            rewards = -kl_ctl.value * kl
            last = mask.cumsum(-1).argmax(-1)  # the last response token of each row
            rewards[torch.arange(len(chosen), device=rewards.device), last] += scores
            advantages, returns = gae(rewards, values, mask, config.gamma, config.lam)
            if config.whiten_advantages:
                # Over the whole rollout, all processes together: the same advantages
                # however the rollout is split.
                advantages = masked_whiten(
                    advantages, mask,
                    reduce_sum=lambda t: accelerator.reduce(t, reduction="sum"))
        rollout = Rollout(tokens, logprobs, ref_logprobs, values, rewards, advantages, returns,
                          mask, scores, mask.sum(-1))

        # 8. PPO epochs over shuffled minibatches; gradients averaged over the processes.
        policy.train()
        stats: dict[str, list[float]] = {k: [] for k in (
            "policy_loss", "value_loss", "clipfrac", "value_clipfrac", "approx_kl", "entropy")}
        for _ in range(config.ppo_epochs):
            permutation = torch.randperm(plan.per_device_rollout)
            for start in range(0, plan.per_device_rollout, plan.per_device_minibatch):
                mb = rollout.select(permutation[start:start + plan.per_device_minibatch]
                                    .to(accelerator.device))
                logits, new_values = policy(mb.tokens, keep)
                new_logprobs, _ = shifted_logprobs(logits.float(), mb.tokens, config.temperature)
                new_values = new_values[:, :-1]
                policy_loss, clipfrac = ppo_clip_loss(new_logprobs, mb.logprobs, mb.advantages,
                                                      mb.mask, config.clip_range)
                value_loss, value_clipfrac = clipped_value_loss(
                    new_values, mb.values, mb.returns, mb.mask, config.value_clip_range)
                accelerator.backward(policy_loss + config.vf_coef * value_loss)
                clip_gradients(accelerator, policy.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
                with torch.no_grad():
                    log_ratio = new_logprobs - mb.logprobs
                    stats["approx_kl"].append(float(masked_mean(0.5 * log_ratio ** 2, mb.mask)))
                    entropy = entropy_from_logits(logits[:, :-1].float() / config.temperature)
                    stats["entropy"].append(float(masked_mean(entropy, mb.mask)))
                for key, value in (("policy_loss", policy_loss), ("value_loss", value_loss),
                                   ("clipfrac", clipfrac), ("value_clipfrac", value_clipfrac)):
                    stats[key].append(float(value.detach()))
        if not shares_weights:
            push_weights(lm, sampler)

        # 9. Means over every process; adapt β (the same on every process); log.
        local = torch.tensor([
            len(chosen), float(scores.sum()), float(kl.sum()), float(rollout.lengths.sum()),
            float(cut.sum()), float((rewards.sum(-1) - scores).sum()),
            *(sum(v) / len(v) for v in stats.values())], device=accelerator.device)
        totals = accelerator.reduce(local, reduction="sum").cpu()
        n = float(totals[0])
        mean_score, kl_per_response = float(totals[1]) / n, float(totals[2]) / n
        if config.target_kl is not None:
            kl_ctl.update(kl_per_response, config.rollout_batch_size)
        first_reward = mean_score if step == start_step + 1 else first_reward
        last_reward, last_kl = mean_score, kl_per_response
        if step % config.log_every == 0 or step == config.total_steps:
            metrics = {"objective/reward": mean_score, "objective/kl": kl_per_response,
                       "objective/kl_coef": kl_ctl.value,
                       "objective/non_score_reward": float(totals[5]) / n,
                       "response/length": float(totals[3]) / n,
                       "response/missing_eos": float(totals[4]) / n}
            metrics.update({f"policy/{k}" if k in ("clipfrac", "approx_kl", "entropy")
                            else f"loss/{k}": float(v) / world
                            for k, v in zip(stats, totals[6:])})
            log.log(step, metrics)
        bar.update(1)
        if step % config.save_every == 0 or step == config.total_steps:
            save_checkpoint(accelerator, output, step,
                            {"plan": fingerprint, "kl_coef": kl_ctl.value},
                            keep=config.keep_checkpoints)
    bar.close()

    # 10. Save the policy as a plain Hugging Face folder (gathered from ZeRO-3 shards), the
    #     value head beside it.
    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(policy)  # every process takes part under ZeRO-3
    if accelerator.is_main_process:
        lm_state = {k[len("lm."):]: v for k, v in state_dict.items() if k.startswith("lm.")}
        head_state = {k[len("value_head."):]: v for k, v in state_dict.items()
                      if k.startswith("value_head.")}
        lm.config.use_cache = True
        lm.save_pretrained(output, state_dict=lm_state, safe_serialization=True)
        tokenizer.save_pretrained(output)
        torch.save(head_state, output / "value_head.pt")
        settings = {k: v for k, v in asdict(config).items() if k != "output"}
        settings.update(world_size=world, prompts=len(messages))
        (output / "ppo_training.json").write_text(json.dumps(
            {"base_model": config.model, "settings": settings}, indent=2, default=str) + "\n")
    accelerator.wait_for_everyone()
    log.close()
    if own_sampler:
        sampler.close()
    return PPOSummary(str(output), config.total_steps, first_reward, last_reward, last_kl,
                      time.perf_counter() - started, resumed_from, accelerator.is_main_process)
