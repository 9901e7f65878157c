"""`rankloop app`, `rankloop users` and `rankloop gold`: the labeling side."""

from __future__ import annotations

import argparse
import atexit
import getpass
import json
import os
import signal
import sys

from data import labeling, store
from launch.cmd_simulate import add_queue_order_args, apply_queue_order
from launch.common import UserError, add_db, db_path, existing_db_path, positive_int


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def register(commands) -> None:
    app = commands.add_parser(
        "app", help="serve the labeling app in the browser",
        description="Serve the labeling app. On an empty database it starts generating "
                    "candidates for the bundled prompts in the background; with no users it "
                    "creates an admin and prints the password once.")
    add_db(app)
    app.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default: 127.0.0.1; 0.0.0.0 for a team)")
    app.add_argument("--port", type=positive_int, default=7860, help="default: 7860")
    app.add_argument("--overlap", type=positive_int, default=1,
                     help="distinct annotators per item (default: 1; an overlap saved in the "
                          "admin console's Project tab wins)")
    app.add_argument("--timeout-minutes", type=float, default=30.0,
                     help="an unsubmitted item returns to the queue after this (default: 30)")
    app.add_argument("--gold-rate", type=float, default=0.0,
                     help="fraction of tasks drawn from gold items, when any are left "
                          "(default: 0)")
    app.add_argument("--no-autogenerate", action="store_true",
                     help="do not start generating candidates when the database has none")
    add_queue_order_args(app)
    app.add_argument("--session-hours", type=positive_float, default=12.0,
                     help="a login lasts this long (default: 12)")
    app.add_argument("--ssl-certfile", default=None,
                     help="serve HTTPS with this certificate (PEM); needs --ssl-keyfile")
    app.add_argument("--ssl-keyfile", default=None, help="the certificate's private key (PEM)")
    app.add_argument("--forwarded-allow-ips", default=None, metavar="ADDRESSES",
                     help="comma-separated addresses of reverse proxies whose "
                          "X-Forwarded-For/-Proto headers are trusted, e.g. 127.0.0.1 behind "
                          "nginx on the same host (default: none; the connection's address "
                          "counts)")
    app.set_defaults(handler=_app)

    users = commands.add_parser(
        "users", help="add, list, disable, enable annotators and admins, reset passwords, "
        "set roles", description="Manage the app's users: add, list, disable, enable, "
        "reset-password, set-role. Every command but add refuses a missing database.")
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="WHAT")
    add = users_sub.add_parser(
        "add", help="create a user", description="Create a user. The password is read from a "
        "prompt, or from the first line of standard input when it is not a terminal.")
    add_db(add)
    add.add_argument("name")
    add.add_argument("--role", choices=labeling.ROLES, default="annotator",
                     help="default: annotator")
    add.set_defaults(handler=_users_add)
    listing = users_sub.add_parser("list", help="list users", description="List users.")
    add_db(listing)
    listing.set_defaults(handler=_users_list)
    for what, help_text in (("disable", "disable a user and end their sessions at once"),
                            ("enable", "let a disabled user log in again")):
        sub = users_sub.add_parser(what, help=help_text, description=help_text.capitalize()
                                   + ".")
        add_db(sub)
        sub.add_argument("name")
        sub.set_defaults(handler=_users_disable if what == "disable" else _users_enable)
    reset = users_sub.add_parser(
        "reset-password", help="set a new password and end the user's sessions",
        description="Set a new password (read like `users add` does) and end every session "
                    "opened with the old one.")
    add_db(reset)
    reset.add_argument("name")
    reset.set_defaults(handler=_users_reset_password)
    role = users_sub.add_parser("set-role", help="make a user an annotator or an admin",
                                description="Change a user's role.")
    add_db(role)
    role.add_argument("name")
    role.add_argument("role", choices=labeling.ROLES)
    role.set_defaults(handler=_users_set_role)

    gold = commands.add_parser("gold", help="add gold items with known rankings",
                               description="Manage gold items used to check annotators.")
    gold_sub = gold.add_subparsers(dest="gold_command", required=True, metavar="WHAT")
    imp = gold_sub.add_parser(
        "import", help="import gold items from a .jsonl file",
        description='Import gold items: one JSON object per line with "prompt" (a string or '
                    'chat messages), "candidates" (list of strings) and "ranks" (1 = best).')
    add_db(imp)
    imp.add_argument("file")
    imp.set_defaults(handler=_gold_import)


