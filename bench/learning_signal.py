"""Does the loop learn? Simulated annotators with a verifiable preference, `rankloop loop`'s
iterations, and the held-out success rate of the policy after each one.

    python3 bench/learning_signal.py [--model default] [--iterations 3] [--algorithms rebel,ppo]
        [--train-prompts 64] [--eval-prompts 48] [--samples 3] [--max-new-tokens 24]

The preference, checked by code: **the reply gets to the point** — its opening sentence (up to
the first ``.``, ``!``, ``?``, ``:`` or line break) has at most 10 words. SmolLM2-135M-Instruct
meets it in about a quarter of its samples, so it can learn it from its own samples. The
simulated annotators score a reply by ``opening_score`` (0 for a one-word opening, −1 per 5
more words, −6 for an opening of 30 words or more, an empty reply, or one that never ends a
sentence) and rank each item's candidates by score / noise + Gumbel noise, three annotators,
two per item, through the app's own queue and submission path.

Per algorithm, on a fresh database, the loop runs ``--iterations`` iterations on the training
prompts (``policy/loop.py``: generate k candidates with the current policy → simulated
rankings → REBEL on best/worst pairs of the rankings, or PPO rewarded by the same scoring
function directly → record). The loop holds out its default share of each round's prompts,
on which REBEL's and DPO's KL budget is measured. After the iterations, the base policy and every iteration's
policy sample ``--samples`` replies to each held-out prompt (never trained on), and the table
shows the success rate, the mean score, KL(policy ‖ base) per reply (k3 on its own
samples, ``policy.loop.kl_new_old``) and the mean length in tokens.

Defaults are sized for a 2-core CPU (about half an hour on an idle machine); see the README
for why the learning rates and steps differ from the 8-GPU values.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MAX_OPENING_WORDS = 10
_SENTENCE_END = re.compile(r"[.!?:\n]")


def opening_words(text: str) -> int | None:
    """Words in the reply's opening sentence; None when no sentence ends in the text."""
    text = text.strip()
    match = _SENTENCE_END.search(text)
    if not text or match is None:
        return None
    return len(text[:match.start()].split()) or 1  # "1." or "Yes!" is a one-word opening


def gets_to_the_point(text: str) -> bool:
    words = opening_words(text)
    return words is not None and words <= MAX_OPENING_WORDS


def opening_score(prompts, responses) -> list[float]:
    """The simulated annotators' utility: shorter openings score higher (see the module doc)."""
    scores = []
    for text in responses:
        words = opening_words(text)
        scores.append(-6.0 if words is None else -min(words - 1, 30) / 5)
    return scores


# --- held-out evaluation -------------------------------------------------------------------------

def evaluate(model: str, base: str, prompts: list[list[dict]], args) -> dict:
    from data.chat import format_chat
    from policy.loop import kl_new_old
    from training.models import load_tokenizer
    from policy.sampling import SamplingConfig, TransformersSampler

    tokenizer = load_tokenizer(model)
    texts = [format_chat(tokenizer, m) for m in prompts]
    sampler = TransformersSampler(model, seed=args.seed + 1000, batch_size=16)
    started = time.perf_counter()
    samples = sampler.generate(texts, SamplingConfig(
        k=args.samples, temperature=args.temperature, top_p=1.0,
        max_new_tokens=args.max_new_tokens, seed=args.seed + 1000))
    sampler.close()
    flat = [(p, s) for p, group in zip(prompts, samples) for s in group]
    flat_texts = [t for t, group in zip(texts, samples) for _ in group]
    replies = [s.text for _, s in flat]
    scores = opening_score([p for p, _ in flat], replies)
    kl = 0.0 if model == base else kl_new_old(model, base, flat_texts, replies,
                                              args.temperature)
    return {"success": sum(map(gets_to_the_point, replies)) / len(replies),
            "score": sum(scores) / len(scores), "kl": kl,
            "length": sum(s.token_count for _, s in flat) / len(flat),
            "eval_seconds": time.perf_counter() - started, "examples": replies[:3]}


# --- the loop, per algorithm -----------------------------------------------------------------------

