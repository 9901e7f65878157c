"""The loop's default settings on the 8B reference shape: a few REBEL and DPO steps on a
random-weight model with Llama-3-8B's layer shape, beside the 8B reference recipe's settings.

    python3 bench/scale_check.py [--layers 1] [--pairs 8] [--steps 4]

The model has Llama-3-8B's hidden size (4096), attention (32 heads, 8 KV heads) and MLP
(14336), with ``--layers`` of its 32 layers and SmolLM2's tokenizer (vocabulary 49152 instead
of 128256), so that its weights, gradients and AdamW's moments fit a CPU's memory; the learning
rate each default recipe uses is the one it takes for the whole 8B model (``LEARNING_RATES``
at Llama-3-8B's weight count), since that is what a user training the 8B model gets. Each
arm trains with the real recipe (``train_rebel``/``train_dpo``: memory check, bf16 and
gradient checkpointing by the model's size, KL budget) on the same synthetic pairs, and the
table shows per step the loss, the KL estimate, the gradient norm, and the relative size of
the whole run's update ‖θ − θ₀‖ / ‖θ₀‖ (on a
query, an MLP and the output projection's weights): the defaults should take steps of the reference's
size and not blow up (finite loss, KL far below the budget in a few steps).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                 num_key_value_heads=8, rope_theta=500000.0, tie_word_embeddings=False)


def make_model(folder: Path, layers: int) -> str:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.models import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model("default"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), num_hidden_layers=layers,
                         max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **LLAMA3_8B)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def pairs_file(path: Path, n: int, words: int) -> str:
    import random

    rng = random.Random(0)
    vocab = "apple river stone cloud green quick table music light paper window".split()
    rows = []
    for i in range(n):
        def reply():
            return " ".join(rng.choice(vocab) for _ in range(rng.randint(words // 2, words)))
        rows.append({"prompt": [{"role": "user", "content": f"Question {i}: tell me a story."}],
                     "chosen": [{"role": "assistant", "content": reply()}],
                     "rejected": [{"role": "assistant", "content": reply()}],
                     "score_chosen": 1.0, "score_rejected": 0.0})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# The update is measured on these weights (loading all of them twice would double memory).
PROBED = ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight",
          "lm_head.weight")


def probed_weights(folder: str) -> dict:
    from safetensors import safe_open

    with safe_open(str(Path(folder) / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k).float() for k in PROBED}


def update_size(start: dict, folder: str) -> float:
    end = probed_weights(folder)
    moved = sum(float((end[k] - start[k]).pow(2).sum()) for k in start)
    total = sum(float(start[k].pow(2).sum()) for k in start)
    return (moved / total) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--reply-words", type=int, default=40)
    parser.add_argument("--work", default=None)
    args = parser.parse_args()

    from transformers import AutoConfig, LlamaConfig

    from policy import dpo, rebel
    from policy.loop import algorithm_settings
    from training.memory import parameter_count
    from training.metrics import read_metrics
    from training.models import size_scaled_learning_rate

    work = Path(args.work or tempfile.mkdtemp(prefix="rankloop-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    model = make_model(work / "model", args.layers)
    full = parameter_count(LlamaConfig(vocab_size=128256, num_hidden_layers=32, **LLAMA3_8B))
    shape = parameter_count(AutoConfig.from_pretrained(model))
    data = pairs_file(work / "pairs.jsonl", args.pairs, args.reply_words)
    start = probed_weights(model)
    print(f"model: Llama-3-8B layer shape, {args.layers} of 32 layers, vocabulary 49152: "
          f"{shape / 1e6:.0f}M weights (the whole 8B model: {full / 1e9:.2f}B)", flush=True)

    rows = []
    for algorithm, module, make in (("rebel", rebel, rebel.RebelConfig),
                                    ("dpo", dpo, dpo.DPOConfig)):
        for recipe in ("default", "reference-8b"):
            settings = algorithm_settings(algorithm, recipe)
            rate = settings.learning_rate or size_scaled_learning_rate(module.LEARNING_RATES,
                                                                       full)
            own = {"eta": settings.eta} if algorithm == "rebel" else {"beta": settings.beta}
            out = work / f"{algorithm}-{recipe}"
            started = time.perf_counter()
            summary = (rebel.train_rebel if algorithm == "rebel" else dpo.train_dpo)(make(
                output=str(out), data=data, model=model, learning_rate=rate,
                kl_budget=settings.kl_budget, max_steps=args.steps,
                per_device_batch_size=max(1, args.pairs // args.steps), eval_fraction=0.0,
                log_every=1, save_every=10**6, warmup_ratio=0.0, lr_schedule="constant",
                **own), progress=False)
            logged = [m for m in read_metrics(out / "metrics.jsonl") if "train/loss" in m]
            rows.append((algorithm, recipe, rate, logged, update_size(start, str(out)),
                         summary, time.perf_counter() - started))
            print(summary.line(), flush=True)

    print("\n| algorithm | recipe | learning rate | step | loss | KL | grad norm |")
    print("|---|---|---|---|---|---|---|")
    for algorithm, recipe, rate, logged, _, _, _ in rows:
        for m in logged:
            print(f"| {algorithm} | {recipe} | {rate:.2g} | {m['step']} | {m['train/loss']:.4f} "
                  f"| {m['train/kl']:.5f} | {m.get('train/grad_norm', float('nan')):.3f} |")
    print("\n| algorithm | recipe | update ‖θ − θ₀‖ / ‖θ₀‖ | seconds | stopped early |")
    print("|---|---|---|---|---|")
    for algorithm, recipe, _, _, size, summary, seconds in rows:
        print(f"| {algorithm} | {recipe} | {size:.2e} | {seconds:.0f} | "
              f"{summary.stopped_early or 'no'} |")


if __name__ == "__main__":
    main()
