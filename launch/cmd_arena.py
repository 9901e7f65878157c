"""`rankloop arena add` (blind comparison items from several policies) and `rankloop arena
ratings` (the leaderboard over the votes people gave on them)."""

from __future__ import annotations

import argparse
import random
import sys

from data import store
from data.labeling import MAX_CANDIDATES
from launch.common import UserError, add_db, db_path, existing_db_path, positive_int, \
    subcommand_group


def register(commands) -> None:
    group = subcommand_group(commands, "arena",
                             "compare policies blind: comparison items in the queue, ratings")
    add = group.add_parser(
        "add", help="sample answers from several policies into blind comparison items",
        description="Sample one answer per policy to each prompt (use prompts the policies did "
                    "not train on) and store them as comparison items in the labeling queue: "
                    "annotators see the answers without names, in an order shuffled per "
                    "annotator, and rank them (a pair takes a winner, a tie or 'all bad'). "
                    "The share of comparison items the queue serves is the project setting "
                    "comparison_share (Admin tab). Rerunning with the same settings resumes.")
    add_db(add)
    add.add_argument("--policy", action="append", required=True, metavar="NAME=MODEL",
                     help="a policy to compare: a name (shown to admins only) and 'default', "
                          "a model folder (a loop iteration's iter-N) or a Hub id; give two or "
                          "more")
    add.add_argument("--prompts", default=None, metavar="SOURCE",
                     help="held-out prompts: bundled (default), a file, a save_to_disk folder "
                          "or a Hub dataset id")
    add.add_argument("--prompt-column", default="prompt", help="default: prompt")
    add.add_argument("--split", default="train", help="dataset split (default: train)")
    add.add_argument("--limit", type=positive_int, default=None, help="use at most N prompts")
    add.add_argument("--mode", choices=("pairwise", "all"), default="pairwise",
                     help="pairwise (default): each prompt compares two policies, pairs taken "
                          "in turn; all: every policy's answer on one prompt")
    add.add_argument("--backend", default="auto",
                     help="vllm, transformers, or auto (vLLM when installed; default)")
    add.add_argument("--temperature", type=float, default=0.8, help="default: 0.8")
    add.add_argument("--top-p", type=float, default=1.0, help="default: 1.0")
    add.add_argument("--max-new-tokens", type=positive_int, default=256, help="default: 256")
    add.add_argument("--max-prompt-tokens", type=positive_int, default=1024,
                     help="drop prompts longer than this after chat formatting (default: 1024)")
    add.add_argument("--seed", type=int, default=0, help="default: 0")
    add.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add.set_defaults(handler=_add)

    ratings = group.add_parser(
        "ratings", help="print the policies' leaderboard from the votes",
        description="Bradley-Terry ratings of the policies on the Arena scale (1000 = the "
                    "mean, or --baseline) with bootstrap intervals, the length-controlled "
                    "ratings, the win matrix and votes per pair, from every ranking whose "
                    "candidates come from more than one policy (comparison items and the "
                    "loop's rounds with the previous policy's answers).")
    add_db(ratings)
    ratings.add_argument("--comparison-items-only", action="store_true",
                         help="count only votes on `rankloop arena add`'s comparison items")
    ratings.add_argument("--baseline", default=None, metavar="NAME",
                         help="the policy held at 1000 (default: the mean is)")
    ratings.add_argument("--resamples", type=int, default=1000,
                         help="bootstrap resamples (default: 1000; 0 = no intervals)")
    ratings.add_argument("--level", type=float, default=0.95,
                         help="interval coverage (default: 0.95)")
    ratings.add_argument("--seed", type=int, default=0, help="default: 0")
    ratings.set_defaults(handler=_ratings)


def parse_policies(specs: list[str]) -> list[tuple[str, str]]:
    """``NAME=MODEL`` strings -> (name, model); names unique, at least two."""
    out = []
    for spec in specs:
        name, sep, model = spec.partition("=")
        if not sep or not name.strip() or not model.strip():
            raise UserError(f"--policy takes NAME=MODEL, got {spec!r}")
        out.append((name.strip(), model.strip()))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise UserError("each --policy needs its own name")
    if len(out) < 2:
        raise UserError("give at least two --policy NAME=MODEL to compare")
    return out


def plan_pairs(n_prompts: int, n_policies: int, mode: str, seed: int) -> list[tuple[int, ...]]:
    """Which policies answer each prompt: all of them, or pairs in a seeded order that repeats
    every pair equally often."""
    if mode == "all":
        return [tuple(range(n_policies))] * n_prompts
    pairs = [(a, b) for a in range(n_policies) for b in range(a + 1, n_policies)]
    random.Random(seed).shuffle(pairs)
    return [pairs[i % len(pairs)] for i in range(n_prompts)]


