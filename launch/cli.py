"""The ``rankloop`` command line: thin shells over the recipes, one module per stage.

Errors the user can fix (bad files, bad flags, missing models, unwritable paths) print one
``rankloop: error: ...`` line and exit with status 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import sys

from data import store
from launch import (cmd_app, cmd_arena, cmd_export, cmd_generate, cmd_policy, cmd_reward,
                    cmd_simulate)
from launch.common import UserError

EXIT_USAGE = 2
# Each module adds its subcommands with `register(commands)`.
COMMAND_MODULES = (cmd_generate, cmd_app, cmd_reward, cmd_export, cmd_policy, cmd_simulate,
                   cmd_arena)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rankloop",
        description="Rank model responses, train reward models and policies on the rankings.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """The project's exceptions that mean "the input is wrong", reported as one line. Any
    other exception, a library's ValueError included, is a defect: it keeps its traceback."""
    from data.chat import ChatTemplateError
    from data.errors import ConfigError
    from data.labeling import LabelingError
    from data.prompts import PromptSourceError
    from training.models import ModelNotFoundError
    from policy.sampling import BackendError

    return (UserError, ConfigError, store.StoreError, PromptSourceError, ChatTemplateError,
            ModelNotFoundError, BackendError, LabelingError)


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except _user_errors() as exc:
        print(f"rankloop: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rankloop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
