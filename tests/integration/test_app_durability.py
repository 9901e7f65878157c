"""Concurrent annotators, then the server killed with SIGKILL and restarted: every
acknowledged submission is stored exactly once."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request


from data import store
from tests.integration.conftest import api_client, free_port
from tests.labeling_fixtures import PASSWORD, make_labeling_db

CLIENTS = 8


def _start_server(db_path, port):
    process = subprocess.Popen(
        [sys.executable, "-m", "launch.cli", "app", "--db", db_path, "--port", str(port),
         "--no-autogenerate"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return process
        except OSError:
            assert process.poll() is None, process.stdout.read().decode()[-3000:]
            time.sleep(0.3)
    raise AssertionError("the app did not start")


def _annotate(url, name, acknowledged, stop, errors):
    try:
        client = api_client(url, (name, PASSWORD))
        status = client.predict(api_name="/load_task")[1]
        while not stop.is_set() and status["assignment_id"]:
            assignment_id = status["assignment_id"]
            status = client.predict({"assignment_id": assignment_id, "ranks": [1, 2, 2, 3]},
                                    api_name="/submit")[1]
            if status["message"].startswith("Saved"):
                acknowledged.append((assignment_id, name))
    except Exception as exc:  # the server dies under the clients: expected after the kill
        errors.append(repr(exc))


def test_acknowledged_votes_survive_a_sigkill(tmp_path):
    names = [(f"user{i}", "annotator") for i in range(CLIENTS)]
    db_path = make_labeling_db(tmp_path / "app.db", n_prompts=400, k=4, users=names)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = _start_server(db_path, port)
    acknowledged, errors, stop = [], [], threading.Event()
    threads = [threading.Thread(target=_annotate, args=(url, name, acknowledged, stop, errors))
               for name, _ in names]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(server.pid, signal.SIGKILL)  # mid-stream: clients are still submitting
    server.wait()
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert len(acknowledged) >= 40, errors[:3]

    server = _start_server(db_path, port)  # a restart opens the same file cleanly
    try:
        db = store.open_store(db_path)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {row["submission_key"]: row for row in db.query(
            "SELECT r.submission_key, r.ranks, u.name FROM rankings r "
            "JOIN users u ON u.id = r.user_id")}
        for assignment_id, name in acknowledged:
            row = stored.get(f"assignment:{assignment_id}")
            assert row is not None, f"acknowledged assignment {assignment_id} was lost"
            assert (row["name"], json.loads(row["ranks"])) == (name, [1, 2, 2, 3])
        keys = [r[0] for r in db.execute("SELECT submission_key FROM rankings")]
        assert len(keys) == len(set(keys))  # exactly once
        # Each stored ranking has its 6 pairs, written in the same transaction.
        assert db.execute("SELECT COUNT(*) FROM rankings r WHERE (SELECT COUNT(*) FROM "
                          "comparisons c WHERE c.ranking_id = r.id) != 6").fetchone()[0] == 0
        # The restarted app serves the queue again.
        resumed = api_client(url, (names[0][0], PASSWORD))
        assert resumed.predict(api_name="/load_task")[1]["assignment_id"]
    finally:
        server.kill()
        server.wait()
