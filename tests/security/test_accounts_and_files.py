"""`rankloop users` account management and the permissions of the files the app writes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from data import labeling, store
from labeler.auth import verify_password
from labeler.jobs import JobRunner, jobs_dir


def rankloop(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "launch.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_users_disable_enable_reset_password_and_set_role(tmp_path):
    db = str(tmp_path / "u.db")
    assert rankloop("users", "add", "Ann", "--db", db, stdin="first-password\n").returncode == 0
    twin = rankloop("users", "add", "ａｎｎ", "--db", db, stdin="other-password\n")
    assert twin.returncode != 0 and "already exists" in twin.stderr
    hidden = rankloop("users", "add", "ann\u200b", "--db", db, stdin="other-password\n")
    assert hidden.returncode != 0 and "invisible" in hidden.stderr

    conn = store.open_store(db)
    user = labeling.get_user(conn, "ann")
    labeling.create_session(conn, user.id, "a-live-token", ttl_s=3600)
    assert rankloop("users", "disable", "ANN", "--db", db).returncode == 0
    assert labeling.session_user(conn, "a-live-token") is None
    assert "disabled" in rankloop("users", "list", "--db", db).stdout
    assert rankloop("users", "enable", "ann", "--db", db).returncode == 0
    assert not labeling.get_user(conn, "ann").disabled

    labeling.create_session(conn, user.id, "another-token", ttl_s=3600)
    reset = rankloop("users", "reset-password", "ann", "--db", db, stdin="second-password\n")
    assert reset.returncode == 0, reset.stderr
    assert verify_password("second-password", labeling.get_user(conn, "ann").password_hash)
    assert labeling.session_user(conn, "another-token") is None
    short = rankloop("users", "reset-password", "ann", "--db", db, stdin="short\n")
    assert short.returncode != 0 and "at least 8" in short.stderr

    assert rankloop("users", "set-role", "ann", "admin", "--db", db).returncode == 0
    assert labeling.get_user(conn, "ann").is_admin
    missing = rankloop("users", "disable", "nobody", "--db", db)
    assert missing.returncode != 0 and "no user" in missing.stderr


def test_the_database_its_wal_and_job_logs_are_owner_only(tmp_path):
    old = os.umask(0o022)  # a permissive umask, as on most machines
    try:
        db_path = str(tmp_path / "p.db")
        db = store.open_store(db_path)
        db.execute("INSERT INTO users (name, name_key, role, password_hash, created_at) "
                   "VALUES ('x', 'x', 'admin', 'h', 0)")
        for name in (db_path, db_path + "-wal", db_path + "-shm"):
            assert _mode(name) == 0o600, name
        job = JobRunner(db_path).start("status", ["status"], started_by="x")
        assert _mode(jobs_dir(db_path)) == 0o700
        assert _mode(job.log_path) == 0o600
        # A file made readable to others by hand is narrowed when the app opens it.
        db.close()
        os.chmod(db_path, 0o644)
        store.open_store(db_path).close()
        assert _mode(db_path) == 0o600
    finally:
        os.umask(old)