def loop_config(algorithm: str, work: Path, train_file: Path, base: str, args):
    """The loop's own defaults for ``algorithm`` (``--recipe``), with only the training
    settings given on the command line changed."""
    from policy.loop import LoopConfig, algorithm_settings

    given = {"rebel": {"learning_rate": args.lr, "eta": args.eta, "epochs": args.epochs,
                       "kl_budget": args.kl_budget},
             "dpo": {"learning_rate": args.lr, "beta": args.dpo_beta, "epochs": args.epochs,
                     "kl_budget": args.kl_budget},
             "ppo": {"learning_rate": args.lr, "steps": args.ppo_steps,
                     "target_kl": args.kl_budget}}
    if algorithm not in given:
        # Another algorithm: add its settings' options here, beside its entry in policy.loop's
        # TRAINERS.
        raise SystemExit(f"no benchmark options for algorithm {algorithm!r}")
    return LoopConfig(
        db=str(work / "loop.db"), output=str(work / "policy"), algorithm=algorithm,
        feedback="simulated:bench.learning_signal:opening_score", iterations=args.iterations,
        sim_annotators=3, sim_overlap=2, sim_noise=args.noise, model=base,
        prompts=str(train_file), backend="transformers", max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, seed=args.seed,
        k=args.ppo_k if algorithm == "ppo" else args.k, recipe=args.recipe,
        settings=algorithm_settings(algorithm, args.recipe, **given[algorithm]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--algorithms", default="rebel,ppo")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--train-prompts", type=int, default=64)
    parser.add_argument("--eval-prompts", type=int, default=48)
    parser.add_argument("--samples", type=int, default=3, help="held-out replies per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--noise", type=float, default=1.0, help="annotators' Gumbel noise")
    parser.add_argument("--k", type=int, default=4, help="REBEL: candidates per prompt")
    # Training settings: unset, each algorithm trains with the loop's defaults.
    parser.add_argument("--recipe", default="default", help="the loop's --recipe")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--eta", type=float, default=None, help="REBEL")
    parser.add_argument("--dpo-beta", type=float, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="REBEL and DPO")
    parser.add_argument("--ppo-steps", type=int, default=None)
    parser.add_argument("--kl-budget", type=float, default=None)
    parser.add_argument("--ppo-k", type=int, default=2, help="PPO: candidates per prompt for "
                        "the queue (PPO itself trains on fresh rollouts)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="folder for databases and policies "
                        "(default: a new temporary folder)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    import tempfile

    import torch

    from data.prompts import load_prompts
    from data import store
    from policy.loop import run_loop
    from training.models import resolve_model

    torch.manual_seed(args.seed)
    work = Path(args.work or tempfile.mkdtemp(prefix="rankloop-learning-"))
    work.mkdir(parents=True, exist_ok=True)
    base = resolve_model(args.model)
    prompts = [p.messages for p in load_prompts(None).prompts]
    random.Random(args.seed).shuffle(prompts)
    if args.train_prompts + args.eval_prompts > len(prompts):
        raise SystemExit(f"only {len(prompts)} bundled prompts")
    train, held = prompts[:args.train_prompts], prompts[-args.eval_prompts:]
    train_file = work / "train_prompts.jsonl"
    train_file.write_text("".join(json.dumps({"prompt": m}) + "\n" for m in train))

    started = time.perf_counter()
    rows = [("base", 0, evaluate(base, base, held, args), 0.0)]
    print(f"base: {rows[0][2]['success']:.3f} success on held-out prompts", flush=True)
    for algorithm in [a for a in args.algorithms.split(",") if a]:
        folder = work / algorithm
        folder.mkdir(parents=True, exist_ok=True)
        config = loop_config(algorithm, folder, train_file, base, args)
        loop_started = time.perf_counter()
        run_loop(config, say=lambda line: print(line, flush=True))
        loop_seconds = time.perf_counter() - loop_started
        # Every recorded iteration: a rerun after a crash evaluates the earlier ones too.
        db = store.open_store(config.db)
        reports = store.iteration_reports(db)
        db.close()
        # The simulated annotators' verdict on each iteration's policy against the one before
        # it, from the next iteration's mixed candidates (the last policy has none).
        verdicts = {r["verdict_on"]: r for r in reports if r.get("human_win_rate") is not None}
        for report in reports:
            result = evaluate(report["model"], base, held, args)
            verdict = verdicts.get(report["iteration"])
            if verdict is not None:
                result["sim_win_rate"] = verdict["human_win_rate"]
                result["sim_win_ci"] = [verdict["ci_low"], verdict["ci_high"]]
            rows.append((algorithm, report["iteration"], result, report["seconds"]))
            print(f"{algorithm} iteration {report['iteration']}: {result['success']:.3f} "
                  f"success, KL {result['kl']:.3f}", flush=True)
        print(f"{algorithm}: {len(reports)} iterations, this run's loop {loop_seconds:.0f} s",
              flush=True)
    total = time.perf_counter() - started

    base_success = rows[0][2]["success"]
    print(f"\nheld-out: {len(held)} prompts × {args.samples} replies, max {args.max_new_tokens} "
          f"new tokens, temperature {args.temperature:g}; preference: opening sentence ≤ "
          f"{MAX_OPENING_WORDS} words")
    print("| policy | iteration | held-out success | Δ vs base (points) | mean score | "
          "KL to base | length (tokens) | iteration seconds | annotators' win rate vs previous "
          "[95%] |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, iteration, r, seconds in rows:
        print(f"| {name} | {iteration} | {r['success']:.3f} | "
              f"{100 * (r['success'] - base_success):+.1f} | {r['score']:.3f} | {r['kl']:.3f} | "
              f"{r['length']:.1f} | {seconds:.0f} | {_verdict(r)} |")
    print(f"\ntotal {total / 60:.1f} min (work folder {work})")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"settings": vars(args), "rows": [{"policy": n, "iteration": i, **r,
                                               "iteration_seconds": s}
                                              for n, i, r, s in rows],
             "total_seconds": total}, indent=2) + "\n")


def _verdict(result: dict) -> str:
    if "sim_win_rate" not in result:
        return "–"
    low, high = result["sim_win_ci"]
    return f"{result['sim_win_rate']:.3f} [{low:.3f}, {high:.3f}]"


if __name__ == "__main__":
    main()