def _add(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from data.chat import format_and_filter, format_chat
    from data.prompts import load_prompts
    from policy.sampling import SamplingConfig, make_sampler, pick_backend
    from training.models import DEFAULT_MODEL, is_default, load_tokenizer, resolve_model

    policies = parse_policies(args.policy)
    if args.mode == "all" and len(policies) > MAX_CANDIDATES:
        raise UserError(f"the labeling page shows at most {MAX_CANDIDATES} answers; compare "
                        "fewer policies at once or use --mode pairwise")
    backend = pick_backend(args.backend)
    path = db_path(args)
    store.check_writable(path)
    models = [DEFAULT_MODEL if is_default(m) else resolve_model(m) for _, m in policies]
    loaded = load_prompts(args.prompts, args.prompt_column, split=args.split, limit=args.limit)
    tokenizers = [load_tokenizer(resolve_model(m)) for _, m in policies]
    formatted, too_long = format_and_filter(tokenizers[0], loaded.prompts, args.max_prompt_tokens)
    if not formatted:
        raise UserError("no prompt is left after the length filter; nothing to compare")

    db = store.open_store(path)
    policy_ids = [store.get_or_create_policy(db, name, model)
                  for (name, _), model in zip(policies, models)]
    k = len(policies) if args.mode == "all" else 2
    run_id = store.get_or_create_run(db, store.RunSettings(
        model="arena: " + ", ".join(name for name, _ in policies), backend=store.ARENA_BACKEND,
        k=k, temperature=args.temperature, top_p=args.top_p,
        max_new_tokens=args.max_new_tokens, seed=args.seed))
    prompt_ids = store.upsert_prompts(db, ((f.prompt.messages, f.prompt.source,
                                            f.prompt.source_id) for f in formatted))
    plan = plan_pairs(len(formatted), len(policies), args.mode, args.seed)
    done = store.prompts_with_candidates(db, run_id, k)
    todo, seen = [], set(done)
    for i, pid in enumerate(prompt_ids):
        if pid not in seen:  # the same prompt twice in a source is compared once
            seen.add(pid)
            todo.append((i, pid))

    # Each policy samples the prompts it answers, one engine at a time.
    answers: dict[tuple[int, int], object] = {}
    sampling = SamplingConfig(k=1, temperature=args.temperature, top_p=args.top_p,
                              max_new_tokens=args.max_new_tokens, seed=args.seed)
    for p, ((name, model), tokenizer) in enumerate(zip(policies, tokenizers)):
        mine = [(i, pid) for i, pid in todo if p in plan[i]]
        if not mine:
            continue
        texts = [format_chat(tokenizer, formatted[i].prompt.messages) for i, _ in mine]
        sampler = make_sampler(backend, resolve_model(model), sampling)
        try:
            bar = tqdm(total=len(texts), desc=f"sample {name}", unit="prompt",
                       disable=args.no_progress, file=sys.stderr)
            for start in range(0, len(texts), 32):
                batch = sampler.generate(texts[start:start + 32], sampling)
                for (i, _), samples in zip(mine[start:start + 32], batch):
                    answers[(i, p)] = samples[0]
                bar.update(len(batch))
            bar.close()
        finally:
            sampler.close()

    for i, pid in todo:
        chosen = plan[i]
        samples = [answers[(i, p)] for p in chosen]
        store.add_candidates(db, pid, run_id, [store.CandidateIn(s.text, s.token_count,
                                                                 s.finish_reason)
                                               for s in samples],
                             policy_ids=[policy_ids[p] for p in chosen])
    items = db.execute("SELECT COUNT(*) FROM items WHERE run_id = ? AND comparison = 1",
                       [run_id]).fetchone()[0]
    print(f"arena run {run_id}: {len(todo)} prompts answered ({len(formatted) - len(todo)} "
          f"already done, {too_long} too long); {items} comparison items of "
          f"{', '.join(name for name, _ in policies)} in the queue")
    db.close()
    return 0


def _ratings(args: argparse.Namespace) -> int:
    from data.arena import leaderboard, votes_from_db

    db = store.open_store(existing_db_path(args))
    votes = votes_from_db(db, comparison_items_only=args.comparison_items_only)
    board = leaderboard(votes, resamples=args.resamples, level=args.level, seed=args.seed,
                        baseline=args.baseline)
    print(board.text(), end="")
    db.close()
    return 0
