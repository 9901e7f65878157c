"""The newcomer's path: `rankloop app` on an empty database, with the embedded model."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from data import store
from tests.integration.conftest import api_client, free_port, wait_for_port


def _start(db_path, port):
    process = subprocess.Popen(
        [sys.executable, "-m", "launch.cli", "app", "--db", db_path, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        assert line or process.poll() is None, "".join(lines)
        lines.append(line)
        if "RankLoop app on" in line:
            break
    wait_for_port(port, process)  # the line is printed just before the server binds
    return process, "".join(lines)


def _job_log(db_path):
    db = store.open_store(db_path)
    logs = [r[0] for r in db.execute("SELECT log_path FROM jobs") if r[0]]
    return "\n".join(open(path, errors="replace").read()[-3000:] for path in logs)


def _job_pids(db_path):
    db = store.open_store(db_path)
    return [r[0] for r in db.execute("SELECT pid FROM jobs WHERE status = 'running'")]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


@pytest.mark.slow
def test_an_empty_store_generates_and_serves_real_candidates(tmp_path):
    db_path = str(tmp_path / "new.db")
    port = free_port()
    app, output = _start(db_path, port)
    try:
        password = re.search(r"created user 'admin' with password (\S+)", output).group(1)
        assert "Generating candidates in the background" in output
        client = api_client(f"http://127.0.0.1:{port}/", ("admin", password))
        started = time.monotonic()
        html, status = client.predict(api_name="/load_task")[:2]
        assert status["assignment_id"] is None and status["waiting"]
        assert "Generating candidates" in html
        details = set()
        while status["assignment_id"] is None:
            assert time.monotonic() - started < 600, "no candidates arrived:\n" + _job_log(db_path)
            # The waiting screen says how far generation is: loading, then N of M prompts.
            details.add(re.sub(r"\d+", "N", html.split('id="rl-state-detail">', 1)[-1]
                               .split("</p>", 1)[0]))
            time.sleep(2)
            html, status = client.predict(api_name="/load_task")[:2]
        print(f"first item ready {time.monotonic() - started:.0f} s after the first page load")
        print("waiting screen said:", details)
        assert any("Loading the model" in d or "prompts ready" in d for d in details), details
        assert status["candidates"] == 4
        assert all(f'id="rl-text-{i}"' in html for i in range(4))
        run = store.open_store(db_path)["generation_runs"].get(1)
        assert (run["model"], run["backend"], run["k"]) == ("default", "transformers", 4)
        [job_pid] = _job_pids(db_path)
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=60)
    # Stopping the app stops its job; the next start carries on with it.
    deadline = time.monotonic() + 30
    while _alive(job_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(job_pid)
    db = store.open_store(db_path)
    assert [r[0] for r in db.execute("SELECT status FROM jobs")] == ["interrupted"]

    app, output = _start(db_path, port)
    try:
        assert "created user" not in output
        assert "Generating candidates in the background" in output
        assert len(_job_pids(db_path)) == 1
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=60)
    assert _job_pids(db_path) == []
