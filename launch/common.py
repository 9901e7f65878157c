"""Small helpers shared by the command modules."""

from __future__ import annotations

import argparse

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


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
