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
