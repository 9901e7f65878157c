"""active_seconds over the served JSON route: refused with a sentence unless a finite number
of seconds >= 0, stored (cut to the wall time since the task was shown) when it is."""

from __future__ import annotations

import httpx
import pytest

from data import store
from tests.labeling_fixtures import PASSWORD


@pytest.fixture
def ann(served):
    client = httpx.Client(base_url=served["url"], timeout=30)
    client.post("login", data={"username": "ann", "password": PASSWORD}).raise_for_status()
    yield client
    client.close()


def _task(ann, db_path, shown_ago=0.0):
    status = ann.post("rank/api/screen", json={}).json()["status"]
    db = store.open_store(db_path)
    db.execute("UPDATE assignments SET shown_at = shown_at - ? WHERE id = ?",
               [shown_ago, status["assignment_id"]])
    db.close()
    return status["assignment_id"]


@pytest.mark.parametrize("body, words", [
    (b', "active_seconds": -1', "finite number of seconds"),
    (b', "active_seconds": 1e400', "finite number of seconds"),  # parsed as infinity
    (b', "active_seconds": "12"', "number of seconds"),
    (b', "active_seconds": true', "number of seconds"),
])
def test_bad_active_seconds_get_a_sentence_and_store_nothing(served, ann, body, words):
    assignment = _task(ann, served["db"])
    response = ann.post(
        "rank/api/submit", headers={"content-type": "application/json"},
        content=b'{"assignment_id": %d, "ranks": ["1", "2", "3"]' % assignment + body + b"}")
    assert response.status_code == 400 and words in response.json()["error"]
    assert store.open_store(served["db"])["rankings"].count == 0


def test_active_seconds_are_stored_and_cut_to_the_wall_time(served, ann):
    for seconds, shown_ago in ((12.5, 60), (5_000, 60)):
        assignment = _task(ann, served["db"], shown_ago)
        saved = ann.post("rank/api/submit", json={"assignment_id": assignment,
                                                  "ranks": ["1", "2", "3"],
                                                  "active_seconds": seconds})
        assert saved.json()["status"]["outcome"] == "saved"
    stored = [r[0] for r in store.open_store(served["db"]).execute(
        "SELECT active_seconds FROM rankings ORDER BY id")]
    assert stored[0] == 12.5 and 60 <= stored[1] < 70
