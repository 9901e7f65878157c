"""`rankloop generate`, `rankloop merge` and `rankloop status`."""

from __future__ import annotations

import argparse

from data import store
from data.labeling import MAX_CANDIDATES
from launch.common import UserError, add_db, db_path, existing_db_path, positive_int


def register(commands) -> None:
    gen = commands.add_parser(
        "generate", help="sample k candidate responses per prompt into the database",
        description="Sample k candidate responses per prompt and store them with their run. "
                    "Rerunning with the same settings resumes where the last run stopped.",
    )
    add_db(gen)
    gen.add_argument("--prompts", default=None, metavar="SOURCE",
                     help="bundled (default), a .jsonl/.json/.csv/.parquet file, a save_to_disk "
                          "folder, or a Hugging Face dataset id")
    gen.add_argument("--prompt-column", default="prompt",
                     help="column with the prompt string or chat 'messages' list (default: prompt;"
                          " 'messages' is used when there is no 'prompt' column)")
    gen.add_argument("--split", default="train", help="dataset split (default: train)")
    gen.add_argument("--limit", type=positive_int, default=None, help="use at most N prompts")
    gen.add_argument("--max-prompt-tokens", type=positive_int, default=1024,
                     help="drop prompts longer than this after chat formatting (default: 1024)")
    gen.add_argument("--model", default="default",
                     help="'default' (embedded SmolLM2-135M-Instruct), a local Hugging Face "
                          "folder, or a Hub id")
    gen.add_argument("--backend", default="auto",
                     help="vllm, transformers, or auto (vLLM when installed; default)")
    gen.add_argument("--k", type=int, default=4,
                     help=f"candidates per prompt, 1 to {MAX_CANDIDATES} (the labeling page's "
                          "slots; default: 4)")
    gen.add_argument("--temperature", type=float, default=0.8, help="default: 0.8")
    gen.add_argument("--top-p", type=float, default=0.9, help="default: 0.9")
    gen.add_argument("--max-new-tokens", type=positive_int, default=256, help="default: 256")
    gen.add_argument("--seed", type=int, default=0, help="default: 0")
    gen.add_argument("--batch-size", type=positive_int, default=32,
                     help="prompts per engine per sampler call (default: 32)")
    gen.add_argument("--tensor-parallel-size", type=positive_int, default=1, metavar="N",
                     help="GPUs each vLLM engine shards its model over, for models that do not "
                          "fit one GPU (default: 1)")
    gen.add_argument("--data-parallel-size", type=positive_int, default=1, metavar="N",
                     help="engines, each a whole model copy on its own GPUs (8 on an 8-GPU node "
                          "for a model that fits one GPU); on CPU, processes (default: 1)")
    gen.add_argument("--shard", default=None, metavar="I/N",
                     help="only shard I (0 .. N-1) of N of the prompts, split by prompt hash: "
                          "run one per machine into separate databases, then `rankloop merge`")
    gen.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    gen.set_defaults(handler=_generate)

    merge = commands.add_parser(
        "merge", help="merge other databases (e.g. one per node) into one",
        description="Copy the prompts, generation runs, candidates, model scores, users, "
                    "labeling items, assignments and rankings of each SOURCE database into "
                    "--db, matching rows by content (prompt hash, run settings, prompt/run/idx, "
                    "user name, submission key), so nothing is stored twice and merging again "
                    "adds nothing. Each source is merged in one transaction.",
    )
    add_db(merge)
    merge.add_argument("sources", nargs="+", metavar="SOURCE",
                       help="databases to merge in (they are only read)")
    merge.set_defaults(handler=_merge)

    status = commands.add_parser("status", help="show what the database holds",
                                 description="What the database holds: prompts, candidates, items ready to rank "
                                 "and how far their labeling is, votes, users, trained "
                                 "iterations and background jobs. A missing database is "
                                 "refused.")
    add_db(status)
    status.set_defaults(handler=_status)


def _generate(args: argparse.Namespace) -> int:
    from policy.generate import GenerateConfig, run_generation
    from policy.sampling import SamplingConfig, pick_backend

    pick_backend(args.backend)  # an unknown backend fails before any model is touched
    if args.k > MAX_CANDIDATES:  # such items could never be ranked in the app
        raise UserError(f"k must be at most {MAX_CANDIDATES} (the labeling page shows that "
                        f"many candidates), got {args.k}")
    config = GenerateConfig(
        db=db_path(args),
        prompts=args.prompts,
        prompt_column=args.prompt_column,
        split=args.split,
        limit=args.limit,
        max_prompt_tokens=args.max_prompt_tokens,
        model=args.model,
        backend=args.backend,
        sampling=SamplingConfig(
            k=args.k, temperature=args.temperature, top_p=args.top_p,
            max_new_tokens=args.max_new_tokens, seed=args.seed,
        ),
        batch_size=args.batch_size,
        tensor_parallel_size=args.tensor_parallel_size,
        data_parallel_size=args.data_parallel_size,
        shard=args.shard,
    )
    summary = run_generation(config, progress=not args.no_progress)
    print(summary.line())
    return 0


def _merge(args: argparse.Namespace) -> int:
    from data.merge import merge_databases

    for summary in merge_databases(db_path(args), args.sources):
        print(summary.line())
    return 0


def _status(args: argparse.Namespace) -> int:
    import time

    from data import labeling

    path = existing_db_path(args)
    db = store.open_store(path)
    counts = store.counts(db)
    queue = labeling.overview(db)
    running, ended = store.jobs_overview(db)
    print(f"{path} (schema v{store.schema_version(db)})")
    rows = [
        ("prompts", counts["prompts"]),
        ("runs", counts["generation_runs"]),
        ("candidates", counts["candidates"]),
        ("items", f"{queue['items_ready']} ready to rank: {queue['items_ranked']} ranked, "
                  f"{queue['items_in_progress']} in progress, {queue['items_set_aside']} set "
                  f"aside; {queue['gold_items']} gold"),
        ("rankings", f"{queue['rankings']} (latest versions; {queue['skips']} skips; "
                     f"{counts['rankings']} rows in the vote log)"),
        ("comparisons", counts["comparisons"]),
        ("users", f"{queue['users']} ({queue['admins']} admins, {queue['disabled_users']} "
                  "disabled)"),
        ("model scores", counts["model_scores"]),
        ("iterations", counts["policy_iterations"]),
        ("jobs", ", ".join([f"{len(running)} running"]
                           + [f"{n} {status}" for status, n in ended.items()])),
    ]
    for name, value in rows:
        print(f"  {name:13} {value}")
    for job in running:
        minutes = (time.time() - job["started_at"]) / 60
        print(f"    job {job['id']} ({job['kind']}) running for {minutes:.0f} min, pid {job['pid']}")
    return 0
