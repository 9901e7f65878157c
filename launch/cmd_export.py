"""`rankloop export` and `rankloop train sft`."""

from __future__ import annotations

import argparse
from pathlib import Path

from launch.common import add_db, existing_db_path, positive_int, subcommand_group
from launch.training_options import (
    add_optimizer_options,
    add_tracking_options,
    optimizer_settings,
    tracking_settings,
)

HUB_PREFIX = "hub:"


def register(commands) -> None:
    export = commands.add_parser(
        "export", help="export rankings as a Hugging Face dataset (folder or Hub)",
        description="Export the database's rankings as a DatasetDict (train/test) in TRL's "
                    "preference format (config 'default': prompt, chosen, rejected, scores, "
                    "margin, annotators, agreement, tie, source run) plus every raw ranking "
                    "(config 'rankings'), with a dataset card. --to DIR writes save_to_disk "
                    "folders, parquet and jsonl files; --to hub:OWNER/NAME uploads both "
                    "configurations and the card with your Hugging Face token. Annotators "
                    "appear as pseudonyms unless --keep-annotator-names.",
    )
    add_db(export)
    export.add_argument("--to", required=True, metavar="DIR|hub:OWNER/NAME",
                        help="an output folder (new or empty), or hub:OWNER/NAME")
    export.add_argument("--format", choices=("conversational", "standard", "arena"),
                        default="conversational",
                        help="conversational (chat messages, default) or standard (text; the "
                             "prompt rendered with --model's chat template); arena: the votes "
                             "between policies as one JSON lines file (--to FILE.jsonl) in "
                             "Chatbot Arena's layout (model_a, model_b, winner, conversations)")
    export.add_argument("--model", default="default",
                        help="tokenizer whose chat template renders standard-format prompts "
                             "(default: the embedded SmolLM2-135M-Instruct)")
    export.add_argument("--pairs", choices=("all", "best-worst"), default="all",
                        help="all pairs of each ranking (default) or best against worst")
    export.add_argument("--ties", choices=("exclude", "include"), default="exclude",
                        help="leave tied pairs out of the preference pairs (default) or keep "
                             "them flagged tie=true with margin 0")
    export.add_argument("--min-agreement", type=float, default=None, metavar="X",
                        help="keep pairs judged by 2+ annotators whose share of agreeing "
                             "judgments is at least X (0-1)")
    export.add_argument("--test-fraction", type=float, default=0.1,
                        help="share of prompts in the test split (default: 0.1)")
    export.add_argument("--seed", type=int, default=0, help="picks the test prompts (default: 0)")
    export.add_argument("--keep-annotator-names", action="store_true",
                        help="export user names instead of pseudonyms")
    export.add_argument("--license", default="other",
                        help="license field of the dataset card, e.g. cc-by-4.0 (default: other)")
    export.add_argument("--private", action="store_true", help="Hub: create a private repository")
    export.add_argument("--overwrite", action="store_true",
                        help="replace the contents of a non-empty output folder")
    export.set_defaults(handler=_export)

    train = subcommand_group(commands, "train", "train a model on the collected preferences")
    parent = commands.choices["train"]
    if not any(a.dest == "db" for a in parent._actions):
        add_db(parent)  # `rankloop train --db X sft` works as well as `... sft --db X`
    sft = train.add_parser(
        "sft", help="supervised fine-tuning on demonstrations or chat data",
        description="Fine-tune a causal LM on the app's demonstrations (--from demonstrations), "
                    "its best-ranked responses (--from chosen), or a chat dataset with a "
                    "'messages' column (--data), with the loss on assistant tokens only; or on "
                    "plain text packed into blocks (--raw-text). Runs under `accelerate launch` "
                    "too. The output folder is a Hugging Face model usable as --model.",
    )
    add_db(sft)
    for action in sft._actions:  # a subcommand default would overwrite a --db given on `train`
        if action.dest == "db":
            action.default = argparse.SUPPRESS
    data = sft.add_argument_group("data")
    data.add_argument("--from", dest="db_source", choices=("demonstrations", "chosen"),
                      default="demonstrations",
                      help="what to read from --db when there is no --data "
                           "(default: demonstrations)")
    data.add_argument("--data", default=None, metavar="SOURCE",
                      help=".jsonl/.json/.parquet/.csv file, save_to_disk folder or Hub id with "
                           "'messages' (or 'prompt' + 'chosen'); with --raw-text a text column "
                           "or a .txt file")
    data.add_argument("--split", default="train", help="dataset split (default: train)")
    data.add_argument("--raw-text", action="store_true",
                      help="causal LM on plain text packed into --block-size blocks")
    data.add_argument("--text-column", default="text", help="raw text column (default: text)")
    data.add_argument("--block-size", type=positive_int, default=512,
                      help="tokens per packed block (default: 512)")
    data.add_argument("--max-length", type=positive_int, default=1024,
                      help="drop conversations longer than this many tokens (default: 1024)")
    data.add_argument("--eval-fraction", type=float, default=0.1,
                      help="share of prompts/documents held out (default: 0.1)")
    model = sft.add_argument_group("model")
    model.add_argument("--model", default="default",
                       help="'default' (embedded SmolLM2-135M-Instruct), a local Hugging Face "
                            "folder, or a Hub id")
    model.add_argument("--output", required=True, metavar="DIR",
                       help="folder for the fine-tuned model and metrics.jsonl")
    model.add_argument("--gradient-checkpointing", action="store_true",
                       help="recompute activations to save memory")
    model.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                       help="bf16 mixed precision (default: the accelerate config, else on a GPU)")
    optim = sft.add_argument_group("optimization")
    optim.add_argument("--batch-size", type=positive_int, default=4,
                       help="sequences per micro-batch per process (default: 4)")
    optim.add_argument("--grad-accum", type=positive_int, default=1,
                       help="micro-batches per optimizer step (default: 1)")
    optim.add_argument("--epochs", type=positive_int, default=1, help="default: 1")
    optim.add_argument("--max-steps", type=positive_int, default=None,
                       help="optimizer steps (overrides --epochs)")
    optim.add_argument("--learning-rate", "--lr", type=float, default=2e-5, help="default: 2e-5")
    optim.add_argument("--lr-schedule", choices=("cosine", "linear", "constant"),
                       default="cosine", help="after warm-up (default: cosine)")
    optim.add_argument("--warmup-ratio", type=float, default=0.03, help="default: 0.03")
    add_optimizer_options(optim)
    optim.add_argument("--seed", type=int, default=0, help="default: 0")
    optim.add_argument("--log-every", type=positive_int, default=10, help="steps (default: 10)")
    optim.add_argument("--eval-every", type=positive_int, default=None,
                       help="steps (default: before training and once per epoch)")
    optim.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_tracking_options(optim)
    sft.set_defaults(handler=_train_sft)


