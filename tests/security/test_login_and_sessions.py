"""Login abuse, sessions and response headers, against the app served over HTTP."""

from __future__ import annotations

import hashlib
import threading
import time

import httpx
import pytest

from data import labeling, store
from labeler.auth import LoginLimiter
from tests.integration.conftest import api_client
from tests.labeling_fixtures import PASSWORD, make_labeling_db
from tests.security.conftest import serve_db


def _login(origin, name, password, client=None):
    client = client or httpx.Client(base_url=origin)
    return client, client.post("/login", data={"username": name, "password": password})


def test_failed_logins_are_limited_per_name_and_address_and_say_so(tmp_path, app_log):
    db_path = make_labeling_db(tmp_path / "app.db", n_prompts=2, k=3)
    limiter = LoginLimiter(per_name_address="3/2 seconds", per_address="100/minute",
                           per_name="100/minute")
    served, _, origin = serve_db(db_path, limiter=limiter)
    try:
        answers = [_login(origin, "ann", f"wrong-{i}")[1] for i in range(4)]
        assert [r.status_code for r in answers[:3]] == [400, 400, 400]
        locked = answers[3]
        assert locked.status_code == 429
        assert "Too many failed logins" in locked.json()["detail"]
        assert 1 <= int(locked.headers["retry-after"]) <= 2
        # The right password is refused too from this address: guessing cannot go on.
        assert _login(origin, "ann", PASSWORD)[1].status_code == 429
        time.sleep(2.1)
        assert _login(origin, "ann", PASSWORD)[1].status_code == 200
        # One log line per refusal, no traceback.
        refused = [r for r in app_log.records if "login" in r.getMessage()]
        assert len(refused) == 5 and not any(r.exc_info for r in refused)
    finally:
        served.close()


def test_the_limits_count_per_name_and_address_per_address_and_per_name():
    limiter = LoginLimiter(per_name_address="3/hour", per_address="10/hour",
                           per_name="6/hour", per_device="3/hour")
    for _ in range(3):
        limiter.failed("ann", "1.2.3.4")
    assert limiter.refusal("ann", "1.2.3.4").reason.endswith("from this address")
    assert limiter.refusal("ann", "9.9.9.9") is None  # another address may still try
    assert limiter.refusal("bob", "1.2.3.4") is None
    for i in range(3):
        limiter.failed("ann", f"10.0.0.{i}")
    # Six failures for the name from several addresses: new devices wait ...
    assert "new devices" in limiter.refusal("ann", "9.9.9.9").reason
    # ... but a browser that logged in to it before does not.
    assert limiter.refusal("ann", "9.9.9.9", device="known") is None
    for i in range(10):  # spraying names from one address locks the address
        limiter.failed(f"name{i}", "5.6.7.8")
    assert limiter.refusal("fresh", "5.6.7.8").reason == "Too many failed logins from this address"
    assert limiter.refusal("fresh", "1.1.1.1") is None


def test_unknown_names_cost_one_scrypt_check_like_real_ones(served, monkeypatch):
    calls = []
    real = hashlib.scrypt

    def counting(*args, **kwargs):
        calls.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    origin = served["origin"]
    for name in ("ann", "nobody-here"):
        calls.clear()
        assert _login(origin, name, "wrong-password")[1].status_code == 400
        assert len(calls) == 1, name
        # Off the event loop: the server's loop runs on the "rankloop-server" thread.
        assert calls[0] != "rankloop-server"


def test_sessions_expire(tmp_path):
    db_path = make_labeling_db(tmp_path / "s.db", n_prompts=2, k=3)
    served, _, origin = serve_db(db_path, session_hours=1.5 / 3600)
    try:
        client, answer = _login(origin, "ann", PASSWORD)
        assert answer.status_code == 200
        assert client.get("/gradio_api/login_check").status_code == 200
        time.sleep(1.6)
        assert client.get("/gradio_api/login_check").status_code == 401
    finally:
        served.close()


def test_logout_revokes_the_token_and_disabling_ends_sessions_at_once(served):
    origin, db_path = served["origin"], served["db"]
    client, _ = _login(origin, "ann", PASSWORD)
    cookies = dict(client.cookies)
    assert client.post("/logout").status_code == 303
    replay = httpx.Client(base_url=origin, cookies=cookies)  # the old cookie, kept by a thief
    assert replay.get("/gradio_api/login_check").status_code == 401

    bob = api_client(origin + "/", ("bob", PASSWORD))
    assert bob.predict(api_name="/load_task")[1]["assignment_id"]
    db = store.open_store(db_path)
    labeling.set_disabled(db, "bob", True)  # what `rankloop users disable bob` does
    with pytest.raises(Exception):
        bob.predict(api_name="/load_task")
    _, answer = _login(origin, "bob", PASSWORD)
    assert answer.status_code == 403 and "disabled" in answer.json()["detail"]
    assert _login(origin, "bob", "wrong-password")[1].status_code == 400  # no oracle
    labeling.set_disabled(db, "bob", False)
    assert _login(origin, "bob", PASSWORD)[1].status_code == 200


def test_look_alike_names_log_in_to_the_one_account(served):
    client, answer = _login(served["origin"], "ＡＮＮ", PASSWORD)
    assert answer.status_code == 200
    assert client.get("/gradio_api/user").json() == "ann"


def test_headers_frame_and_cors(served):
    origin = served["origin"]
    page = httpx.get(origin + "/")
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "rl-login-refused" in page.text  # the login page can show a lockout's reason
    client, _ = _login(origin, "ann", PASSWORD)
    for other in ("http://localhost:9999", "http://127.0.0.1:1", "http://evil.example", "null"):
        answer = client.get("/config", headers={"Origin": other})
        assert "access-control-allow-origin" not in answer.headers
        assert "access-control-allow-credentials" not in answer.headers
        preflight = client.options("/gradio_api/queue/join", headers={
            "Origin": other, "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers


def test_uploads_are_closed_for_everyone(served, app_log):
    client, _ = _login(served["origin"], "root", PASSWORD)  # even an admin
    answer = client.post("/gradio_api/upload", files={"files": ("x.txt", b"x" * 1000)})
    assert answer.status_code == 403 and "uploads are closed" in answer.json()["detail"]
    assert httpx.post(served["origin"] + "/gradio_api/upload",
                      files={"files": ("x.txt", b"x")}).status_code == 403
    assert sum("upload" in r.getMessage() for r in app_log.records) == 2
