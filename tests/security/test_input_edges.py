"""Input at the edges, against the served app: text that is not text (a lone surrogate), ranks
in other scripts' digits, a skip after a submit, the written answer's one limit, the prompts
field of a generation job; and every refusal logs one line, never a traceback."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from data import store
from data.rankings import MAX_TEXT_CHARS
from labeler import admin
from tests.labeling_fixtures import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
SURROGATE = "\ud800"


def _logged_in(url: str, user: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60)
    client.post("login", data={"username": user, "password": PASSWORD}).raise_for_status()
    return client


def _post(client, action: str, payload) -> httpx.Response:
    # json.dumps writes a lone surrogate as the escape "\ud800", as a script could send it.
    return client.post(f"rank/api/{action}", content=json.dumps(payload),
                       headers={"content-type": "application/json"})


def _event(client, api_name: str, payload):
    """One Gradio event through its HTTP API: (succeeded, output or error sentence)."""
    started = client.post(f"gradio_api/call/{api_name}", content=json.dumps({"data": [payload]}),
                          headers={"content-type": "application/json"})
    assert started.status_code == 200, started.text
    answer = client.get(f"gradio_api/call/{api_name}/{started.json()['event_id']}").text
    kind = answer.split("\n", 1)[0].removeprefix("event: ").strip()
    data = json.loads(answer.split("data:", 1)[1].split("\n", 1)[0])
    return kind == "complete", data["error"] if isinstance(data, dict) else data


def _counts(db_path) -> tuple[int, int]:
    db = store.open_store(db_path)
    return db["rankings"].count, db["drafts"].count


def _no_traceback(app_log, capfd):
    assert not [r for r in app_log.records if r.exc_info or r.levelname == "ERROR"]
    assert "Traceback" not in app_log.text and "Traceback" not in capfd.readouterr().err


@pytest.fixture
def ann(served):
    client = _logged_in(served["url"], "ann")
    yield client
    client.close()


def _task(client) -> int:
    return _post(client, "screen", {}).json()["status"]["assignment_id"]


@pytest.mark.parametrize("action, field", [("submit", "rationale"), ("submit", "demonstration"),
                                           ("draft", "rationale"), ("draft", "demonstration")])
def test_a_lone_surrogate_is_refused_with_a_sentence_over_the_routes(
        served, ann, app_log, capfd, action, field):
    task = _task(ann)
    response = _post(ann, action, {"assignment_id": task, "ranks": ["1", "2", "3"],
                                   field: f"fine{SURROGATE}text"})
    assert response.status_code == 400, response.text
    assert "not text" in response.json()["error"]
    assert _counts(served["db"]) == (0, 0)
    _no_traceback(app_log, capfd)
    # The same field without it goes through.
    assert _post(ann, action, {"assignment_id": task, "ranks": ["1", "2", "3"],
                               field: "fine text"}).status_code == 200


@pytest.mark.parametrize("api_name, field", [("submit", "rationale"), ("submit", "demonstration"),
                                             ("save_draft", "rationale")])
def test_a_lone_surrogate_is_refused_with_a_sentence_over_the_events(
        served, ann, app_log, capfd, api_name, field):
    task = _task(ann)
    ok, error = _event(ann, api_name, {"assignment_id": task, "ranks": ["1", "2", "3"],
                                       field: SURROGATE})
    assert not ok and "not text" in error, error
    assert _counts(served["db"]) == (0, 0)
    _no_traceback(app_log, capfd)


def test_a_lone_surrogate_in_a_field_name_or_an_admin_field_is_refused(served, app_log, capfd):
    root = _logged_in(served["url"], "root")
    response = _post(root, "layout", {f"layout{SURROGATE}": "stacked"})
    assert response.status_code == 400 and "not text" in response.json()["error"]
    # The console's guidelines preview echoes what it is given: it refuses instead.
    config = root.get("config").json()
    [preview] = [n for n, d in enumerate(config["dependencies"])
                 if d.get("api_name") == "show_preview"]
    session = uuid.uuid4().hex[:10]
    joined = root.post("gradio_api/queue/join", headers={"content-type": "application/json"},
                       content=json.dumps({"data": [f"# Guide{SURROGATE}"], "fn_index": preview,
                                           "session_hash": session}))
    assert joined.status_code == 200, joined.text
    with root.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as stream:
        done = next(json.loads(line[5:]) for line in stream.iter_lines()
                    if line.startswith("data:") and '"process_completed"' in line)
    assert not done["success"] and "not text" in done["output"]["error"]
    _no_traceback(app_log, capfd)
    root.close()


@pytest.mark.parametrize("ranks", [["１", "２", "３"], ["٢", "1", "3"], ["1", "2", "३"],
                                   ["1", "2", "²"]])
def test_only_ascii_digits_are_ranks(served, ann, ranks):
    task = _task(ann)
    response = _post(ann, "submit", {"assignment_id": task, "ranks": ranks})
    assert response.status_code == 400 and "number from the choices" in response.json()["error"]
    ok, error = _event(ann, "submit", {"assignment_id": task, "ranks": ranks})
    assert not ok and "number from the choices" in error
    assert _counts(served["db"]) == (0, 0)
    # Real numbers and ASCII digits still are.
    saved = _post(ann, "submit", {"assignment_id": task, "ranks": [1, "2", 3]}).json()["status"]
    assert saved["outcome"] == "saved"
    [row] = store.open_store(served["db"]).query("SELECT ranks FROM rankings")
    assert json.loads(row["ranks"]) == [1, 2, 3]


def test_a_skip_after_a_submit_says_the_ranking_stays(served, ann):
    task = _task(ann)
    assert _post(ann, "submit", {"assignment_id": task,
                                 "ranks": ["1", "2", "3"]}).json()["status"]["outcome"] == "saved"
    late = _post(ann, "skip", {"assignment_id": task}).json()["status"]
    assert late["outcome"] == "already"
    assert "already submitted" in late["message"] and "stays" in late["message"]
    assert "Skipped" not in late["message"]
    rows = list(store.open_store(served["db"]).query("SELECT ranks, skipped FROM rankings"))
    assert rows == [{"ranks": "[1, 2, 3]", "skipped": 0}]
    # And the other way round: a submit after a skip does not claim to have saved.
    second = late["assignment_id"]
    assert _post(ann, "skip", {"assignment_id": second}).json()["status"]["outcome"] == "skipped"
    again = _post(ann, "skip", {"assignment_id": second}).json()["status"]
    assert again["message"] == "Already skipped."
    after = _post(ann, "submit", {"assignment_id": second, "ranks": ["1", "2", "3"]})
    status = after.json()["status"]
    assert status["outcome"] == "refused" and "skipped this task" in status["message"]
    assert store.open_store(served["db"])["rankings"].count == 2


def test_the_written_answer_has_one_limit(served, ann):
    task = _task(ann)
    at_limit = _post(ann, "submit", {"assignment_id": task, "ranks": ["1", "2", "3"],
                                     "demonstration": "w" * MAX_TEXT_CHARS})
    assert at_limit.json()["status"]["outcome"] == "saved", at_limit.text
    task = at_limit.json()["status"]["assignment_id"]
    over = _post(ann, "submit", {"assignment_id": task, "ranks": ["1", "2", "3"],
                                 "demonstration": "w" * (MAX_TEXT_CHARS + 1)})
    assert over.status_code == 400 and f"{MAX_TEXT_CHARS:,} characters" in over.json()["error"]
    # One figure, wherever the limit is stated.
    readme = (ROOT / "README.md").read_text()
    assert f"to {MAX_TEXT_CHARS:,} characters" in readme
    for source in ("labeler/rank_api.py", "labeler/handlers.py", "data/drafts.py"):
        text = (ROOT / source).read_text()
        assert "100,000-character" not in text and "100_000" not in text, source


def test_a_refused_call_logs_one_line(served, ann, app_log, capfd):
    task = _task(ann)
    refusals = [
        ann.post("rank/api/submit", content=b"{}", headers={"content-type": "text/plain"}),
        ann.post("rank/api/submit", content=b"{}", headers={
            "content-type": "application/json", "sec-fetch-site": "cross-site"}),
        _post(ann, "submit", {"assignment_id": task, "sql": "DROP TABLE rankings"}),
        _post(ann, "submit", {"assignment_id": task, "ranks": ["１", "2", "3"]}),
        _post(ann, "draft", {"assignment_id": task, "rationale": SURROGATE}),
        _post(ann, "diff", {"assignment_id": task, "a": 0, "b": 9}),
    ]
    assert [r.status_code for r in refusals] == [415, 403, 400, 400, 400, 400]
    lines = [r for r in app_log.records if r.getMessage().startswith("refused")]
    assert len(lines) == len(refusals), [r.getMessage() for r in lines]
    _no_traceback(app_log, capfd)


# --- the generation job's prompts field ----------------------------------------------------

@pytest.mark.parametrize("prompts, reason", [
    ("-h", "neither"), ("--help", "neither"), ("/etc/passwd", "not one of"),
    ("; touch x", "neither"), ("$(touch x)", "neither"), ("prompts.jsonl", "does not exist"),
    ("/no/such/folder/", "does not exist"), ("someone/never-cached", "cached"),
    (f"bad{SURROGATE}", "control or invisible"), ("tab\there", "control or invisible"),
])
def test_a_generation_job_for_prompts_it_cannot_read_never_starts(served, monkeypatch,
                                                                  prompts, reason):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no network look-up in tests
    svc = served["svc"]
    message = admin.start_generation(svc, "root", prompts=prompts)
    assert message.startswith("Not started: ") and reason in message, message
    assert svc.jobs.list() == []


def test_prompt_files_and_folders_that_exist_start(served, tmp_path):
    svc = served["svc"]
    svc.jobs.max_running = 3
    own = tmp_path / "mine.jsonl"
    own.write_text('{"prompt": "Hello?"}\n')
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "dataset_info.json").write_text("{}")
    started = [admin.start_generation(svc, "root", prompts=p, limit=1)
               for p in ("bundled", str(own), str(saved))]
    argvs = [j.argv for j in reversed(svc.jobs.list())]
    svc.jobs.stop_all()
    assert all(m.startswith("Started") for m in started), started
    assert [a[a.index("--prompts") + 1] for a in argvs] == ["bundled", str(own), str(saved)]
