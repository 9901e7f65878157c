"""Policy step cost: REBEL updates/s vs the reference REBEL, DPO and PPO s/step vs TRL's.

Each comparison runs in the same invocation, on the same model and the same data.

    python3 bench/policy_step.py                       # both parts, tiny random Llama, CPU-sized
    python3 bench/policy_step.py --model default --pairs 2 --steps 3
    python3 bench/policy_step.py --only ppo --trl-path /tmp/trl-ppo
    python3 bench/policy_step.py --only dpo --dpo-batch 4 --dpo-steps 4 --dpo-rounds 2
    python3 bench/policy_step.py --only ppo --trl-path /tmp/trl-ppo --threads 1 --ppo-rounds 2
                                                       # steadier when other work shares the CPU

REBEL part:

- RankLoop: chosen and rejected in one forward pass, right-padded to the longest sequence of
  the micro-batch (``policy.pair_batches.collate``).
- Reference: every sequence padded to a fixed 1024 prompt + 2048 response tokens (prompt
  left-padded, response right-padded), chosen and rejected in two separate forward passes.

Both run the same REBEL loss, AdamW step and pairs from the same starting weights; π_t's
log-probs are computed before timing in both (the reference computes them at generation time).
Prints updates/s, useful (non-padding) tokens/s and padded tokens/s for each, and the ratios.

DPO part: ``policy.dpo.train_dpo`` and TRL's ``DPOTrainer`` (the installed trl), and
``policy.rebel.train_rebel`` beside them (TRL has no REBEL; its DPO step does the same work),
each in its own subprocess, train the same policy on the same text pairs with the same batch size, β, learning
rate, sigmoid loss and gradient clipping, both with the reference log-probs computed once
before training (TRL's ``precompute_ref_log_probs``) and no truncation. A step (forward of
chosen and rejected, backward, clipping, AdamW) is timed from one optimizer step to the next,
after one warm-up step.

PPO part: ``policy.ppo.train_ppo`` and TRL's ``PPOTrainer`` (``trl.experimental.ppo``, last
shipped in trl 1.12.0; trl 1.13+ has none), each in its own subprocess, run the same policy,
the same reward model, prompts, rollout batch, minibatch, PPO epochs, new tokens, temperature
and KL/clip/GAE settings. TRL's needs its own value model: it gets a copy of the reward model
(TRL's recipe), a second network beside the policy, where RankLoop puts a value head on the
policy's trunk. A step is rollout (generate) + scoring, reference/value forwards and the PPO
epochs; it is timed from one ``generate`` call to the next, after one warm-up step. When the
installed trl has no PPO, install one beside it, not into the environment:

    pip install --no-deps --target /tmp/trl-ppo trl==1.12.0
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from policy.logprobs import TokenBatch, sequence_logprobs  # noqa: E402
from policy.losses import rebel_loss  # noqa: E402
from policy.pair_batches import EncodedScoredPair, collate  # noqa: E402

WORDS = ("the of and to in is that for it as with was on be by this are or from at an have "
         "not which but all were when we there can more if out so what about up into than "
         "them only other new some could time these two may then first any like now").split()


def synthetic_pairs(tokenizer, n: int, seed: int, prompt_range, response_range):
    """Pairs with prompt and response lengths drawn uniformly from the given token ranges."""
    rng = random.Random(seed)

    def text(lo, hi):
        return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi)))

    pairs = []
    for _ in range(n):
        ids = lambda lo, hi: tokenizer(text(lo, hi), add_special_tokens=False)["input_ids"]  # noqa: E731
        pairs.append(EncodedScoredPair(ids(*prompt_range), ids(*response_range) + [2],
                                       ids(*response_range) + [2], rng.random(), rng.random(),
                                       "g"))
    return pairs


def reference_batch(pairs, side: str, pad_id: int, prompt_pad: int, response_pad: int):
    """One side's sequences at the fixed reference width: prompt left-padded to prompt_pad,
    response right-padded to response_pad."""
    n, width = len(pairs), prompt_pad + response_pad
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    response_mask = torch.zeros((n, width), dtype=torch.long)
    for row, pair in enumerate(pairs):
        response = getattr(pair, f"{side}_ids")
        p, r = len(pair.prompt_ids), len(response)
        input_ids[row, prompt_pad - p:prompt_pad] = torch.tensor(pair.prompt_ids)
        input_ids[row, prompt_pad:prompt_pad + r] = torch.tensor(response)
        attention[row, prompt_pad - p:prompt_pad + r] = 1
        response_mask[row, prompt_pad:prompt_pad + r] = 1
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return TokenBatch(input_ids, attention, positions, response_mask)


def run(model, pairs, ref, steps, batch_pairs, mode, pad_id, prompt_pad, response_pad):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    model.train()
    useful = padded = 0
    started = None
    for step in range(steps + 1):  # step 0 warms up and is not timed
        if step == 1:
            started = time.perf_counter()
            useful = padded = 0
        rows = [(step * batch_pairs + i) % len(pairs) for i in range(batch_pairs)]
        chunk = [pairs[i] for i in rows]
        r = ref[rows]
        if mode == "rankloop":
            batch = collate(chunk, r, pad_id)
            logp_c, logp_r = batch.split(sequence_logprobs(model, batch.tokens))
            tokens = [batch.tokens]
        else:
            tokens = [reference_batch(chunk, side, pad_id, prompt_pad, response_pad)
                      for side in ("chosen", "rejected")]
            logp_c, logp_r = (sequence_logprobs(model, t) for t in tokens)
        rewards = torch.tensor([[p.reward_chosen, p.reward_rejected] for p in chunk])
        loss = rebel_loss(logp_c, logp_r, r[:, 0], r[:, 1], rewards[:, 0], rewards[:, 1],
                          eta=1.0).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        useful += sum(int(t.attention_mask.sum()) for t in tokens)
        padded += sum(t.input_ids.numel() for t in tokens)
    seconds = time.perf_counter() - started
    return {"updates/s": steps / seconds, "tokens/s": useful / seconds,
            "padded tokens/s": padded / seconds, "s/update": seconds / steps}


# ---------------------------------------------------------------------------------------------
# DPO: RankLoop's recipe vs TRL's DPOTrainer, each in a subprocess
# ---------------------------------------------------------------------------------------------

def install_step_timer() -> list[float]:
    """Records when every AdamW step ends: both trainers take one per optimizer step (fused
    or not, it is ``torch.optim.AdamW.step``)."""
    ends: list[float] = []
    original = torch.optim.AdamW.step

    def timed(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        ends.append(time.perf_counter())
        return out

    torch.optim.AdamW.step = timed
    return ends


def dpo_step_times(ends: list[float], timed_steps: int) -> list[float]:
    """Seconds of each timed step: from the end of one optimizer step to the end of the next,
    the first step (warm-up) left out."""
    if len(ends) != timed_steps + 1:
        raise RuntimeError(f"expected {timed_steps + 1} optimizer steps, got {len(ends)}")
    return [b - a for a, b in zip(ends, ends[1:])]


def dpo_worker_rankloop(spec: dict, recipe: str = "dpo") -> dict:
    """RankLoop's DPO step, or with ``recipe="rebel"`` REBEL's on the same pairs (with
    scores): the same work, a forward of chosen and rejected, backward, clipping and AdamW,
    under REBEL's regression loss."""
    from training.metrics import read_metrics

    ends = install_step_timer()
    common = dict(output=spec["output"], model=spec["policy"],
                  per_device_batch_size=spec["batch"], max_steps=spec["steps"] + 1,
                  learning_rate=spec["lr"], eval_fraction=0.0, lr_schedule="constant",
                  warmup_ratio=0.0, max_prompt_tokens=100_000, max_response_tokens=100_000,
                  log_every=1, save_every=100_000, seed=0,
                  # --own-defaults: RankLoop's (bf16 and gradient checkpointing from 50M
                  # weights where the hardware computes bf16), else TRL's arithmetic.
                  **({} if spec.get("own_defaults") else
                     dict(bf16=False, gradient_checkpointing=False)))
    if recipe == "rebel":
        from policy.rebel import RebelConfig, train_rebel

        train_rebel(RebelConfig(data=spec["scored_pairs"], **common), progress=False)
    else:
        from policy.dpo import DPOConfig, train_dpo

        train_dpo(DPOConfig(data=spec["pairs"], beta=spec["beta"], **common), progress=False)
    tokens = [m["train/tokens"] for m in read_metrics(Path(spec["output"]) / "metrics.jsonl")
              if "train/tokens" in m]
    return {"step": dpo_step_times(ends, spec["steps"]), "tokens": tokens[1:]}


