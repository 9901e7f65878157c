"""The admin console's events called by an API client with values the page never sends (a
dropdown value outside its choices, a list where a number belongs): each answers a one-line
refusal, never a Gradio preprocessing traceback, and nothing starts."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest

from tests.labeling_fixtures import PASSWORD

NOT_A_CHOICE = "zz-not-a-choice"
CHOICE_TYPES = ("dropdown", "radio")


def _call(client, fn_index: int, data: list) -> tuple[bool, str]:
    """One event through Gradio's queue, as any client may send it: (succeeded, error)."""
    session = uuid.uuid4().hex[:12]
    joined = client.post("gradio_api/queue/join", json={
        "data": data, "fn_index": fn_index, "session_hash": session, "event_data": None,
        "trigger_id": None})
    assert joined.status_code == 200, joined.text
    stream = client.get(f"gradio_api/queue/data?session_hash={session}").text
    done = [json.loads(line[len("data: "):]) for line in stream.splitlines()
            if line.startswith("data: ") and '"process_completed"' in line]
    assert done, stream
    output = done[0]["output"]
    return done[0]["success"], (output.get("error") or "") if isinstance(output, dict) else ""


@pytest.fixture
def root(served):
    client = httpx.Client(base_url=served["url"], timeout=60)
    client.post("login", data={"username": "root", "password": PASSWORD}).raise_for_status()
    yield client
    client.close()


def test_malformed_values_on_every_admin_event_are_refused_in_one_line(
        served, root, app_log, capfd, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no network look-up in tests
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    served["svc"].jobs.max_running = 0  # were a check missing, no job could start anyway
    config = root.get("config").json()
    components = {c["id"]: c for c in config["components"]}
    # One event per handler (the filters share one, as do the user buttons' forms).
    events = list({re.sub(r"_\d+$", "", d["api_name"]): d for d in config["dependencies"]
                   if d["api_visibility"] == "undocumented" and d["inputs"]}.values())
    assert len(events) > 12
    calls = refused = 0
    accepted = []
    for event in events:
        types = [components[i]["type"] for i in event["inputs"]]
        defaults = [components[i].get("props", {}).get("value") for i in event["inputs"]]
        for position, kind in enumerate(types):
            bad_values = [[1, 2]] + ([NOT_A_CHOICE] if kind in CHOICE_TYPES else [])
            for bad in bad_values:
                data = list(defaults)
                data[position] = bad
                ok, error = _call(root, event["id"], data)
                calls += 1
                if ok:
                    accepted.append((event["api_name"], position, bad))
                else:
                    refused += 1
                    assert error and "\n" not in error and "Traceback" not in error, \
                        (event["api_name"], position, bad, error)
                    assert "Something went wrong" not in error, (event["api_name"], bad, error)
    # The rest answer in the form's own message box ("Not started: …", "Role not changed:
    # …") or treat the value as a filter that matches nothing.
    assert refused >= 20, (calls, accepted)
    assert served["svc"].jobs.list() == []
    assert not [r for r in app_log.records if r.exc_info or r.levelname == "ERROR"], \
        [r.getMessage() for r in app_log.records if r.exc_info or r.levelname == "ERROR"]
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-3000:]


def test_a_status_outside_the_list_is_named_in_the_refusal(served, root, app_log):
    config = root.get("config").json()
    [event] = [d for d in config["dependencies"] if d["api_name"] == "first_page"]
    ok, error = _call(root, event["id"], [NOT_A_CHOICE, "any", "any", "any", "id", 50])
    assert not ok and error.startswith("status must be one of") and NOT_A_CHOICE in error
    ok, error = _call(root, event["id"], ["any", "any", "any", "any", "id", [25]])
    assert not ok and error == "the page size must be a whole number"
    assert [r.getMessage() for r in app_log.records][-1].startswith("refused first_page")