def _app(args: argparse.Namespace) -> int:
    from labeler.app import serve
    from labeler.auth import generate_password, hash_password
    from labeler.handlers import LabelerService

    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        raise UserError("--ssl-certfile and --ssl-keyfile go together")
    for path in (args.ssl_certfile, args.ssl_keyfile):
        if path and not os.path.isfile(path):
            raise UserError(f"cannot read {path}")
    policy = labeling.QueuePolicy(overlap=args.overlap, timeout_s=args.timeout_minutes * 60,
                                  gold_rate=args.gold_rate)
    svc = LabelerService(db_path(args), policy=policy, autogenerate=not args.no_autogenerate)
    db = svc.db()
    apply_queue_order(args, db)
    if labeling.user_count(db) == 0:
        password = generate_password()
        labeling.add_user(db, "admin", "admin", hash_password(password))
        print("No users yet: created user 'admin' with password "
              f"{password}\n(shown once; add annotators with `rankloop users add NAME`)",
              flush=True)
    if svc.ensure_candidates():
        print("Generating candidates in the background; items appear in the app as they "
              "arrive.", flush=True)
    scheme = "https" if args.ssl_certfile else "http"
    print(f"RankLoop app on {scheme}://{args.host}:{args.port}  (database {svc.db_path})",
          flush=True)
    # Background jobs end with the app (generation resumes where it stopped on the next start).
    atexit.register(svc.jobs.stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(svc, host=args.host, port=args.port, session_hours=args.session_hours,
          ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
          forwarded_allow_ips=args.forwarded_allow_ips)
    return 0


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if first != getpass.getpass("again: "):
            raise UserError("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def _checked_password(name: str) -> str:
    """A password read like `users add` does, refused by the same rule as the Admin tab's."""
    from labeler.auth import password_problem

    password = _read_password()
    problem = password_problem(password, name)
    if problem:
        raise UserError(problem)
    return password


def _users_add(args: argparse.Namespace) -> int:
    from labeler.auth import hash_password

    try:
        name = labeling.normalize_name(args.name)
    except labeling.LabelingError as exc:
        raise UserError(str(exc)) from None
    password = _checked_password(name)
    db = store.open_store(db_path(args))
    try:
        user = labeling.add_user(db, name, args.role, hash_password(password))
    except (labeling.LabelingError, ValueError) as exc:
        raise UserError(str(exc)) from None
    print(f"created {user.role} {user.name!r}")
    return 0


def _users_list(args: argparse.Namespace) -> int:
    db = store.open_store(existing_db_path(args))
    for user in labeling.list_users(db):
        print(f"{user.name}\t{user.role}" + ("\tdisabled" if user.disabled else ""))
    return 0


def _change_user(args: argparse.Namespace, change) -> labeling.User:
    db = store.open_store(existing_db_path(args))
    try:
        return change(db)
    except labeling.LabelingError as exc:
        raise UserError(str(exc)) from None


def _users_disable(args: argparse.Namespace) -> int:
    user = _change_user(args, lambda db: labeling.set_disabled(db, args.name, True))
    print(f"disabled {user.name!r}; their sessions have ended")
    return 0


def _users_enable(args: argparse.Namespace) -> int:
    user = _change_user(args, lambda db: labeling.set_disabled(db, args.name, False))
    print(f"enabled {user.name!r}")
    return 0


def _users_reset_password(args: argparse.Namespace) -> int:
    from labeler.auth import hash_password

    user = labeling.get_user(store.open_store(existing_db_path(args)), args.name)
    if user is None:
        raise UserError(f"no user {args.name!r}")
    password_hash = hash_password(_checked_password(user.name))  # asked once the user exists
    user = _change_user(args, lambda db: labeling.set_password_hash(db, args.name,
                                                                    password_hash))
    print(f"new password for {user.name!r}; their sessions have ended")
    return 0


def _users_set_role(args: argparse.Namespace) -> int:
    user = _change_user(args, lambda db: labeling.set_role(db, args.name, args.role))
    print(f"{user.name!r} is now {user.role}")
    return 0


def _gold_import(args: argparse.Namespace) -> int:
    from data.prompts import PromptSourceError, as_messages

    try:
        with open(args.file, encoding="utf-8") as f:
            lines = [(n, line) for n, line in enumerate(f, start=1) if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {args.file}: {exc}") from None
    items = []
    for number, line in lines:
        where = f"{args.file} line {number}"
        try:
            row = json.loads(line)
            messages = as_messages(row.get("prompt"), where)
            candidates, ranks = row["candidates"], row["ranks"]
        except (json.JSONDecodeError, KeyError, AttributeError, PromptSourceError) as exc:
            raise UserError(f"{where}: expected prompt, candidates and ranks ({exc})") from None
        if messages is None:
            raise UserError(f"{where}: empty prompt")
        items.append((messages, candidates, ranks))
    db = store.open_store(db_path(args))
    # All lines or none: a bad line in the middle leaves the store as it was.
    try:
        with store.transaction(db):
            for messages, candidates, ranks in items:
                labeling.add_gold_item(db, messages, candidates, ranks, source=args.file)
    except labeling.LabelingError as exc:
        raise UserError(str(exc)) from None
    print(f"imported {len(items)} gold items")
    return 0