def _export(args: argparse.Namespace) -> int:
    from data import export, store

    if args.format == "arena":
        from data.arena import export_arena

        n = export_arena(store.open_store(existing_db_path(args)), args.to,
                         overwrite=args.overwrite)
        print(f"exported {n} votes between policies to {args.to} (Arena layout)")
        return 0
    config = export.ExportConfig(
        format=args.format, pairs=args.pairs, ties=args.ties, min_agreement=args.min_agreement,
        keep_annotator_names=args.keep_annotator_names, test_fraction=args.test_fraction,
        seed=args.seed, license=args.license)
    # Cheap checks first: a bad destination fails before the database is read.
    repo_id = None
    if args.to.startswith(HUB_PREFIX):
        repo_id = export.check_repo_id(args.to[len(HUB_PREFIX):])
        export.hub_token()
    else:
        export.check_target(Path(args.to).expanduser(), args.overwrite)
    path = existing_db_path(args)
    tokenizer = None
    if args.format == "standard":
        from training.models import load_tokenizer, resolve_model

        tokenizer = load_tokenizer(resolve_model(args.model))
    built = export.build_export(store.open_store(path), config, tokenizer=tokenizer,
                                db_label=f"database {path}")
    if repo_id is not None:
        url = export.push_to_hub(built, repo_id, private=args.private)
        print(f"exported to https://huggingface.co/datasets/{repo_id} ({url}): {built.line()}")
    else:
        target = export.write_local(built, args.to, overwrite=args.overwrite)
        print(f"exported to {target}: {built.line()}")
    return 0


def _train_sft(args: argparse.Namespace) -> int:
    from policy.sft import SFTConfig, train_sft

    db = None if args.data else existing_db_path(args)
    config = SFTConfig(
        output=args.output, model=args.model, data=args.data, db=db, db_source=args.db_source,
        split=args.split, raw_text=args.raw_text, text_column=args.text_column,
        block_size=args.block_size, max_length=args.max_length, eval_fraction=args.eval_fraction,
        per_device_batch_size=args.batch_size, gradient_accumulation_steps=args.grad_accum,
        epochs=args.epochs, max_steps=args.max_steps, learning_rate=args.learning_rate,
        warmup_ratio=args.warmup_ratio, lr_schedule=args.lr_schedule,
        gradient_checkpointing=args.gradient_checkpointing, bf16=args.bf16, seed=args.seed,
        log_every=args.log_every, eval_every=args.eval_every, **optimizer_settings(args),
        **tracking_settings(args),
    )
    summary = train_sft(config, progress=not args.no_progress)
    if summary.main_process:
        print(summary.line())
    return 0
