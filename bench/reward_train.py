"""Reward-model training: RankLoop's Bradley-Terry recipe vs TRL's RewardTrainer.

    python3 bench/reward_train.py [--models tiny,default] [--pairs 48] [--eval-pairs 32] \\
        [--batch-size 8] [--epochs 1] [--lr 3e-3 for tiny, 1e-4 otherwise]

For each model (``tiny``: a random 2-layer, 64-wide Llama with the SmolLM2 tokenizer;
``default``: SmolLM2-135M-Instruct; or a folder), both trainers get the same token ids (the
same preference pairs, tokenized once), the same batch size, schedule and precision, and run
in separate processes one after the other. Prints pairs/s and real (non-padding) tokens/s of
the training loop, peak memory (CUDA allocator peak on a GPU, process peak RSS on CPU), the
held-out accuracy both models reach (measured by the same code), and RankLoop / TRL ratios;
on a GPU also MFU (6 · parameters · tokens/s over the bf16 peak).

The pairs are synthetic: the chosen reply contains a planted word, the rejected one does not;
reply lengths vary from a few words to ``--reply-words`` (60; 200 gives replies of up to
~260 tokens, the length `rankloop generate` writes by default). TRL runs with its gradient
checkpointing and bf16 defaults turned off so both do the same arithmetic (RankLoop likewise in
fp32 without checkpointing), unless ``--trl-defaults`` gives each trainer its own defaults as a
user gets them (both: bf16 and gradient checkpointing for SmolLM2 on a CPU with bf16
instructions); it is installed with `pip install -e '.[bench]'` (TRL is not a
RankLoop dependency).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ("apple river stone cloud green quick table music light paper window orange silver "
         "garden yellow summer bright narrow simple careful").split()
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def synthetic_pairs(n: int, seed: int, reply_words: int = 60):
    """``n`` pairs whose replies have 3 to ``reply_words`` words (about 1.3 tokens a word)."""
    from data.preferences import PreferencePair

    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"Question {i}: " + " ".join(
            rng.choices(WORDS, k=rng.randint(3, 20)))}]
        good = rng.choices(WORDS, k=rng.randint(3, reply_words))
        good.insert(rng.randrange(len(good) + 1), "zebra")
        bad = rng.choices(WORDS, k=rng.randint(3, reply_words))
        pairs.append(PreferencePair(prompt, [{"role": "assistant", "content": " ".join(good)}],
                                    [{"role": "assistant", "content": " ".join(bad)}]))
    return pairs


def tiny_model(folder: Path) -> str:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.models import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model("default"))
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def heldout_accuracy(model, encoded, pad_token_id: int, batch_size: int) -> float:
    """Share of held-out pairs whose chosen side scores higher: one routine for both trainers."""
    import torch

    from reward.batches import collate, sequence_rewards

    device = next(model.parameters()).device
    correct = 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            batch = collate(encoded[start:start + batch_size], pad_token_id).to(device)
            chosen, rejected = batch.split(sequence_rewards(model, batch.input_ids,
                                                            batch.attention_mask))
            correct += int((chosen > rejected).sum())
    return correct / len(encoded)


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- workers (one process each, so peak memory is each trainer's own) -------------------------

def run_worker(args) -> dict:
    import torch

    from data.preferences import PreferenceLoad
    from reward.batches import encode_pairs
    from reward.modeling import load_reward_tokenizer

    torch.manual_seed(args.seed)
    tokenizer = load_reward_tokenizer(args.model_path)
    train_pairs = synthetic_pairs(args.pairs, seed=args.seed, reply_words=args.reply_words)
    eval_pairs = synthetic_pairs(args.eval_pairs, seed=args.seed + 1, reply_words=args.reply_words)
    train, _ = encode_pairs(tokenizer, train_pairs, args.max_length)
    held_out, _ = encode_pairs(tokenizer, eval_pairs, args.max_length)
    real_tokens = sum(len(p.chosen_ids) + len(p.rejected_ids) for p in train) * args.epochs

    from transformers import AutoModelForSequenceClassification

    if args.worker == "rankloop":
        from reward.train_bt import RewardTrainConfig, train_reward_model

        with tempfile.TemporaryDirectory() as out:
            summary = train_reward_model(RewardTrainConfig(
                output=out, model=args.model_path, per_device_batch_size=args.batch_size,
                epochs=args.epochs, learning_rate=args.lr, warmup_ratio=0.1,
                lr_schedule="linear", eval_fraction=0.0, max_length=args.max_length,
                seed=args.seed, log_every=10**6, save_every=10**6,
                # --trl-defaults: RankLoop's own defaults too (bf16 and gradient
                # checkpointing from 50M weights, training.memory.efficient_defaults).
                **({} if args.trl_defaults else dict(bf16=False, gradient_checkpointing=False)),
            ), pairs=PreferenceLoad(train_pairs, "synthetic"),
                eval_pairs=PreferenceLoad(eval_pairs, "synthetic"), progress=False)
            model = AutoModelForSequenceClassification.from_pretrained(out)
        seconds = summary.train_seconds
        accuracy = heldout_accuracy(model, held_out, tokenizer.pad_token_id, args.batch_size)
    else:
        import datasets
        from trl import RewardConfig, RewardTrainer

        model = AutoModelForSequenceClassification.from_pretrained(
            args.model_path, num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = tokenizer.pad_token_id
        dataset = datasets.Dataset.from_list(
            [{"chosen_ids": p.chosen_ids, "rejected_ids": p.rejected_ids} for p in train])
        with tempfile.TemporaryDirectory() as out:
            # --trl-defaults: TRL's own precision and activation checkpointing (bf16 and
            # gradient checkpointing on; on CPU bf16 needs use_cpu), as a user gets them.
            same = {} if args.trl_defaults else dict(gradient_checkpointing=False, bf16=False,
                                                     fp16=False)
            if args.trl_defaults and not torch.cuda.is_available():
                same["use_cpu"] = True
            trainer = RewardTrainer(model=model, processing_class=tokenizer, train_dataset=dataset,
                                    args=RewardConfig(
                output_dir=out, per_device_train_batch_size=args.batch_size,
                num_train_epochs=args.epochs, learning_rate=args.lr, warmup_steps=0.1,
                lr_scheduler_type="linear", max_length=args.max_length, seed=args.seed,
                report_to="none", save_strategy="no", eval_strategy="no",
                logging_steps=10**6, dataloader_num_workers=0, disable_tqdm=True, **same))
            started = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - started
        model = trainer.model
        accuracy = heldout_accuracy(model, held_out, tokenizer.pad_token_id, args.batch_size)
    parameters = sum(p.numel() for p in model.parameters())
    return {"trainer": args.worker, "pairs": len(train) * args.epochs, "seconds": seconds,
            "pairs_per_s": len(train) * args.epochs / seconds,
            "tokens_per_s": real_tokens / seconds, "peak_mb": peak_memory_mb(),
            "accuracy": accuracy, "parameters": parameters}


def mfu(result: dict) -> str:
    import torch

    if not torch.cuda.is_available():
        return "-"
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    if peak is None:
        return "?"
    return f"{6 * result['parameters'] * result['tokens_per_s'] / peak:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,default",
                        help="comma-separated: tiny, default, or model folders")
    parser.add_argument("--pairs", type=int, default=48, help="training pairs")
    parser.add_argument("--eval-pairs", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate (default: 3e-3 for tiny, 1e-4 otherwise)")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--reply-words", type=int, default=60,
                        help="longest reply in words (default: 60; 200 gives replies of up to "
                             "~256 tokens, as `rankloop generate` writes by default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trl-defaults", action="store_true",
                        help="TRL keeps its own defaults (bf16, gradient checkpointing) instead "
                             "of RankLoop's arithmetic (fp32, none); RankLoop keeps its own")
    parser.add_argument("--worker", choices=("rankloop", "trl"), help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print("RESULT " + json.dumps(run_worker(args)), flush=True)
        return

    import torch

    from training.models import resolve_model

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else \
        f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    print(f"{args.pairs} training pairs x {args.epochs} epoch(s), {args.eval_pairs} held out, "
          f"batch {args.batch_size} pairs | {device}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models.split(","):
            path = tiny_model(Path(scratch) / "tiny") if name == "tiny" else resolve_model(name)
            lr = args.lr or (3e-3 if name == "tiny" else 1e-4)
            print(f"  {name}: lr {lr}", flush=True)
            for trainer in ("rankloop", "trl"):
                argv = [sys.executable, __file__, "--worker", trainer, "--model-path", path,
                        "--lr", str(lr)]
                for flag in ("pairs", "eval_pairs", "batch_size", "epochs", "max_length", "seed",
                             "reply_words"):
                    argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
                argv += ["--trl-defaults"] if args.trl_defaults else []
                done = subprocess.run(argv, capture_output=True, text=True)
                result_lines = [line for line in done.stdout.splitlines()
                                if line.startswith("RESULT ")]
                if done.returncode != 0 or not result_lines:
                    sys.exit(f"{trainer} on {name} failed:\n{done.stderr[-3000:]}")
                result = json.loads(result_lines[-1][len("RESULT "):])
                rows.append((name, result))
                print(f"  {name:8} {trainer:8} {result['seconds']:7.1f} s", flush=True)

    header = (f"{'model':8} {'trainer':8} {'pairs/s':>8} {'tokens/s':>9} {'peak MB':>8} "
              f"{'accuracy':>8} {'MFU':>6}")
    print("\n" + header + "\n" + "-" * len(header))
    for name, r in rows:
        print(f"{name:8} {r['trainer']:8} {r['pairs_per_s']:8.2f} {r['tokens_per_s']:9.0f} "
              f"{r['peak_mb']:8.0f} {r['accuracy']:8.3f} {mfu(r):>6}")
    print()
    for name in dict.fromkeys(n for n, _ in rows):
        ours, theirs = (next(r for n, r in rows if n == name and r["trainer"] == t)
                        for t in ("rankloop", "trl"))
        print(f"{name}: RankLoop / TRL = {ours['pairs_per_s'] / theirs['pairs_per_s']:.2f}x "
              f"pairs/s, {ours['peak_mb'] / theirs['peak_mb']:.2f}x peak memory, accuracy "
              f"{ours['accuracy']:.3f} vs {theirs['accuracy']:.3f}")


if __name__ == "__main__":
    main()
