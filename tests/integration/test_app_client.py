"""The served app driven through its HTTP API with gradio_client, logged in."""

import json

import pytest
from gradio_client.exceptions import AppError

from data import store
from tests.integration.conftest import api_client
from tests.labeling_fixtures import PASSWORD

def _client(served_app, user="ann", password=PASSWORD):
    return api_client(served_app["url"], (user, password))


def _load(client):
    """/load_task: (screen HTML, status); the status names the task on screen."""
    html, status = client.predict(api_name="/load_task")[:2]
    return html, status


def _submit(client, assignment_id, ranks, all_bad=False, rationale="", demonstration=""):
    # The submit endpoint takes one JSON object and returns the next screen and its status.
    html, status = client.predict({"assignment_id": assignment_id, "ranks": list(ranks),
                                   "all_bad": all_bad, "rationale": rationale,
                                   "demonstration": demonstration}, api_name="/submit")[:2]
    return status["message"], status["assignment_id"], status, html


def test_a_full_session_stores_rankings_and_pairs(served_app):
    client = _client(served_app)
    prompt, status = _load(client)
    assignment_id = status["assignment_id"]
    assert assignment_id and status["candidates"] == 3
    assert "0 done by you · 6 left in the queue" in prompt
    assert "Question" in prompt.split('id="rl-prompt"', 1)[1]

    refused = _submit(client, assignment_id, ["1", None, "2"])
    assert refused[0] == "Not saved: give every candidate a rank — B has no rank yet."
    assert refused[2]["unranked"] == ["B"] and refused[1] == assignment_id
    db = store.open_store(served_app["db"])
    assert db["rankings"].count == 0

    saved = _submit(client, assignment_id, ["2", "1", "2"], rationale="B is right")
    assert saved[0] == "Saved — ranking of 3 candidates."
    next_id = saved[1]
    assert next_id and next_id != assignment_id
    again = _submit(client, assignment_id, ["2", "1", "2"])  # a double click
    assert again[0] == "Already saved."

    [ranking] = db["rankings"].rows
    assert (ranking["ranks"], ranking["has_tie"], ranking["rationale"]) == ("[2, 1, 2]", 1,
                                                                            "B is right")
    pairs = list(db.query("SELECT chosen_id, rejected_id, tie FROM comparisons"))
    ids = json.loads(ranking["candidate_ids"])  # shown order
    assert pairs == [
        {"chosen_id": ids[1], "rejected_id": ids[0], "tie": 0},
        {"chosen_id": ids[0], "rejected_id": ids[2], "tie": 1},
        {"chosen_id": ids[1], "rejected_id": ids[2], "tie": 0},
    ]


def test_all_bad_with_a_demonstration_and_skip(served_app):
    client = _client(served_app)
    first = _load(client)[1]["assignment_id"]
    saved = _submit(client, first, [], all_bad=True, demonstration="The answer is 4.")
    assert saved[0] == "Saved — all candidates marked as bad. Your answer is stored too."
    skipped = client.predict({"assignment_id": saved[1]}, api_name="/skip")[1]
    assert skipped["message"] == "Skipped." and skipped["outcome"] == "skipped"
    db = store.open_store(served_app["db"])
    rows = list(db.query("SELECT all_bad, skipped, demonstration_id FROM rankings ORDER BY id"))
    assert [(r["all_bad"], r["skipped"], r["demonstration_id"] is not None) for r in rows] == [
        (1, 0, True), (0, 1, False)]


def test_a_new_session_resumes_the_open_task(served_app):
    first = _load(_client(served_app))[1]["assignment_id"]
    assert _load(_client(served_app))[1]["assignment_id"] == first
    other = _load(_client(served_app, "bob"))[1]["assignment_id"]
    assert other != first


def test_wrong_password_is_refused(served_app):
    with pytest.raises(ValueError):
        _client(served_app, password="not-the-password")


def test_annotators_cannot_call_admin_functions(served_app):
    client = _client(served_app)
    admin_fns = [i for i, dep in enumerate(client.config["dependencies"])
                 if dep.get("api_visibility", dep.get("show_api")) == "undocumented"]
    # Every Admin-tab control: status refresh and polling, the data browser, jobs, export,
    # users, guidelines, suggestions, queue order.
    assert len(admin_fns) >= 30
    for fn_index in admin_fns:
        with pytest.raises(AppError, match="admins only"):
            client.predict(*_default_inputs(client, fn_index), fn_index=fn_index)
    assert store.open_store(served_app["db"])["jobs"].count == 0
    # An admin may.
    root = _client(served_app, "root")
    summary = root.predict(fn_index=admin_fns[0])[0]
    assert "**6** items" in summary


def _default_inputs(client, fn_index):
    dep = client.config["dependencies"][fn_index]
    by_id = {c["id"]: c for c in client.config["components"]}
    values = []
    for component_id in dep["inputs"]:
        component = by_id[component_id]
        choices = component.get("props", {}).get("choices") or []
        if component["type"] in ("dropdown", "radio") and choices:
            values.append(choices[0][1])  # a value the component accepts
            continue
        values.append({"number": 4, "textbox": "bt:x", "dropdown": "auto"}.get(component["type"]))
    return values
