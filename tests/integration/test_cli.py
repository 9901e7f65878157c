"""The `rankloop` command as users run it: real processes, real files, exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def rankloop(*args, cwd=None, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "launch.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


def _assert_clean_failure(result, message):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("rankloop: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert message in errors[0], errors[0]


def _write(path: Path, content) -> str:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


@pytest.mark.parametrize("make_args,message", [
    (lambda d, m: ["--prompts", _write(d / "empty.jsonl", "")], "contains no rows"),
    (lambda d, m: ["--prompts", _write(d / "cols.csv", "text\nhello\n")], "no column 'prompt'"),
    (lambda d, m: ["--prompts", _write(d / "bad.jsonl", b'{"prompt": "\xff\xfe"}\n')],
     "is not valid UTF-8"),
    (lambda d, m: ["--prompts", _write(d / "long.jsonl", json.dumps({"prompt": "x " * 2000})),
                   "--model", m, "--max-prompt-tokens", "1024"], "exceed --max-prompt-tokens 1024"),
    (lambda d, m: ["--k", "0", "--model", m], "k must be at least 1"),
    (lambda d, m: ["--k", "9", "--model", m], "k must be at most 8"),
    (lambda d, m: ["--backend", "tgi"], "unknown backend 'tgi'"),
    (lambda d, m: ["--model", str(d / "no-such-model")], "does not exist"),
])
def test_bad_input_fails_with_one_line_and_writes_nothing(tmp_path, tiny_model_dir, make_args,
                                                          message):
    db = tmp_path / "r.db"
    result = rankloop("generate", "--db", str(db), *make_args(tmp_path, tiny_model_dir))
    _assert_clean_failure(result, message)
    assert not db.exists()


@pytest.mark.parametrize("make_db,message", [
    (lambda d: d / "missing" / "r.db", "does not exist"),
    (lambda d: d, "is a directory"),
])
def test_unwritable_db_path(tmp_path, tiny_model_dir, make_db, message):
    result = rankloop("generate", "--db", str(make_db(tmp_path)), "--model", tiny_model_dir)
    _assert_clean_failure(result, message)
    assert not (tmp_path / "missing").exists()


def test_generate_writes_to_the_env_db_and_prints_a_summary(tmp_path, tiny_model_dir):
    prompts = _write(tmp_path / "p.csv", "prompt\nHello?\nWhat is tea?\n")
    result = rankloop("generate", "--prompts", prompts, "--model", tiny_model_dir, "--k", "2",
                      "--max-new-tokens", "4", "--backend", "transformers", cwd=tmp_path,
                      env={"RANKLOOP_DB": str(tmp_path / "env.db")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 prompts sampled" in result.stdout and "4 candidates" in result.stdout
    assert "tokens/s" in result.stdout
    assert (tmp_path / "env.db").exists() and not (tmp_path / "rankloop.db").exists()
    status = rankloop("status", "--db", str(tmp_path / "env.db"))
    assert status_rows(status)["candidates"] == "4"
    assert status_rows(status)["items"].startswith("2 ready to rank")


def status_rows(result) -> dict[str, str]:
    """``rankloop status`` as {row name: the rest of its line}."""
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {}
    for line in result.stdout.splitlines()[1:]:
        if line.startswith("  ") and not line.startswith("    "):
            name, _, value = line.strip().partition("  ")
            rows[name] = value.strip()
    return rows


def test_status_shows_items_ranked_users_and_jobs_before_any_page_asks(tmp_path):
    import time

    from data import labeling, store
    from data.rankings import Submission
    from tests.labeling_fixtures import make_labeling_db

    db_path = str(tmp_path / "r.db")
    make_labeling_db(db_path, n_prompts=3, k=3)
    db = store.open_store(db_path)
    # A fourth prompt whose candidates no page has asked for yet: still ready to rank.
    [prompt_id] = store.upsert_prompts(db, [([{"role": "user", "content": "new?"}], "t", None)])
    run_id = db.execute("SELECT id FROM generation_runs").fetchone()[0]
    store.add_candidates(db, prompt_id, run_id, [store.CandidateIn(t, 1, "stop") for t in "abc"])
    ann = labeling.get_user(db, "ann")
    first = labeling.next_assignment(db, ann.id, labeling.QueuePolicy())
    labeling.submit_assignment(db, first.id, ann.id,
                               Submission(tuple(first.candidate_ids), (1, 2, 3)))
    labeling.next_assignment(db, ann.id, labeling.QueuePolicy())  # held, not yet submitted
    labeling.set_disabled(db, "bob", True)
    db.execute("INSERT INTO jobs (kind, argv, status, started_at, pid) VALUES "
               "('generate', '[]', 'running', ?, 4242), ('train', '[]', 'failed', ?, NULL)",
               [time.time() - 120, time.time()])
    db.conn.commit()

    result = rankloop("status", "--db", db_path)
    rows = status_rows(result)
    assert rows["items"] == "4 ready to rank: 1 ranked, 1 in progress, 0 set aside; 0 gold"
    assert rows["rankings"].startswith("1 (latest versions; 0 skips")
    assert rows["users"] == "3 (1 admins, 1 disabled)"
    assert rows["jobs"] == "1 running, 1 failed"
    assert "job 1 (generate) running for 2 min, pid 4242" in result.stdout


@pytest.mark.parametrize("command", [
    ["status"], ["users", "list"], ["users", "disable", "ann"], ["users", "enable", "ann"],
    ["users", "set-role", "ann", "admin"], ["users", "reset-password", "ann"],
    ["export", "--to", "out.jsonl"], ["train", "reward", "--output", "rm"],
])
def test_commands_on_a_database_refuse_a_missing_one_and_create_nothing(tmp_path, command):
    typo = tmp_path / "rankloop.bd"
    result = subprocess.run([sys.executable, "-m", "launch.cli", *command, "--db", str(typo)],
                            input="long-password\n", capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    _assert_clean_failure(result, f"database {typo} does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_help_says_what_each_command_does():
    from launch.cli import _build_parser

    parser = _build_parser()
    commands = {name: sub for name, sub in _leaf_commands(parser)}
    loop_help = commands["rankloop loop"].format_help()
    assert "DPO" in loop_help and "REBEL" in loop_help and "PPO" in loop_help
    epochs = next(a for a in commands["rankloop loop"]._actions if a.dest == "epochs")
    assert "DPO" in epochs.help and "REBEL" in epochs.help
    users_help = parser._subparsers._group_actions[0].choices["users"].format_help()
    for verb in ("add", "list", "disable", "enable", "reset-password", "set-role"):
        assert verb in users_help.split("positional arguments")[0], verb
    role = next(a for a in commands["rankloop users add"]._actions if a.dest == "role")
    assert "default: annotator" in role.help
    # Optional flags are written as optional in the README's synopses.
    assert "--model M " not in README.read_text().split("## On 8 GPUs")[0]


def _leaf_commands(parser, prefix="rankloop"):
    """(full command name, parser) for every runnable command, nested groups included."""
    for action in parser._actions:
        if isinstance(action, __import__("argparse")._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _leaf_commands(sub, f"{prefix} {name}")
            return
    yield prefix, parser


def test_every_command_has_help_and_a_readme_section():
    from launch.cli import _build_parser

    readme = README.read_text()
    leaves = list(_leaf_commands(_build_parser()))
    assert {"rankloop generate", "rankloop app", "rankloop users add"} <= {n for n, _ in leaves}
    for name, sub in leaves:
        assert sub.description, f"{name} has no description"
        assert name in readme, f"README does not mention `{name}`"
        assert any(a.dest == "db" for a in sub._actions), f"{name} lacks --db"


def test_users_add_reads_the_password_from_stdin_and_refuses_duplicates(tmp_path):
    db = str(tmp_path / "r.db")
    created = subprocess.run([sys.executable, "-m", "launch.cli", "users", "add", "ann",
                              "--role", "admin", "--db", db], input="long-password\n",
                             capture_output=True, text=True, timeout=60)
    assert created.returncode == 0 and "created admin 'ann'" in created.stdout
    import sqlite3

    [(stored,)] = sqlite3.connect(db).execute("SELECT password_hash FROM users").fetchall()
    assert stored.startswith("scrypt$") and "long-password" not in stored
    again = subprocess.run([sys.executable, "-m", "launch.cli", "users", "add", "ann",
                            "--db", db], input="long-password\n", capture_output=True,
                           text=True, timeout=60)
    _assert_clean_failure(again, "user 'ann' already exists")
    short = subprocess.run([sys.executable, "-m", "launch.cli", "users", "add", "bob",
                            "--db", db], input="short\n", capture_output=True, text=True,
                           timeout=60)
    _assert_clean_failure(short, "at least 8 characters")
    listing = rankloop("users", "list", "--db", db)
    assert listing.stdout.split() == ["ann", "admin"]


def test_gold_import_is_all_or_nothing(tmp_path):
    db = str(tmp_path / "r.db")
    good = {"prompt": "2+2?", "candidates": ["4", "5"], "ranks": [1, 2]}
    path = _write(tmp_path / "gold.jsonl", json.dumps(good) + "\n"
                  + json.dumps({"prompt": "3+3?", "candidates": ["6"], "ranks": [1]}) + "\n")
    _assert_clean_failure(rankloop("gold", "import", path, "--db", db), "at least 2 candidates")
    import sqlite3

    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM items").fetchone()[0] == 0
    _assert_clean_failure(rankloop("gold", "import", _write(tmp_path / "bad.jsonl", "{oops\n"),
                                   "--db", db), "bad.jsonl line 1")
    ok = rankloop("gold", "import", _write(tmp_path / "ok.jsonl", json.dumps(good) + "\n"),
                  "--db", db)
    assert ok.returncode == 0 and "imported 1 gold items" in ok.stdout
    assert sqlite3.connect(db).execute("SELECT is_gold FROM items").fetchall() == [(1,)]


def test_app_refuses_an_unwritable_database(tmp_path):
    result = rankloop("app", "--db", str(tmp_path / "missing" / "r.db"), "--port", "1")
    _assert_clean_failure(result, "does not exist")


def test_what_the_app_writes_beside_its_database_is_ignored_by_git():
    """`rankloop app` in a checkout writes rankloop.db (and -wal/-shm) and the jobs' logs in
    rankloop.db.jobs/: none of it shows up as a change to commit."""
    from labeler.jobs import jobs_dir

    root = README.parent
    if not (root / ".git").exists():
        pytest.skip("not a git checkout: nothing to check the ignore rules against")
    written = ["rankloop.db", "rankloop.db-wal", "rankloop.db-shm",
               str((jobs_dir(str(root / "rankloop.db")) / "job-1-generate.log").relative_to(root))]
    result = subprocess.run(["git", "check-ignore", *written], cwd=root, capture_output=True,
                            text=True)
    assert result.stdout.split() == written
