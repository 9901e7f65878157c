"""`rankloop export` and `rankloop train sft`."""

from __future__ import annotations

import argparse
from pathlib import Path

from launch.common import add_db, add_train_command, existing_db_path
from launch.config_args import ConfigSpec

SFT = ConfigSpec("policy.sft", "SFTConfig", title="SFT", exclude=("db",),
                 choices={"db_source": "policy.sft:DB_SOURCES"})
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

    add_train_command(
        commands, "sft", SFT, "train_sft",
        help="supervised fine-tuning on demonstrations or chat data",
        description="Fine-tune a causal LM on the app's demonstrations (--from demonstrations), "
                    "its best-ranked responses (--from chosen), or a chat dataset with a "
                    "'messages' column (--data), with the loss on assistant tokens only; or on "
                    "plain text packed into blocks (--raw-text). Runs under `accelerate launch` "
                    "too. The output folder is a Hugging Face model usable as --model.",
    )


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
