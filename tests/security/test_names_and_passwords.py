"""One password rule for every way an account is made or changed, and user names checked by
the PRECIS username profile (RFC 8265), so that no invisible character makes a look-alike."""

from __future__ import annotations

import subprocess
import sys

import pytest

from data import labeling, store
from labeler import admin, auth
from labeler.auth import hash_password
from labeler.handlers import LabelerService
from tests.labeling_fixtures import PASSWORD, make_labeling_db

INVISIBLE = ["\u034f", "\ufe0f", "\u2800", "\u3164", "\u115f", "\u200b", "\u202e", "\u00ad"]
WEAK = [("annabel1", "annabel1"), ("annabel2", "ANNABEL2"), ("annabel3", "aaaaaaaaaaaa"),
        ("annabel4", "abababababab"), ("annabel5", "short")]


def _rankloop(*args, password: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch.cli", *args], input=password + "\n",
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def svc(tmp_path):
    return LabelerService(make_labeling_db(tmp_path / "app.db", n_prompts=1, k=3),
                          autogenerate=False)


def test_the_command_line_refuses_what_the_console_refuses(svc):
    for name, password in WEAK:
        console = admin.create_user(svc, "root", name=name, password=password)
        assert console.startswith("Not created"), console
        cli = _rankloop("users", "add", name, "--db", svc.db_path, password=password)
        assert cli.returncode != 0 and "Traceback" not in cli.stderr, (name, cli.stdout)
        reason = auth.password_problem(password, name)
        assert reason in cli.stderr, (cli.stderr, reason)
    assert [u.name for u in labeling.list_users(svc.db())] == ["ann", "bob", "root"]
    reset = _rankloop("users", "reset-password", "ann", "--db", svc.db_path, password="ann")
    assert reset.returncode != 0 and "at least 8" in reset.stderr
    reset = _rankloop("users", "reset-password", "bob", "--db", svc.db_path,
                      password="bbbbbbbbbbbb")
    assert reset.returncode != 0 and "too few characters" in reset.stderr
    fine = _rankloop("users", "add", "carol", "--db", svc.db_path, password="carols-pass-1")
    assert fine.returncode == 0, fine.stderr


@pytest.mark.parametrize("char", INVISIBLE, ids=[f"U+{ord(c):04X}" for c in INVISIBLE])
def test_invisible_characters_make_no_name(svc, char):
    for name in (f"boss{char}", f"{char}boss", f"bo{char}ss"):
        with pytest.raises(labeling.LabelingError, match="invisible"):
            labeling.normalize_name(name)
        answer = admin.create_user(svc, "root", name=name, password="a-good-password",
                                   role="admin")
        assert answer.startswith("Not created"), answer
    cli = _rankloop("users", "add", f"boss{char}", "--db", svc.db_path,
                    password="a-good-password")
    assert cli.returncode != 0 and "invisible" in cli.stderr, cli.stderr
    assert labeling.get_user(svc.db(), "boss") is None


def test_ordinary_names_pass_and_existing_accounts_are_still_found(svc):
    for name in ("Zoë", "user.name-1_x", "李雷", "ann@example.org"):
        assert labeling.normalize_name(name) == name
    assert labeling.normalize_name("ＢＯＢ２") == "BOB2"  # width folded, as before
    # A name stored before this rule (a symbol PRECIS refuses) still logs in by its name_key.
    db = svc.db()
    db.execute("INSERT INTO users (name, name_key, role, password_hash, created_at) "
               "VALUES (?, ?, 'annotator', ?, 0)",
               ["star★", labeling.name_key("star★"), hash_password(PASSWORD)])
    db.commit()
    assert labeling.get_user(db, "STAR★").name == "star★"
    assert svc.check_login("star★", PASSWORD)
    with pytest.raises(labeling.LabelingError):
        labeling.add_user(store.open_store(svc.db_path), "star★", "annotator", "x")
