"""The store under several processes: concurrent writers, and a writer killed mid-run."""

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time

from data import store


def _writer(db_path: str, name: str, n: int) -> None:
    db = store.open_store(db_path)
    run_id = store.get_or_create_run(db, store.RunSettings(name, "transformers", 2, 0.8, 0.9, 8, 0))
    for i in range(n):
        [prompt_id] = store.upsert_prompts(
            db, [([{"role": "user", "content": f"{name} prompt {i}"}], name, str(i))]
        )
        store.add_candidates(db, prompt_id, run_id, [
            store.CandidateIn(f"{name} answer {i}.{j}", 3, "stop") for j in range(2)
        ])


def test_two_processes_write_concurrently_without_losing_rows(tmp_path):
    db_path = str(tmp_path / "r.db")
    ctx = multiprocessing.get_context("spawn")
    # Both start on a fresh file, so they also race on creating the schema.
    writers = [ctx.Process(target=_writer, args=(db_path, name, 150)) for name in ("a", "b")]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=120)
    assert [w.exitcode for w in writers] == [0, 0]
    db = store.open_store(db_path)
    assert db["schema_migrations"].count == len(store.MIGRATIONS)
    assert db["prompts"].count == 300
    assert db["candidates"].count == 600
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _candidates_per_prompt(db_path):
    conn = sqlite3.connect(db_path)
    try:
        return dict(conn.execute(
            "SELECT prompt_id, COUNT(*) FROM candidates GROUP BY prompt_id").fetchall())
    except sqlite3.OperationalError:  # tables not created yet
        return {}
    finally:
        conn.close()


def test_a_killed_generation_resumes_to_the_full_set(tmp_path, tiny_model_dir):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Question number {i}?"}) + "\n"
                               for i in range(40)))
    db_path = str(tmp_path / "r.db")
    cmd = [sys.executable, "-m", "launch.cli", "generate", "--db", db_path,
           "--prompts", str(prompts), "--model", tiny_model_dir, "--backend", "transformers",
           "--k", "3", "--max-new-tokens", "48", "--batch-size", "1", "--no-progress"]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while len(_candidates_per_prompt(db_path)) < 3:
        assert job.poll() is None, job.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline, "generation made no progress"
        time.sleep(0.05)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()

    before = _candidates_per_prompt(db_path)
    assert 3 <= len(before) < 40, "the kill should land mid-run"
    assert set(before.values()) == {3}, "a prompt's candidates are all stored or none"
    conn = sqlite3.connect(db_path)
    kept = conn.execute("SELECT id, text FROM candidates ORDER BY id").fetchall()
    conn.close()

    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{40 - len(before)} prompts sampled ({len(before)} already done" in resumed.stdout
    after = _candidates_per_prompt(db_path)
    assert len(after) == 40 and set(after.values()) == {3}
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT id, text FROM candidates ORDER BY id LIMIT ?",
                        [len(kept)]).fetchall() == kept
    assert conn.execute("SELECT COUNT(*) FROM generation_runs").fetchone()[0] == 1
    conn.close()
