"""The queue's promises and the API's type checks, through gradio_client."""

from __future__ import annotations

import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from data import labeling, store
from data.labeling import QueuePolicy
from tests.labeling_fixtures import PASSWORD, make_labeling_db
from tests.security.conftest import serve_db

def _submit(client, assignment_id, ranks, all_bad=False, rationale="", demonstration=""):
    status = client.predict({"assignment_id": assignment_id, "ranks": list(ranks),
                             "all_bad": all_bad, "rationale": rationale,
                             "demonstration": demonstration}, api_name="/submit")[1]
    return status["message"], status


def _task(client):
    html, status = client.predict(api_name="/load_task")[:2]
    return status["assignment_id"], html


def test_an_expired_assignment_cannot_exceed_the_overlap(tmp_path):
    db_path = make_labeling_db(tmp_path / "q.db", n_prompts=1, k=3)
    served, _, origin = serve_db(db_path, policy=QueuePolicy(overlap=1, timeout_s=1))
    try:
        ann = Client(origin + "/", auth=("ann", PASSWORD), verbose=False)
        bob = Client(origin + "/", auth=("bob", PASSWORD), verbose=False)
        late = _task(ann)[0]
        assert late and not _task(bob)[0]  # held by ann
        time.sleep(1.2)
        taken = _task(bob)[0]  # expired: back in the queue
        assert taken
        assert _submit(bob, taken, ["1", "2", "3"])[0].startswith("Saved")
        refused = _submit(ann, late, ["3", "2", "1"])
        assert refused[0].startswith("Not saved: this task expired")
        db = store.open_store(db_path)
        assert db["rankings"].count == 1  # the overlap of 1 holds
    finally:
        served.close()


@pytest.mark.parametrize("all_bad", [7, "yes", [True]])
def test_values_of_the_wrong_type_are_refused_without_leaking_errors(served, app_log, all_bad):
    client = Client(served["url"], auth=("ann", PASSWORD), verbose=False)
    task = _task(client)[0]
    with pytest.raises(AppError) as refused:
        _submit(client, task, [], all_bad=all_bad)
    assert str(refused.value) == "all_bad must be true or false"
    with pytest.raises(AppError) as refused:
        client.predict({"assignment_id": "not-a-number"}, api_name="/submit")
    assert "whole number" in str(refused.value)
    with pytest.raises(AppError) as refused:
        client.predict(["not", "an", "object"], api_name="/submit")
    assert "JSON object" in str(refused.value)
    with pytest.raises(AppError) as refused:
        client.predict({"assignment_id": task, "ranks": [{"x": 1}]}, api_name="/submit")
    assert "rank must be a number" in str(refused.value)
    with pytest.raises(AppError) as refused:
        client.predict(7, api_name="/skip")
    assert "JSON object" in str(refused.value)
    assert store.open_store(served["db"])["rankings"].count == 0
    lines = [r for r in app_log.records if r.getMessage().startswith("refused s")]
    assert len(lines) == 5 and not any(r.exc_info for r in lines)


def test_an_unexpected_error_reaches_the_client_as_a_sentence(served, app_log, monkeypatch):
    from labeler import handlers

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail /srv/path")

    client = Client(served["url"], auth=("ann", PASSWORD), verbose=False)
    task = _task(client)[0]
    monkeypatch.setattr(handlers.labeling, "submit_assignment", broken)
    with pytest.raises(AppError) as failed:
        _submit(client, task, ["1", "2", "3"])
    assert "secret" not in str(failed.value) and "went wrong" in str(failed.value)
    [line] = [r for r in app_log.records if "failed" in r.getMessage()]
    assert line.exc_info  # the traceback is in the log, once


def test_an_item_that_cannot_be_shown_never_strands_its_annotator(tmp_path):
    db_path = make_labeling_db(tmp_path / "k.db", n_prompts=1, k=3)
    db = store.open_store(db_path)
    run_id = store.get_or_create_run(db, store.RunSettings("m", "transformers", 9, 0.8, 0.9,
                                                           8, 0))
    [prompt_id] = store.upsert_prompts(db, [([{"role": "user", "content": "nine"}], "t", "9")])
    store.add_candidates(db, prompt_id, run_id,
                         [store.CandidateIn(f"c{i}", 1, "stop") for i in range(9)])
    labeling.sync_items(db)
    # The 9-candidate item is first in line for ann (as if an older app had handed it out).
    nine = db.execute("SELECT id FROM items WHERE run_id = ?", [run_id]).fetchone()[0]
    ann = labeling.get_user(db, "ann")
    db.execute("INSERT INTO assignments (item_id, user_id, candidate_ids, shown_at, expires_at)"
               " SELECT ?, ?, json_group_array(id), 0, 1e12 FROM candidates WHERE run_id = ?",
               [nine, ann.id, run_id])
    served, _, origin = serve_db(db_path)
    try:
        client = Client(origin + "/", auth=("ann", PASSWORD), verbose=False)
        for _ in range(2):  # a refresh does not bring it back
            task, html = _task(client)
            assert task and "Question 0" in html
        assert [r["id"] for r in labeling.set_aside_items(db)] == [nine]
    finally:
        served.close()