def dpo_worker_trl(spec: dict) -> dict:
    import trl
    from datasets import load_dataset
    from trl import DPOConfig, DPOTrainer

    from training.models import load_policy, load_tokenizer

    ends = install_step_timer()
    tokenizer = load_tokenizer(spec["policy"], padding_side="right")
    same = {} if spec.get("own_defaults") else dict(bf16=False, gradient_checkpointing=False)
    args = DPOConfig(
        output_dir=spec["output"], per_device_train_batch_size=spec["batch"],
        gradient_accumulation_steps=1, max_steps=spec["steps"] + 1, learning_rate=spec["lr"],
        beta=spec["beta"], loss_type=["sigmoid"], precompute_ref_log_probs=True,
        max_length=None, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0,
        report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, **same)
    trainer = DPOTrainer(model=load_policy(spec["policy"]), args=args, processing_class=tokenizer,
                         train_dataset=load_dataset("json", data_files=spec["pairs"],
                                                    split="train"))
    trainer.train()
    seen = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h]
    tokens = [b - a for a, b in zip([0, *seen], seen)]  # TRL logs a running total
    return {"step": dpo_step_times(ends, spec["steps"]), "tokens": tokens[1:],
            "version": trl.__version__}


def text_pairs(path: Path, n: int, seed: int, prompt_range, response_range) -> None:
    """``n`` pairs of random words (TRL's standard text format), lengths drawn uniformly from
    the ranges (in words; about one token each)."""
    rng = random.Random(seed)

    def text(lo, hi):
        return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi)))

    rows = [{"prompt": text(*prompt_range), "chosen": " " + text(*response_range),
             "rejected": " " + text(*response_range)} for _ in range(n)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    # The same pairs with scores, for REBEL (TRL's DPO reads no extra columns).
    scored = path.with_name(path.stem + "-scored.jsonl")
    scored.write_text("".join(json.dumps({**row, "score_chosen": 1.0, "score_rejected": 0.0})
                              + "\n" for row in rows))


def run_worker(kind: str, side: str, spec: dict, folder: Path) -> dict:
    """Runs one side of a part in a fresh interpreter; returns its timings or
    ``{"error": line}``."""
    folder.mkdir(parents=True, exist_ok=True)
    spec_path = folder / f"{kind}-{side}.json"
    spec_path.write_text(json.dumps({**spec, "output": str(folder / f"out-{kind}-{side}")}))
    command = [sys.executable, str(Path(__file__).resolve()), f"--{kind}-worker", side,
               f"--{kind}-spec", str(spec_path)]
    if spec.get("threads"):
        command += ["--threads", str(spec["threads"])]
    load_before = os.getloadavg()[0]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    marker = f"{kind.upper()}-RESULT "
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(marker):
            return {**json.loads(line[len(marker):]),
                    "load": (load_before + os.getloadavg()[0]) / 2}
    lines = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()
    return {"error": f"exit {done.returncode}: {lines[-1]}"}


def dpo_part(args, tokenizer, make) -> None:
    from statistics import mean, median

    with tempfile.TemporaryDirectory(prefix="rankloop-dpo-bench-") as tmp:
        folder = Path(tmp)
        torch.manual_seed(0)
        policy = make()
        policy.save_pretrained(folder / "policy")
        tokenizer.save_pretrained(folder / "policy")
        params = sum(p.numel() for p in policy.parameters()) / 1e6
        del policy
        text_pairs(folder / "pairs.jsonl", args.dpo_batch * (args.dpo_steps + 1), 2,
                   args.prompt_tokens, args.response_tokens)
        spec = {"policy": str(folder / "policy"), "pairs": str(folder / "pairs.jsonl"),
                "scored_pairs": str(folder / "pairs-scored.jsonl"),
                "batch": args.dpo_batch, "steps": args.dpo_steps, "lr": 1e-6, "beta": 0.1,
                "threads": args.threads, "own_defaults": args.own_defaults}
        runs: dict[str, list[dict]] = {"rankloop": [], "trl": [], "rebel": []}
        errors: dict[str, str] = {}
        for round_ in range(args.dpo_rounds):  # alternating, so other work weighs on all
            for side in ("rankloop", "trl", "rebel"):
                if side in errors:
                    continue
                run = run_worker("dpo", side, spec, folder / f"round{round_}")
                if "error" in run:
                    errors[side] = run["error"]
                else:
                    runs[side].append(run)

    print(f"\nDPO step, {args.model} ({params:.0f}M parameters), {args.dpo_batch} pairs per "
          f"step, prompts {args.prompt_tokens[0]}-{args.prompt_tokens[1]} and responses "
          f"{args.response_tokens[0]}-{args.response_tokens[1]} words, sigmoid loss, reference "
          f"log-probs precomputed, {args.dpo_rounds} round(s) of {args.dpo_steps} timed steps "
          f"after 1 warm-up per side, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    print(f"{'approach':<44} {'s/step':>7} {'best':>6} {'pairs/s':>8} {'tokens':>7} "
          f"{'tok/s':>7} {'peak MB':>8} {'load':>5}")
    version = next((r["version"] for r in runs["trl"] if "version" in r), "")
    names = {"rankloop": "RankLoop DPO (policy.dpo)", "trl": f"TRL DPOTrainer {version}",
             "rebel": "RankLoop REBEL (policy.rebel)"}
    results, peaks = {}, {}
    for side in ("rankloop", "trl", "rebel"):
        if side in errors:
            print(f"{names[side]:<44} not measured: {errors[side]}")
            continue
        steps = [x for run in runs[side] for x in run["step"]]
        tokens = [x for run in runs[side] for x in run["tokens"]]
        results[side] = median(steps)
        peaks[side] = max(run["peak_mb"] for run in runs[side])
        nan = float("nan")
        print(f"{names[side]:<44} {median(steps):>7.3f} {min(steps):>6.3f} "
              f"{args.dpo_batch / median(steps):>8.2f} {mean(tokens) if tokens else nan:>7.0f} "
              f"{sum(tokens) / sum(steps) if tokens else nan:>7.0f} "
              f"{max(run['peak_mb'] for run in runs[side]):>8.0f} "
              f"{mean(run['load'] for run in runs[side]):>5.1f}")
    print("  seconds per optimizer step, medians over the timed steps; best = fastest step; "
          "tokens = real\n  (non-padding) tokens per timed step, chosen and rejected; tok/s = "
          "their sum over the timed\n  seconds; peak MB = the worker process's peak (the CUDA "
          "allocator's on a GPU, resident on CPU); load = 1-minute load average around the runs "
          "(above the core count, other work\n  shared the CPU); precision and checkpointing: "
          + ("each trainer's own defaults" if args.own_defaults else "fp32, no checkpointing, "
             "both"))
    for side, what in (("rankloop", "DPO"), ("rebel", "REBEL")):
        if side in results and "trl" in results:
            print(f"ratio TRL DPO / RankLoop {what}: seconds per step "
                  f"{results['trl'] / results[side]:.2f}x, peak memory "
                  f"{peaks['trl'] / peaks[side]:.2f}x")
    print("  (TRL has no REBEL trainer; its DPO step does the same work on the same pairs: one "
          "forward of chosen\n  and rejected, backward, clipping, AdamW)")
    differences = (
        "differences that remain: TRL tokenizes the text pairs itself and computes log-probs "
        "through its fused LM-head path; RankLoop's batches are grouped by length over the "
        "whole epoch, TRL's are drawn in shuffled order, so a timed step need not hold the same "
        "pairs on both sides (compare tok/s); both pad chosen and rejected together to the "
        "longest sequence of the batch")
    print(textwrap.fill(differences, width=100, initial_indent="  ", subsequent_indent="  "))


# ---------------------------------------------------------------------------------------------
# PPO: RankLoop's recipe vs TRL's PPOTrainer, each in a subprocess
# ---------------------------------------------------------------------------------------------

TRL_PPO_VERSION = "1.12.0"
"""The last trl release with a PPOTrainer (``trl.experimental.ppo``)."""


def install_generate_timer() -> list[dict]:
    """Records every ``generate`` call (start, end, rows, padded prompt width, new tokens):
    both trainers sample through transformers' ``GenerationMixin.generate``."""
    from transformers import GenerationMixin

    calls: list[dict] = []
    original = GenerationMixin.generate

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        out = original(self, *args, **kwargs)
        sequences = out if isinstance(out, torch.Tensor) else out.sequences
        prompt = kwargs["input_ids"] if kwargs.get("input_ids") is not None else args[0]
        calls.append({"start": start, "end": time.perf_counter(), "rows": sequences.shape[0],
                      "prompt": prompt.shape[1], "new": sequences.shape[1] - prompt.shape[1]})
        return out

    GenerationMixin.generate = timed
    return calls


def step_times(calls: list[dict], timed_steps: int) -> dict:
    """Per timed step: seconds from its rollout's start to the next one's, seconds generating,
    sampled tokens and prompt+response tokens; the first step (warm-up) and the last (no next
    rollout) are not counted."""
    if len(calls) != timed_steps + 2:
        raise RuntimeError(f"expected {timed_steps + 2} generate calls (one per step), "
                           f"got {len(calls)}")
    timed = range(1, timed_steps + 1)
    return {"step": [calls[k + 1]["start"] - calls[k]["start"] for k in timed],
            "generate": [calls[k]["end"] - calls[k]["start"] for k in timed],
            "new_tokens": [calls[k]["rows"] * calls[k]["new"] for k in timed],
            "tokens": [calls[k]["rows"] * (calls[k]["prompt"] + calls[k]["new"]) for k in timed]}


def summarize(runs: list[dict]) -> dict:
    """Medians over every timed step of every round (robust to other work on the machine), the
    fastest step, and the mean load."""
    from statistics import mean, median

    every = {key: [x for run in runs for x in run[key]]
             for key in ("step", "generate", "new_tokens", "tokens")}
    rest = [s - g for s, g in zip(every["step"], every["generate"], strict=True)]
    return {"s/step": median(every["step"]), "best": min(every["step"]),
            "generate": median(every["generate"]), "rest": median(rest),
            "new_tokens": mean(every["new_tokens"]), "tokens": mean(every["tokens"]),
            "load": mean(run["load"] for run in runs), "version": runs[0].get("version", "")}


def ppo_worker_rankloop(spec: dict) -> dict:
    from policy.ppo import PPOConfig, scorer_reward, train_ppo

    calls = install_generate_timer()
    config = PPOConfig(output=spec["output"], model=spec["policy"],
                       total_steps=spec["steps"] + 2, rollout_batch_size=spec["rollout"],
                       minibatch_size=spec["minibatch"], ppo_epochs=spec["epochs"],
                       max_new_tokens=spec["new_tokens"], temperature=spec["temperature"],
                       kl_coef=spec["kl_coef"], learning_rate=spec["lr"], seed=0)
    train_ppo(config, reward_fn=scorer_reward(f"bt:{spec['reward']}", batch_size=spec["rollout"]),
              prompts=spec["messages"])
    return step_times(calls, spec["steps"])


def ppo_worker_trl(spec: dict) -> dict:
    if spec.get("trl_path"):
        sys.path.insert(0, spec["trl_path"])
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import trl

    try:
        from trl.experimental.ppo import PPOConfig, PPOTrainer
    except ImportError:
        from trl import PPOConfig, PPOTrainer  # trl < 0.27
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification

    from data.chat import format_chat
    from training.models import load_policy, load_tokenizer

    calls = install_generate_timer()
    tokenizer = load_tokenizer(spec["policy"])  # left padding, as TRL's collator needs
    prompt_ids = tokenizer([format_chat(tokenizer, m) for m in spec["messages"]],
                           add_special_tokens=False)["input_ids"]
    reward_model, value_model = (AutoModelForSequenceClassification.from_pretrained(
        spec["reward"], num_labels=1, dtype=torch.float32) for _ in range(2))
    rollout, minibatch = spec["rollout"], spec["minibatch"]
    args = PPOConfig(
        output_dir=spec["output"], per_device_train_batch_size=rollout,
        gradient_accumulation_steps=1, num_mini_batches=rollout // minibatch,
        num_ppo_epochs=spec["epochs"], response_length=spec["new_tokens"],
        total_episodes=rollout * (spec["steps"] + 2), local_rollout_forward_batch_size=rollout,
        temperature=spec["temperature"], kl_coef=spec["kl_coef"], learning_rate=spec["lr"],
        stop_token="eos", num_sample_generations=0, report_to="none", save_strategy="no",
        disable_tqdm=True, logging_steps=1, seed=0, bf16=False,
        # TRL's PPO turns gradient checkpointing on by default, which also makes its sampling
        # run without a KV cache; RankLoop's recipe runs without it.
        gradient_checkpointing=False)
    trainer = PPOTrainer(args=args, processing_class=tokenizer, model=load_policy(spec["policy"]),
                         ref_model=load_policy(spec["policy"]), reward_model=reward_model,
                         value_model=value_model,
                         train_dataset=Dataset.from_dict({"input_ids": prompt_ids}),
                         eval_dataset=Dataset.from_dict({"input_ids": prompt_ids[:rollout]}))
    trainer.train()
    return {**step_times(calls, spec["steps"]), "version": trl.__version__}


def trl_ppo_problem(trl_path: str | None) -> str | None:
    """Why TRL's PPO cannot run (None when it can): looked up in ``trl_path``, else in the
    installed trl, in a subprocess so the bench's own imports stay untouched."""
    if trl_path and not Path(trl_path).is_dir():
        return f"--trl-path {trl_path} is not a folder"
    probe = ("import sys,os;os.environ['TRL_EXPERIMENTAL_SILENCE']='1'\n"
             + (f"sys.path.insert(0,{trl_path!r})\n" if trl_path else "")
             + "import trl\ntry:\n from trl.experimental.ppo import PPOTrainer\n"
               "except ImportError:\n from trl import PPOTrainer\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=False)
    if done.returncode == 0:
        return None
    version = subprocess.run(
        [sys.executable, "-c", (f"import sys;sys.path.insert(0,{trl_path!r});" if trl_path
                                else "import sys;") + "import trl;print(trl.__version__)"],
        capture_output=True, text=True, check=False).stdout.strip() or "not installed"
    error = (done.stderr.strip().splitlines() or ["no output"])[-1]
    where = f"trl in {trl_path}" if trl_path else "the installed trl"
    return (f"{where} ({version}) has no PPOTrainer ({error}); PPO left trl after "
            f"{TRL_PPO_VERSION}: pip install --no-deps --target DIR trl=={TRL_PPO_VERSION}, "
            f"then --trl-path DIR")


def synthetic_conversations(n: int, seed: int, word_range) -> list[list[dict]]:
    rng = random.Random(seed)
    return [[{"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(*word_range)))}]
            for _ in range(n)]


def ppo_part(args, tokenizer, make) -> None:
    from transformers import AutoModelForSequenceClassification

    with tempfile.TemporaryDirectory(prefix="rankloop-ppo-bench-") as tmp:
        folder = Path(tmp)
        # The policy as a folder (both trainers load it) and a random reward model of the same
        # shape, so scoring costs the same on both sides.
        torch.manual_seed(0)
        policy = make()
        policy.generation_config.eos_token_id = tokenizer.eos_token_id
        policy.generation_config.pad_token_id = tokenizer.pad_token_id
        policy.save_pretrained(folder / "policy")
        tokenizer.save_pretrained(folder / "policy")
        reward_config = copy.deepcopy(policy.config)
        reward_config.num_labels = 1
        reward = AutoModelForSequenceClassification.from_config(reward_config)
        reward.save_pretrained(folder / "reward")
        tokenizer.save_pretrained(folder / "reward")
        params = sum(p.numel() for p in policy.parameters()) / 1e6
        del policy, reward
        spec = {"policy": str(folder / "policy"), "reward": str(folder / "reward"),
                "steps": args.ppo_steps, "rollout": args.ppo_rollout,
                "minibatch": args.ppo_minibatch, "epochs": args.ppo_epochs,
                "new_tokens": args.ppo_new_tokens, "temperature": 1.0, "kl_coef": 0.05,
                "lr": 1e-6, "threads": args.threads, "trl_path": args.trl_path,
                "messages": synthetic_conversations(args.ppo_rollout * (args.ppo_steps + 2), 1,
                                                    args.ppo_prompt_words)}
        # Rounds alternate the two sides, so that other work on the machine weighs on both.
        problem = trl_ppo_problem(args.trl_path)
        runs: dict[str, list[dict]] = {"rankloop": [], "trl": []}
        results: dict[str, dict] = {"trl": {"error": problem}} if problem else {}
        for round_ in range(args.ppo_rounds):
            for side in ("rankloop", "trl"):
                if side in results:
                    continue
                run = run_worker("ppo", side, spec, folder / f"round{round_}")
                if "error" in run:
                    results[side] = run
                else:
                    runs[side].append(run)
        results = {side: results.get(side) or summarize(runs[side])
                   for side in ("rankloop", "trl")}

    print(f"\nPPO step, {args.model} ({params:.0f}M parameters; reward model the same shape), "
          f"rollout {args.ppo_rollout} prompts x 1 response, minibatch {args.ppo_minibatch}, "
          f"{args.ppo_epochs} PPO epochs, {args.ppo_new_tokens} new tokens (temperature 1), "
          f"prompts {args.ppo_prompt_words[0]}-{args.ppo_prompt_words[1]} words, "
          f"{args.ppo_rounds} round(s) of {args.ppo_steps} timed steps after 1 warm-up per "
          f"side, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    print(f"{'approach':<44} {'s/step':>7} {'best':>6} {'generate':>9} {'rest':>6} "
          f"{'new tok':>8} {'tokens':>7} {'load':>5}")
    names = {"rankloop": "RankLoop PPO (value head on the policy)",
             "trl": f"TRL PPOTrainer {results['trl'].get('version', '')} (value model)"}
    for side, r in results.items():
        if "error" in r:
            print(f"{names[side]:<44} not measured: {r['error']}")
        else:
            print(f"{names[side]:<44} {r['s/step']:>7.2f} {r['best']:>6.2f} "
                  f"{r['generate']:>9.2f} {r['rest']:>6.2f} {r['new_tokens']:>8.0f} "
                  f"{r['tokens']:>7.0f} {r['load']:>5.1f}")
    print("  seconds, medians over the timed steps; best = fastest step; generate = sampling the "
          "rollout;\n  rest = scoring, reference/value forwards, PPO epochs; new tok / tokens = "
          "sampled / prompt+response\n  tokens (padded) per rollout; load = 1-minute load "
          "average around the runs (above the core\n  count, other work shared the CPU)")
    if any("error" in r for r in results.values()):
        print("ratio TRL / RankLoop: not measured (see above)")
        return
    rl, trl_r = results["rankloop"], results["trl"]
    print(f"ratio TRL / RankLoop seconds per step: {trl_r['s/step'] / rl['s/step']:.2f}x "
          f"(best step {trl_r['best'] / rl['best']:.2f}x; generate "
          f"{trl_r['generate'] / rl['generate']:.2f}x, rest {trl_r['rest'] / rl['rest']:.2f}x)")
    differences = (
        "differences that remain: TRL trains a separate value model (a copy of the reward "
        "model, as its recipe does: a second trunk forward and backward per minibatch) where "
        "RankLoop has a value head on the policy; TRL takes the old log-probs from generation "
        "scores, RankLoop from one no-grad forward that also gives the values; RankLoop's "
        "reward model reads the chat-formatted conversation re-tokenized from text, TRL's the "
        "prompt+response ids; RankLoop clips the gradient norm, TRL's PPO loop does not. "
        "TRL's default gradient checkpointing (which also samples without a KV cache) is "
        "off here, as in RankLoop")
    print(textwrap.fill(differences, width=100, initial_indent="  ", subsequent_indent="  "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("rebel", "dpo", "ppo"), default=None,
                        help="run only this part (default: both)")
    parser.add_argument("--model", default="tiny",
                        help="'tiny' (random 4-layer, 256-wide Llama with the SmolLM2 "
                             "tokenizer), 'default' (SmolLM2-135M) or a folder")
    parser.add_argument("--pairs", type=int, default=2, help="REBEL: pairs per update")
    parser.add_argument("--steps", type=int, default=3, help="REBEL: timed updates per approach")
    parser.add_argument("--prompt-tokens", type=int, nargs=2, default=(30, 150))
    parser.add_argument("--response-tokens", type=int, nargs=2, default=(40, 300))
    parser.add_argument("--prompt-pad", type=int, default=1024)
    parser.add_argument("--response-pad", type=int, default=2048)
    parser.add_argument("--dpo-batch", type=int, default=4, help="DPO: pairs per step")
    parser.add_argument("--dpo-steps", type=int, default=3,
                        help="DPO: timed steps per trainer (one more runs untimed)")
    parser.add_argument("--dpo-rounds", type=int, default=1,
                        help="DPO: runs per trainer, alternating RankLoop and TRL")
    parser.add_argument("--ppo-steps", type=int, default=3,
                        help="PPO: timed steps per trainer (two more run untimed)")
    parser.add_argument("--ppo-rollout", type=int, default=8, help="PPO: prompts per rollout")
    parser.add_argument("--ppo-minibatch", type=int, default=4,
                        help="PPO: responses per gradient step")
    parser.add_argument("--ppo-epochs", type=int, default=2, help="PPO: passes over a rollout")
    parser.add_argument("--ppo-new-tokens", type=int, default=16,
                        help="PPO: new tokens per response")
    parser.add_argument("--ppo-rounds", type=int, default=1,
                        help="PPO: runs per trainer, alternating RankLoop and TRL")
    parser.add_argument("--ppo-prompt-words", type=int, nargs=2, default=(20, 40),
                        help="PPO: words per synthetic prompt")
    parser.add_argument("--trl-path", default=None,
                        help=f"folder holding trl {TRL_PPO_VERSION} (pip install --no-deps "
                             f"--target DIR trl=={TRL_PPO_VERSION}), put first on TRL's path; "
                             "default: the installed trl")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--own-defaults", action="store_true",
                        help="DPO part (REBEL too): each trainer with its own precision and gradient "
                             "checkpointing defaults (default: fp32 without checkpointing, both)")
    parser.add_argument("--dpo-worker", choices=("rankloop", "trl", "rebel"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--dpo-spec", help=argparse.SUPPRESS)
    parser.add_argument("--ppo-worker", choices=("rankloop", "trl"), help=argparse.SUPPRESS)
    parser.add_argument("--ppo-spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dpo_worker:
        spec = json.loads(Path(args.dpo_spec).read_text())
        if args.dpo_worker == "trl":
            result = dpo_worker_trl(spec)
        else:
            result = dpo_worker_rankloop(spec, "rebel" if args.dpo_worker == "rebel" else "dpo")
        from training.memory import peak_bytes

        result["peak_mb"] = peak_bytes(torch.device("cuda") if torch.cuda.is_available()
                                       else None) / 2**20
        print("DPO-RESULT " + json.dumps(result), flush=True)
        return
    if args.ppo_worker:
        spec = json.loads(Path(args.ppo_spec).read_text())
        worker = ppo_worker_rankloop if args.ppo_worker == "rankloop" else ppo_worker_trl
        print("PPO-RESULT " + json.dumps(worker(spec)), flush=True)
        return

    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from training.models import default_model_dir, load_tokenizer, resolve_model

    if args.model == "tiny":
        tokenizer = load_tokenizer(str(default_model_dir()))
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768,
                             num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=4096, tie_word_embeddings=True,
                             bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)
        make = lambda: LlamaForCausalLM(config)  # noqa: E731
        state = make().state_dict()
    else:
        path = resolve_model(args.model)
        tokenizer = load_tokenizer(path)
        make = lambda: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)  # noqa: E731
        state = None
    if args.only in (None, "rebel"):
        rebel_part(args, tokenizer, make, state)
    if args.only in (None, "dpo"):
        dpo_part(args, tokenizer, make)
    if args.only in (None, "ppo"):
        ppo_part(args, tokenizer, make)


def rebel_part(args, tokenizer, make, state) -> None:
    n = args.pairs * (args.steps + 1)
    pairs = synthetic_pairs(tokenizer, n, 0, args.prompt_tokens, args.response_tokens)
    ref = torch.randn(n, 2) - 200.0
    pad = tokenizer.pad_token_id
    results = {}
    for mode in ("rankloop", "reference"):
        model = make()
        if state is not None:
            model.load_state_dict(state)
        results[mode] = run(model, pairs, ref, args.steps, args.pairs, mode, pad,
                            args.prompt_pad, args.response_pad)
        del model

    params = sum(p.numel() for p in make().parameters()) / 1e6
    print(f"REBEL update, {args.model} ({params:.0f}M parameters), {args.pairs} pairs per update, "
          f"{args.steps} timed updates, {torch.get_num_threads()} threads, "
          f"prompts {args.prompt_tokens[0]}-{args.prompt_tokens[1]} and responses "
          f"{args.response_tokens[0]}-{args.response_tokens[1]} tokens")
    print(f"{'approach':<44} {'updates/s':>10} {'tokens/s':>10} {'padded tok/s':>13} "
          f"{'s/update':>9}")
    names = {"rankloop": "RankLoop (dynamic padding, one forward)",
             "reference": f"reference ({args.prompt_pad}+{args.response_pad} padding, 2 forwards)"}
    for mode, r in results.items():
        print(f"{names[mode]:<44} {r['updates/s']:>10.3f} {r['tokens/s']:>10.1f} "
              f"{r['padded tokens/s']:>13.1f} {r['s/update']:>9.2f}")
    ratio = results["rankloop"]["updates/s"] / results["reference"]["updates/s"]
    print(f"ratio RankLoop / reference: {ratio:.1f}x updates/s (and useful tokens/s)")


if __name__ == "__main__":
    main()
