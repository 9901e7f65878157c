"""SIGKILL during a login flood: every acknowledged vote is stored exactly once, and the
flood is refused by the lockout instead of starving the annotators."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter

import httpx

from data import store
from tests.integration.conftest import api_client, free_port
from tests.integration.test_app_durability import _annotate, _start_server
from tests.labeling_fixtures import PASSWORD, make_labeling_db

CLIENTS = 4
FLOODERS = 4


def _flood(origin, stop, statuses):
    with httpx.Client(base_url=origin, timeout=10) as client:
        i = 0
        while not stop.is_set():
            name = ("user0", "user1", "nobody", f"guess{i}")[i % 4]
            try:
                answer = client.post("/login", data={"username": name,
                                                     "password": f"wrong-{i}"})
                statuses[answer.status_code] += 1
            except httpx.HTTPError:
                statuses["error"] += 1  # the server was killed under us
                time.sleep(0.05)
            i += 1


def test_acknowledged_votes_survive_a_sigkill_during_a_login_flood(tmp_path):
    names = [(f"user{i}", "annotator") for i in range(CLIENTS)]
    db_path = make_labeling_db(tmp_path / "app.db", n_prompts=300, k=4, users=names)
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    server = _start_server(db_path, port)
    acknowledged, errors, stop = [], [], threading.Event()
    annotators = [threading.Thread(target=_annotate,
                                   args=(origin + "/", name, acknowledged, stop, errors))
                  for name, _ in names]
    for t in annotators:
        t.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 8 and time.monotonic() < deadline:  # all logged in and working
        time.sleep(0.05)
    statuses, flood_stop = Counter(), threading.Event()
    flooders = [threading.Thread(target=_flood, args=(origin, flood_stop, statuses))
                for _ in range(FLOODERS)]
    for t in flooders:
        t.start()
    during = len(acknowledged)
    deadline = time.monotonic() + 90
    while len(acknowledged) < during + 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(server.pid, signal.SIGKILL)  # mid-stream: votes and logins still arriving
    server.wait()
    stop.set()
    flood_stop.set()
    for t in annotators + flooders:
        t.join(timeout=60)
    # The annotators kept working through the flood, which the lockout refused.
    assert len(acknowledged) >= during + 30, (errors[:3], statuses)
    assert statuses[429] > statuses[400] > 0, statuses

    server = _start_server(db_path, port)
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
        assert len(keys) == len(set(keys))
        resumed = api_client(origin + "/", (names[0][0], PASSWORD))
        assert resumed.predict(api_name="/load_task")[1]["assignment_id"]
        print(f"acknowledged {len(acknowledged)} votes ({len(acknowledged) - during} during "
              f"the flood); login answers {dict(statuses)}")
    finally:
        server.kill()
        server.wait()
