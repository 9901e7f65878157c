"""The Rank tab's JSON routes (labeler/rank_api.py) against a served app: who may call them,
what they accept, and that a refused request stores nothing and leaks no error."""

from __future__ import annotations

import httpx
import pytest

from data import store
from tests.labeling_fixtures import PASSWORD


def _logged_in(url: str, user: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    client.post("login", data={"username": user, "password": PASSWORD}).raise_for_status()
    return client


def _rankings(db_path) -> int:
    return store.open_store(db_path)["rankings"].count


def _submit(client, status, ranks=("1", "2", "3"), **extra):
    return client.post("rank/api/submit", json={"assignment_id": status["assignment_id"],
                                                "ranks": list(ranks), **extra})


@pytest.fixture
def ann(served):
    client = _logged_in(served["url"], "ann")
    yield client
    client.close()


def test_submit_and_next_over_the_routes(served, ann):
    first = ann.post("rank/api/screen", json={})
    assert first.status_code == 200 and first.headers["cache-control"] == "no-store"
    status = first.json()["status"]
    assert status["assignment_id"] and status["candidates"] == 3
    assert 'class="rl-task' in first.json()["html"]

    saved = _submit(ann, status)
    assert saved.status_code == 200
    after = saved.json()["status"]
    assert after["outcome"] == "saved" and after["ranking_id"]
    assert after["assignment_id"] not in (None, status["assignment_id"])  # the next task
    assert _rankings(served["db"]) == 1

    # The same submission again (a retried request) is acknowledged once, stored once.
    again = _submit(ann, status).json()["status"]
    assert again["outcome"] == "already" and _rankings(served["db"]) == 1


def test_the_routes_answer_with_the_security_headers(ann):
    response = ann.post("rank/api/screen", json={})
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "access-control-allow-origin" not in response.headers


def test_without_a_session_nothing_is_done(served):
    with httpx.Client(base_url=served["url"]) as anonymous:
        response = anonymous.post("rank/api/submit", json={"assignment_id": 1,
                                                           "ranks": ["1", "2", "3"]})
        assert response.status_code == 401
        assert "log in" in response.json()["error"]
    with httpx.Client(base_url=served["url"],
                      cookies={"access-token-unsecure-x": "not-a-session"}) as forged:
        assert forged.post("rank/api/screen", json={}).status_code == 401
    assert _rankings(served["db"]) == 0


def test_a_revoked_session_ends_at_once(served, ann):
    status = ann.post("rank/api/screen", json={}).json()["status"]
    kept = dict(ann.cookies)  # the cookie a copy of the page would still send
    ann.post("logout")
    with httpx.Client(base_url=served["url"], cookies=kept) as after_logout:
        assert _submit(after_logout, status).status_code == 401
    assert _rankings(served["db"]) == 0


@pytest.mark.parametrize("headers, expected", [
    ({"content-type": "text/plain"}, 415),  # what a cross-site form or beacon may send
    ({"content-type": "application/x-www-form-urlencoded"}, 415),
    ({"content-type": "application/json", "origin": "https://evil.example"}, 403),
    ({"content-type": "application/json", "sec-fetch-site": "cross-site"}, 403),
])
def test_requests_another_site_could_make_are_refused(served, ann, headers, expected):
    status = ann.post("rank/api/screen", json={}).json()["status"]
    body = f'{{"assignment_id": {status["assignment_id"]}, "ranks": ["1", "2", "3"]}}'
    response = ann.post("rank/api/submit", content=body, headers=headers)
    assert response.status_code == expected, response.text
    assert response.json()["error"]
    assert _rankings(served["db"]) == 0
    # The same request from the page itself goes through.
    same_origin = {"content-type": "application/json", "origin": served["origin"],
                   "sec-fetch-site": "same-origin"}
    assert ann.post("rank/api/submit", content=body, headers=same_origin).status_code == 200
    assert _rankings(served["db"]) == 1


def test_the_page_behind_a_proxy_that_rewrites_the_host_still_works(served, ann):
    status = ann.post("rank/api/screen", json={}).json()["status"]
    body = f'{{"assignment_id": {status["assignment_id"]}, "ranks": ["1", "2", "3"]}}'
    page = {"content-type": "application/json", "origin": "https://label.example.org"}
    for headers in ({**page, "sec-fetch-site": "same-origin"},
                    {**page, "x-forwarded-host": "label.example.org"}):
        response = ann.post("rank/api/submit", content=body, headers=headers)
        assert response.status_code == 200, response.text
    assert _rankings(served["db"]) == 1  # the second is the same vote, acknowledged once


@pytest.mark.parametrize("body, words", [
    (b"{not json", "not valid JSON"),
    (b'{"assignment_id": NaN, "ranks": []}', "not valid JSON"),
    (b'{"assignment_id": 1e400}', "whole number"),  # parsed as infinity
    (b"[1, 2, 3]", "JSON object"),
    (b'{"assignment_id": 1, "sql": "DROP TABLE rankings"}', "unknown field 'sql'"),
    (b'{"assignment_id": 99999999999999999999999, "ranks": ["1", "2", "3"]}', "out of range"),
    (b'{"assignment_id": 1.5}', "whole number"),
    (b'{"assignment_id": 1, "ranks": [{"x": 1}, "2", "3"]}', "number from the choices"),
    (b'{"assignment_id": 1, "ranks": ["1", "2", "3"], "all_bad": "yes"}', "true or false"),
    (b'[' * 100_000 + b']' * 100_000, "not valid JSON"),  # nesting deeper than the parser goes
])
def test_malformed_requests_get_a_sentence_and_store_nothing(served, ann, app_log, body, words):
    response = ann.post("rank/api/submit", content=body,
                        headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]
    assert "Traceback" not in response.text and "Traceback" not in app_log.text
    assert _rankings(served["db"]) == 0
    # The annotator's next valid submission still works.
    status = ann.post("rank/api/screen", json={}).json()["status"]
    assert _submit(ann, status).json()["status"]["outcome"] == "saved"


def test_a_body_over_the_limit_is_refused_before_it_is_read_whole(served, ann):
    from labeler.rank_api import MAX_BODY_BYTES

    huge = b'{"assignment_id": 1, "rationale": "' + b"x" * MAX_BODY_BYTES + b'"}'
    response = ann.post("rank/api/submit", content=huge,
                        headers={"content-type": "application/json"})
    assert response.status_code == 413 and "larger than" in response.json()["error"]
    assert _rankings(served["db"]) == 0


def test_a_rationale_over_its_limit_is_refused_with_its_size(served, ann):
    from labeler.handlers import MAX_RATIONALE_CHARS

    status = ann.post("rank/api/screen", json={}).json()["status"]
    response = _submit(ann, status, rationale="y" * (MAX_RATIONALE_CHARS + 1))
    assert response.status_code == 400 and "20,000 characters" in response.json()["error"]
    assert _rankings(served["db"]) == 0


def test_unknown_actions_and_other_methods(ann):
    assert ann.post("rank/api/delete_everything", json={}).status_code == 404
    assert ann.get("rank/api/screen").status_code in (404, 405)  # only POST is served


def test_nobody_votes_on_an_assignment_that_is_not_theirs(served, ann):
    bob = _logged_in(served["url"], "bob")
    bobs = bob.post("rank/api/screen", json={}).json()["status"]
    refused = _submit(ann, bobs).json()["status"]
    assert refused["outcome"] == "refused" and _rankings(served["db"]) == 0
    assert bob.post("rank/api/draft", json={"assignment_id": bobs["assignment_id"],
                                            "ranks": [1, None, None]}).status_code == 200
    stolen = ann.post("rank/api/diff", json={"assignment_id": bobs["assignment_id"],
                                             "a": 0, "b": 1})
    assert stolen.status_code == 400 and "not assigned to you" in stolen.json()["error"]
    bob.close()


def test_an_admin_takes_a_task_only_when_opening_the_tab(served):
    db = store.open_store(served["db"])
    admin = _logged_in(served["url"], "root")
    idle = admin.post("rank/api/screen", json={}).json()["status"]
    assert idle["assignment_id"] is None and 'data-mode="idle"' in \
        admin.post("rank/api/screen", json={}).json()["html"]
    assert db.execute("SELECT COUNT(*) FROM assignments").fetchone()[0] == 0
    opened = admin.post("rank/api/screen", json={"open": True}).json()["status"]
    assert opened["assignment_id"]
    assert db.execute("SELECT COUNT(*) FROM assignments").fetchone()[0] == 1
    admin.close()



def test_a_browser_session_outlives_a_restart_of_the_app(tmp_path):
    from tests.labeling_fixtures import make_labeling_db
    from tests.security.conftest import serve_db

    db_path = make_labeling_db(tmp_path / "restart.db", n_prompts=2, k=3)
    served, _, origin = serve_db(db_path)
    client = _logged_in(origin + "/", "ann")
    before = client.post("rank/api/screen", json={}).json()["status"]
    served.close()
    served, _, origin = serve_db(db_path)  # a new process would read the same file
    try:
        # Cookies belong to the host, whatever the port: the page's cookie is sent as is.
        after = client.post(origin + "/rank/api/screen", json={})
        assert after.status_code == 200, after.text
        assert after.json()["status"]["assignment_id"] == before["assignment_id"]
    finally:
        client.close()
        served.close()


def test_the_routes_answer_untrusted_text_escaped(served, ann):
    """The page puts each answer's HTML in place as is: what came from a model must already be
    text there (labeler/render.py), on every screen and in the differences view."""
    from tests.labeling_fixtures import HTML_CANDIDATE

    seen = False
    status = ann.post("rank/api/screen", json={}).json()["status"]
    while status["assignment_id"]:
        answer = ann.post("rank/api/screen", json={}).json()
        diff = ann.post("rank/api/diff", json={"assignment_id": status["assignment_id"],
                                               "a": 0, "b": 1}).json()["html"]
        for html in (answer["html"], diff):
            assert "<script" not in html and "<b>bold" not in html
        seen = seen or "&lt;script&gt;window.__rl_xss" in answer["html"]
        status = _submit(ann, status).json()["status"]
    assert seen, f"no screen showed {HTML_CANDIDATE!r}"
