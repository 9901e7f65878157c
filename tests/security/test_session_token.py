"""The session token stays with the server and its cookie: no route hands it out, under TLS
it never travels without Secure (and the app asks for HTTPS from then on), and Gradio's
event results reach only the user whose session_hash it is."""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
import ssl

import httpx
import pytest

from tests.integration.conftest import free_port
from tests.labeling_fixtures import PASSWORD, make_labeling_db
from tests.security.conftest import serve_db


def _logged_in(origin: str, name: str, **options) -> httpx.Client:
    client = httpx.Client(base_url=origin, timeout=20, **options)
    answer = client.post("/login", data={"username": name, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return client


def test_no_route_hands_out_the_session_token(served):
    client = _logged_in(served["origin"], "ann")
    token = next(v for k, v in client.cookies.items() if k.startswith("access-token"))
    for path in ("/gradio_api/token", "/gradio_api/token/", "/token"):
        answer = client.get(path)
        assert answer.status_code == 404
        assert token not in answer.text
    assert client.get("/gradio_api/user").json() == "ann"  # the session itself works


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_under_tls_every_cookie_is_secure_and_the_app_sends_hsts(tmp_path):
    cert, key = _self_signed(tmp_path)
    db_path = make_labeling_db(tmp_path / "app.db", n_prompts=2, k=3)
    port = free_port()
    served, _, _ = serve_db(db_path, port=port, ssl_certfile=cert, ssl_keyfile=key)
    origin = f"https://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=origin, verify=ssl.create_default_context(cafile=cert),
                          timeout=20) as client:
            page = client.get("/")
            assert page.status_code == 200
            assert page.headers["strict-transport-security"].startswith("max-age=")
            login = client.post("/login", data={"username": "ann", "password": PASSWORD})
            assert login.status_code == 200
            assert "max-age=" in login.headers["strict-transport-security"]
            cookies = login.headers.get_list("set-cookie")
            assert any(c.startswith("access-token-") for c in cookies)
            assert not [c for c in cookies if c.startswith("access-token-unsecure-")], cookies
            for cookie in cookies:
                attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
                assert {"secure", "httponly"} <= attributes, cookie
            assert client.get("/gradio_api/user").json() == "ann"
            logout = client.post("/logout")
            assert all("secure" in c.lower() for c in logout.headers.get_list("set-cookie"))
    finally:
        served.close()


def _fn_index(client: httpx.Client, api_name: str) -> int:
    dependencies = client.get("/config").json()["dependencies"]
    return next(i for i, d in enumerate(dependencies) if d.get("api_name") == api_name)


def _stream(client: httpx.Client, session_hash: str, seconds: float = 20) -> tuple[int, list]:
    """The status of the event stream for ``session_hash`` and the messages read from it
    until an event completes."""
    messages = []
    with client.stream("GET", "/gradio_api/queue/data", params={"session_hash": session_hash},
                       timeout=seconds) as answer:
        if answer.status_code != 200:
            answer.read()
            return answer.status_code, [answer.text]
        for line in answer.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                messages.append(message)
                if message.get("msg") == "process_completed":
                    break
    return 200, messages


def test_event_results_reach_only_the_user_who_started_the_event(served, app_log):
    origin = served["origin"]
    admin, annotator = _logged_in(origin, "root"), _logged_in(origin, "ann")
    session_hash = secrets.token_hex(6)
    joined = admin.post("/gradio_api/queue/join", json={
        "data": [], "event_data": None, "fn_index": _fn_index(admin, "on_load"),
        "trigger_id": None, "session_hash": session_hash})
    assert joined.status_code == 200, joined.text
    # The annotator learnt the admin's session_hash: neither its stream nor its events are
    # theirs.
    status, messages = _stream(annotator, session_hash, seconds=10)
    assert status == 403, messages
    assert "another login" in messages[0]
    assert annotator.post(f"/gradio_api/heartbeat/{session_hash}").status_code in (403, 405)
    assert annotator.post("/gradio_api/queue/join", json={
        "data": [], "event_data": None, "fn_index": _fn_index(admin, "on_load"),
        "trigger_id": None, "session_hash": session_hash}).status_code == 403
    # The admin still receives their own results.
    status, messages = _stream(admin, session_hash)
    assert status == 200
    completed = [m for m in messages if m.get("msg") == "process_completed"]
    assert completed and completed[0]["success"], messages
    assert sum("another login" in r.getMessage() for r in app_log.records) >= 2


@pytest.mark.parametrize("chunked", [False, True])
def test_every_route_that_takes_input_caps_its_body(served, app_log, chunked):
    from labeler.rank_api import MAX_BODY_BYTES

    client = _logged_in(served["origin"], "ann")
    big = b'{"data": ["' + b"x" * (MAX_BODY_BYTES + 10) + b'"], "session_hash": "s"}'
    sent = []

    def chunks():
        for i in range(0, len(big), 65536):
            sent.append(i)
            yield big[i:i + 65536]

    for path in ("/gradio_api/queue/join", "/gradio_api/run/predict", "/login",
                 "/gradio_api/api/submit"):
        sent.clear()
        body = chunks() if chunked else big
        answer = client.post(path, content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 413, (path, answer.status_code, answer.text[:200])
        assert f"{MAX_BODY_BYTES:,}" in answer.json()["detail"]
    logged = [r for r in app_log.records if "larger than" in r.getMessage()]
    assert len(logged) == 4 and not any(r.exc_info for r in logged)
    # A body under the cap still goes through.
    assert client.get("/gradio_api/user").json() == "ann"
