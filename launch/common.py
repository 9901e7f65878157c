"""Small helpers shared by the command modules."""

from __future__ import annotations

import argparse
from pathlib import Path

from data import store


class UserError(Exception):
    """Any error whose message alone tells the user what to fix; printed as one line."""


def add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", default=None,
        help="SQLite database (default: $RANKLOOP_DB, else ./rankloop.db)",
    )


def db_path(args: argparse.Namespace) -> str:
    return args.db or store.default_db_path()


def existing_db_path(args: argparse.Namespace) -> str:
    """``db_path`` for commands that read or change what a database holds: a missing file is
    refused (a typo would otherwise create an empty database and report nothing)."""
    path = db_path(args)
    if not Path(path).is_file():
        raise UserError(f"database {path} does not exist")
    return path


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_subcommand_db(parser: argparse.ArgumentParser) -> None:
    """``--db`` on a subcommand of a group that has it too (``rankloop train --db X reward``
    and ``rankloop train reward --db X`` both work): the subcommand's own default would
    overwrite a --db given on the group, so it has none."""
    add_db(parser)
    for action in parser._actions:
        if action.dest == "db":
            action.default = argparse.SUPPRESS


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_train_command(commands, name: str, spec, function: str, *, help: str,
                      description: str, extra=None) -> argparse.ArgumentParser:
    """``rankloop train NAME``: the flags of ``spec``'s config (``launch.config_args``), --db and
    --no-progress. Its handler builds the config (the database for --db when the config reads
    one and no --data is given), runs ``function`` of the recipe's module with it, plus
    ``extra(args)``'s keywords, and prints the summary line on the main process."""
    from launch.config_args import add_config_options

    parser = train_group(commands).add_parser(name, help=help, description=description)
    add_subcommand_db(parser)
    add_config_options(parser, spec)
    add_progress(parser)
    parser.set_defaults(handler=lambda args: _train(spec, function, args, extra))
    return parser


def _train(spec, function: str, args: argparse.Namespace, extra) -> int:
    import importlib

    from launch.config_args import config_from_args, read_config

    values = {}
    if any(f.name == "db" for f in read_config(spec.module, spec.name)):
        values["db"] = None if getattr(args, "data", None) else existing_db_path(args)
    config = config_from_args(spec, args, **values)
    train = getattr(importlib.import_module(spec.module), function)
    summary = train(config, progress=not args.no_progress, **(extra(args) if extra else {}))
    if summary.main_process:
        print(summary.line())
    return 0


def train_group(commands):
    """The sub-parsers of ``rankloop train``, which takes ``--db`` for all of them."""
    return group_with_db(commands, "train", "train a model on the collected preferences")


def group_with_db(commands, name: str, help: str):
    group = subcommand_group(commands, name, help)
    parent = commands.choices[name]
    if not any(a.dest == "db" for a in parent._actions):
        add_db(parent)
    return group


def subcommand_group(commands, name: str, help: str):
    """The sub-parsers of a grouping command such as ``train``, created on first use, so that
    each stage's module can add ``rankloop train <algorithm>`` without knowing the others."""
    if name in commands.choices:
        parser = commands.choices[name]
    else:
        parser = commands.add_parser(name, help=help, description=help)
        parser.set_defaults(_group=parser)
        parser._rankloop_group = parser.add_subparsers(dest=f"{name}_command", required=True,
                                                       metavar="WHAT")
    return parser._rankloop_group
