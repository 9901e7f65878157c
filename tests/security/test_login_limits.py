"""Login limits against the served app: a forged X-Forwarded-For buys no fresh address, directly
or through a reverse proxy the app trusts, and failed tries for a name cannot keep out a
browser that logged in to it before.

Clients come from different loopback addresses (127.0.0.2, 127.0.0.3 ...), which Linux routes
like 127.0.0.1, so that one machine can play several addresses."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from labeler.auth import LoginLimiter
from tests.integration.conftest import free_port
from tests.labeling_fixtures import PASSWORD, make_labeling_db
from tests.security.conftest import serve_db


def _client(base_url: str, address: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=20,
                        transport=httpx.HTTPTransport(local_address=address))


def _login(client: httpx.Client, name: str, password: str, **headers) -> httpx.Response:
    return client.post("/login", data={"username": name, "password": password},
                       headers=headers)


class ForwardingProxy:
    """A reverse proxy on 127.0.0.1 that does what the nginx recipe in SECURITY.md does: it
    appends the client's address to X-Forwarded-For ($proxy_add_x_forwarded_for), sets
    X-Forwarded-Proto and Host, and connects to the app from 127.0.0.1."""

    def __init__(self, upstream: str):
        import uvicorn

        self.upstream = upstream
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", proxy_headers=False,
                                                    interface="asgi3"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.05)

    async def app(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                   if k.lower() not in (b"host", b"content-length", b"connection")}
        forwarded = headers.pop("x-forwarded-for", "")
        client = scope["client"][0]
        headers["x-forwarded-for"] = f"{forwarded}, {client}" if forwarded else client
        headers["x-forwarded-proto"] = "http"
        headers["x-real-ip"] = client
        query = scope["query_string"].decode("latin-1")
        url = self.upstream + scope["path"] + (f"?{query}" if query else "")
        async with httpx.AsyncClient(timeout=20) as upstream:
            answer = await upstream.request(scope["method"], url, headers=headers, content=body)
        await send({"type": "http.response.start", "status": answer.status_code,
                    "headers": [(k.encode(), v.encode()) for k, v in answer.headers.multi_items()
                                if k.lower() not in ("content-length", "transfer-encoding",
                                                     "content-encoding", "connection")]})
        await send({"type": "http.response.body", "body": answer.content})

    def close(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def db_path(tmp_path):
    return make_labeling_db(tmp_path / "app.db", n_prompts=2, k=3)


def _sprayer_limiter():
    # Only the per-address limit can stop a client that tries a new name each time.
    return LoginLimiter(per_name_address="100/minute", per_address="5/minute",
                        per_name="100/minute", per_device="100/minute")


def test_a_forged_forwarded_for_is_ignored_by_default(db_path, app_log):
    served, _, origin = serve_db(db_path)  # the default limits: 10 failures per address
    try:
        # A client on the app's own host: the address a proxy on that host would have.
        with _client(origin, "127.0.0.1") as client:
            answers = [_login(client, f"guess{i}", "wrong-password",
                              **{"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                       for i in range(13)]
        assert answers == [400] * 10 + [429] * 3
        logged = " ".join(r.getMessage() for r in app_log.records)
        assert "127.0.0.1" in logged and "203.0.113." not in logged
        with _client(origin, "127.0.0.3") as other:  # another address is not held back
            assert _login(other, "ann", PASSWORD).status_code == 200
    finally:
        served.close()


def test_behind_a_trusted_proxy_the_client_address_counts_and_forged_ones_do_not(db_path,
                                                                                 app_log):
    served, _, origin = serve_db(db_path, limiter=_sprayer_limiter(),
                                 forwarded_allow_ips="127.0.0.1")
    proxy = ForwardingProxy(origin)
    try:
        with _client(proxy.url, "127.0.0.2") as attacker:
            answers = [_login(attacker, f"guess{i}", "wrong-password",
                              **{"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                       for i in range(8)]
        assert answers == [400] * 5 + [429] * 3
        logged = " ".join(r.getMessage() for r in app_log.records)
        assert "127.0.0.2" in logged and "203.0.113." not in logged
        # Everyone comes through the same proxy address, yet others are not locked out.
        with _client(proxy.url, "127.0.0.3") as colleague:
            assert _login(colleague, "bob", "wrong-password").status_code == 400
            assert _login(colleague, "ann", PASSWORD).status_code == 200
    finally:
        proxy.close()
        served.close()


def test_an_attacker_cannot_lock_out_a_user_who_logged_in_before(db_path):
    limiter = LoginLimiter(per_name_address="3/minute", per_address="6/minute",
                           per_name="6/minute", per_device="3/minute")
    served, _, origin = serve_db(db_path, limiter=limiter)
    try:
        ann = _client(origin, "127.0.0.2")
        assert _login(ann, "ann", PASSWORD).status_code == 200
        assert any(name.startswith("rankloop-device-") for name in ann.cookies)
        assert ann.post("/logout").status_code == 303
        # An attacker on other addresses, and on ann's own (a shared NAT), fails for her name
        # until every limit a stranger meets is spent ...
        tries = []
        for address in ("127.0.0.3", "127.0.0.4", "127.0.0.2"):
            with _client(origin, address) as attacker:
                tries += [_login(attacker, "ann", f"guess-{i}").status_code for i in range(4)]
        assert 429 in tries
        with _client(origin, "127.0.0.5") as stranger:  # a new device is slowed ...
            refused = _login(stranger, "ann", PASSWORD)
            assert refused.status_code == 429 and "new devices" in refused.json()["detail"]
        # ... while ann's browser, which logged in before, gets in at once, again and again.
        for _ in range(3):
            answer = _login(ann, "ann", PASSWORD)
            assert answer.status_code == 200, answer.text
            assert ann.get("/gradio_api/user").json() == "ann"
            ann.post("/logout")
        # Her own browser's wrong tries are still limited (the device's own count).
        mine = [_login(ann, "ann", f"typo-{i}").status_code for i in range(4)]
        assert mine == [400, 400, 400, 429]
        # A known-device cookie for another name, or a forged one, buys nothing.
        forged = {n: v.split(".")[0] + ".0000" for n, v in ann.cookies.items()
                  if n.startswith("rankloop-device-")}
        with _client(origin, "127.0.0.6") as thief:
            thief.cookies.update(forged)
            assert _login(thief, "ann", PASSWORD).status_code == 429
        ann.close()
    finally:
        served.close()


def test_tries_sent_at_once_cannot_all_pass_before_the_first_fails(db_path):
    from concurrent.futures import ThreadPoolExecutor

    served, _, origin = serve_db(db_path, limiter=_sprayer_limiter())
    try:
        def one(i):
            with _client(origin, "127.0.0.2") as client:
                return _login(client, f"guess{i}", "wrong-password").status_code

        with ThreadPoolExecutor(16) as pool:
            answers = sorted(pool.map(one, range(16)))
        assert answers == [400] * 5 + [429] * 11
    finally:
        served.close()


def test_rankloop_app_trusts_forwarded_headers_only_from_the_proxies_it_names(tmp_path,
                                                                             monkeypatch):
    import atexit
    import signal

    import labeler.app
    from launch.cli import main

    calls = []
    monkeypatch.setattr(labeler.app, "serve", lambda svc, **kw: calls.append(kw))
    monkeypatch.setattr(signal, "signal", lambda *a: None)
    monkeypatch.setattr(atexit, "register", lambda *a: None)
    db = str(tmp_path / "app.db")
    assert main(["app", "--db", db, "--no-autogenerate"]) == 0
    assert main(["app", "--db", db, "--no-autogenerate", "--forwarded-allow-ips",
                 "127.0.0.1,10.0.0.0/8"]) == 0
    assert [c["forwarded_allow_ips"] for c in calls] == [None, "127.0.0.1,10.0.0.0/8"]
