"""Serving the app: login limits, sessions in SQLite, security headers, TLS.

The Gradio Blocks are mounted on a FastAPI app of our own (``gr.mount_gradio_app``) and run
by uvicorn, so that one ASGI middleware sees every request before Gradio does:

- security headers on every response (CSP, frame-ancestors, nosniff, no referrer; HSTS under
  TLS) and no CORS headers at all: the app's pages only ever call their own origin;
- request bodies read up to the JSON routes' cap (``MAX_BODY_BYTES``) on every route;
- the upload routes and Gradio's token route closed for everyone;
- login and logout refused from other sites, logout by POST only;
- session cookies HttpOnly and SameSite=Lax, and under TLS Secure with no plain-HTTP copy;
- each Gradio ``session_hash`` bound to the user who first used it;
- the client address (the connection's, or a trusted proxy's ``X-Forwarded-For``) kept for
  the login limiter.

The Rank tab's JSON routes (``labeler/rank_api.py``) are routes of that same app, ahead of the
Gradio mount, and know the user from the same login cookie.

Gradio's login route checks passwords with our async ``LoginGuard.check`` (scrypt on a
worker thread, never on the event loop) and stores sessions through ``app.tokens``, which
is replaced by ``SessionTokens``: a view of the ``sessions`` table, so sessions expire,
survive a restart, and end at once when an admin disables the account or resets its
password.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import anyio
import gradio as gr
from fastapi import FastAPI, HTTPException

from data import labeling, store
from labeler.auth import LoginLimiter, device_cookie, known_device, verify_password_or_dummy
from labeler.rank_api import MAX_BODY_BYTES, PREFIX, create_rank_router

log = logging.getLogger("rankloop.app")

DEFAULT_SESSION_HOURS = 12.0

_CLIENT = contextvars.ContextVar("rankloop_client", default="")

# What the app's own pages need, and nothing else: Gradio's bundle is served from this origin,
# uses inline styles and scripts (its config and our keyboard shortcuts) and compiles the
# gr.HTML template with Function(); untrusted text can add no element that loads anything.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "media-src 'none'",
    "object-src 'none'",
    "frame-src 'none'",
    "worker-src 'self' blob:",
    "base-uri 'self'",  # Gradio's page sets <base href> to its own origin
    "form-action 'self'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
_DROPPED = {b"access-control-allow-origin", b"access-control-allow-credentials",
            b"access-control-allow-methods", b"access-control-allow-headers",
            b"access-control-max-age", b"access-control-expose-headers"}
HSTS = b"max-age=31536000"
"""Sent on every response served over TLS (directly, or by a trusted proxy's
``X-Forwarded-Proto: https``)."""
_UPLOAD_PATHS = ("/gradio_api/upload", "/gradio_api/upload_progress", "/upload")


class SecurityMiddleware:
    """Pure ASGI middleware: it sees every request before Gradio and the JSON routes do.

    It reads a request's body itself, up to ``MAX_BODY_BYTES`` and no further, and hands it on;
    responses pass through unbuffered (streamed events stay streamed) with their headers
    rewritten.
    """

    def __init__(self, app, sessions: "SessionTokens", max_hashes: int = 100_000):
        self.app = app
        self.sessions = sessions
        self.max_hashes = max_hashes
        # Gradio's session_hash -> the user who first used it (see _check_session_hashes).
        self._hash_owner: OrderedDict[str, str] = OrderedDict()
        self._hash_lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route = path.rstrip("/")
        method = scope["method"]
        client = scope.get("client") or ("", 0)
        address = client[0] or ""
        _CLIENT.set(address)
        tls = scope.get("scheme") == "https"
        if tls:
            scope = _without_plain_http_cookies(scope)
        if route in _UPLOAD_PATHS or path.startswith("/gradio_api/upload"):
            log.warning("refused an upload from %s: uploads are closed", address)
            await _send_json(send, 403, {"detail": "uploads are closed: this app takes no "
                                                   "files"}, tls)
            return
        if route in _TOKEN_PATHS:
            # Gradio's page never calls it; it would hand the HttpOnly cookie to any script.
            await _send_json(send, 404, {"detail": "Not Found"}, tls)
            return

        body = None
        if _has_body(scope):
            body = await _read_body(scope, receive)
            if body is None:
                log.warning("refused a request to %s from %s: larger than %d bytes", path,
                            address, MAX_BODY_BYTES)
                sentence = f"the request is larger than {MAX_BODY_BYTES:,} bytes"
                # In the answer format of the route that was asked.
                key = "error" if path.startswith(RANK_API_PREFIX) else "detail"
                await _send_json(send, 413, {key: sentence}, tls)
                return
            receive = _replay(body, receive)

        if route in ("/login", "/logout") and method == "POST" and not _same_origin(scope):
            log.warning("refused a %s from another site (from %s)", route[1:], address)
            await _send_json(send, 403, {"detail": "Requests from other sites are refused: "
                                                   "open the app itself to log in or out."},
                             tls)
            return
        if route == "/logout":
            await self._logout(scope, send, tls)
            return

        extra_cookies: list[bytes] = []
        if route == "/login" and method == "POST":
            attempt = LoginAttempt(address, _cookies(scope), tls)
            _LOGIN.set(attempt)
            extra_cookies = attempt.set_cookies  # filled in by LoginGuard on success

        if path.startswith("/gradio_api/"):
            refusal = await self._check_session_hashes(scope, path, body)
            if refusal:
                log.warning("refused %s from %s: %s", path, address, refusal)
                await _send_json(send, 403, {"detail": refusal}, tls)
                return

        if method == "GET" and path in ("", "/"):
            # The login page is Gradio's own and gets no `head`: add the login messages there.
            await self.app(_without_compression(scope), receive,
                           _inject_into_html(send, LOGIN_PAGE_HEAD.encode(), tls))
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = _response_headers(message.get("headers", []), tls)
                headers += [(b"set-cookie", c) for c in extra_cookies]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _logout(self, scope, send, tls: bool) -> None:
        if scope["method"] == "GET":
            # A link or an <img> must not sign anyone out: the page offers a button instead.
            await _send_html(send, 200, LOGOUT_PAGE, tls)
            return
        if scope["method"] != "POST":
            await _send_json(send, 405, {"detail": "log out with POST"}, tls)
            return
        for token in _session_cookies(scope):
            await anyio.to_thread.run_sync(self.sessions.revoke, token)
        headers = [(b"location", b"./"), (b"content-length", b"0"), (b"cache-control", b"no-store")]
        for name in _cookies(scope):
            if name.startswith("access-token"):
                headers.append((b"set-cookie", f"{name}=; Max-Age=0; Path=/; HttpOnly; "
                                               f"SameSite=Lax{'; Secure' if tls else ''}".encode()))
        await send({"type": "http.response.start", "status": 303,
                    "headers": _response_headers(headers, tls)})
        await send({"type": "http.response.body", "body": b""})

    async def _check_session_hashes(self, scope, path: str, body: bytes | None) -> str | None:
        """Gradio sends an event's results to whoever streams its ``session_hash``, a value the
        client chooses: the first logged-in user to use a hash owns it, and any other request
        naming it is refused."""
        hashes = set(parse_qs(scope.get("query_string", b"").decode("latin-1"))
                     .get("session_hash", []))
        if path.startswith("/gradio_api/heartbeat/"):
            hashes.add(path.split("/")[3])
        if body and body.lstrip()[:1] == b"{":
            try:
                value = json.loads(body).get("session_hash")
            except (ValueError, RecursionError, AttributeError):
                value = None
            if isinstance(value, str):
                hashes.add(value)
        hashes.discard("")
        if not hashes:
            return None
        user = await anyio.to_thread.run_sync(self._user_of, scope)
        with self._hash_lock:
            for value in hashes:
                owner = self._hash_owner.get(value)
                if owner is not None and owner != user:
                    return "this session belongs to another login; reload the page"
            if user is None:
                return None  # Gradio refuses it without a login
            for value in hashes:
                self._hash_owner[value] = user
                self._hash_owner.move_to_end(value)
            while len(self._hash_owner) > self.max_hashes:
                self._hash_owner.popitem(last=False)  # the least recently used
        return None

    def _user_of(self, scope) -> str | None:
        for token in _session_cookies(scope):
            user = self.sessions.get(token)
            if user is not None:
                return labeling.name_key(user)
        return None


@dataclass
class LoginAttempt:
    """What the middleware knows of a login request, and the cookies its answer adds."""

    address: str
    cookies: dict[str, str]
    tls: bool = False
    set_cookies: list[bytes] = field(default_factory=list)


_LOGIN: contextvars.ContextVar[LoginAttempt | None] = contextvars.ContextVar(
    "rankloop_login", default=None)
RANK_API_PREFIX = PREFIX + "/"
_TOKEN_PATHS = ("/gradio_api/token", "/token")


def _same_origin(scope) -> bool:
    """False when the browser says the request comes from another site: ``Sec-Fetch-Site``
    when the browser sends it, else an ``Origin`` that must name this host (the JSON routes
    of labeler/rank_api.py apply the same rule)."""
    headers = _headers(scope)
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = headers.get("origin")
    if not origin:
        return True  # not a browser's cross-origin request (those always carry Origin)
    hosts = {headers.get("host", ""), headers.get("x-forwarded-host", "")}
    return urlsplit(origin).netloc in hosts - {""}


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _cookies(scope) -> dict[str, str]:
    cookies = {}
    for key, value in scope.get("headers", []):
        if key.lower() == b"cookie":
            for part in value.decode("latin-1").split(";"):
                name, _, token = part.strip().partition("=")
                if name:
                    cookies[name] = token
    return cookies


def _has_body(scope) -> bool:
    if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
        return True
    return any(k.lower() in (b"content-length", b"transfer-encoding")
               for k, _ in scope.get("headers", []))


async def _read_body(scope, receive) -> bytes | None:
    """The request's body, or None when it is larger than MAX_BODY_BYTES (read no further)."""
    length = _headers(scope).get("content-length", "")
    if length.strip().isdigit() and int(length) > MAX_BODY_BYTES:
        return None
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away; the app will see an empty body
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            return None
        if not message.get("more_body"):
            break
    return bytes(body)


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then only http.disconnect

    return replayed


def _without_plain_http_cookies(scope):
    """Under TLS the plain-HTTP copy of the session cookie is never read."""
    headers = []
    for key, value in scope.get("headers", []):
        if key.lower() == b"cookie":
            parts = [p for p in value.split(b";")
                     if not p.strip().startswith(b"access-token-unsecure-")]
            value = b";".join(parts)
        headers.append((key, value))
    return {**scope, "headers": headers}


def _response_headers(headers, tls: bool) -> list:
    """The app's headers on a response: no CORS, the security headers, HSTS under TLS, and
    session cookies that are HttpOnly, SameSite=Lax and, under TLS, Secure and alone."""
    out = []
    for key, value in headers:
        lower = key.lower()
        if lower in _DROPPED or lower == b"strict-transport-security":
            continue
        if lower == b"set-cookie":
            value = _session_cookie(value, tls)
            if value is None:
                continue
        out.append((key, value))
    out += SECURITY_HEADERS
    if tls:
        out.append((b"strict-transport-security", HSTS))
    return out


def _session_cookie(value: bytes, tls: bool) -> bytes | None:
    name = value.split(b"=", 1)[0].strip()
    if not name.startswith(b"access-token"):
        return value
    if tls and name.startswith(b"access-token-unsecure-"):
        return None  # under TLS no session cookie goes out without Secure
    parts = [p.strip() for p in value.split(b";")]
    kept = [p for p in parts[1:] if p.split(b"=")[0].lower() not in (b"samesite", b"secure")]
    secure = tls or not name.startswith(b"access-token-unsecure-")
    attributes = [*kept, b"SameSite=Lax"] + ([b"Secure"] if secure else [])
    if b"httponly" not in {p.lower() for p in kept}:
        attributes.append(b"HttpOnly")
    return b"; ".join([parts[0], *attributes])


def _without_compression(scope):
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"accept-encoding"]
    return {**scope, "headers": headers}


def _inject_into_html(send, snippet: bytes, tls: bool):
    """A ``send`` that adds ``snippet`` before ``</head>`` of an HTML page (buffering it:
    the page is a few kilobytes) and adds the security headers."""
    start, chunks = {}, []

    async def wrapped(message):
        if message["type"] == "http.response.start":
            start.update(message)
            return
        if message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = b"".join(chunks)
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        if any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers):
            body = body.replace(b"</head>", snippet + b"</head>", 1)
        headers = _response_headers([*headers, (b"content-length", str(len(body)).encode())],
                                    tls)
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped


async def _send_json(send, status: int, body: dict, tls: bool = False) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": _response_headers([(b"content-type", b"application/json"),
                                              (b"content-length", str(len(raw)).encode())],
                                             tls)})
    await send({"type": "http.response.body", "body": raw})


async def _send_html(send, status: int, page: str, tls: bool) -> None:
    raw = page.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": _response_headers([(b"content-type", b"text/html; charset=utf-8"),
                                              (b"content-length", str(len(raw)).encode()),
                                              (b"cache-control", b"no-store")], tls)})
    await send({"type": "http.response.body", "body": raw})


def _session_cookies(scope) -> list[str]:
    return [token for name, token in _cookies(scope).items()
            if name.startswith("access-token") and token]


class SessionTokens(MutableMapping):
    """Gradio's ``app.tokens`` (token -> user name), kept in the ``sessions`` table.

    Only hashes of tokens are stored, so the mapping cannot be listed: ``keys()`` is empty
    and logout revokes through the middleware instead. ``get`` answers the canonical user
    name of a live session, or None once it expired, was revoked or its user was disabled.
    """

    def __init__(self, db_path: str, ttl_s: float):
        if ttl_s <= 0:
            raise ValueError("the session lifetime must be positive")
        self.db_path, self.ttl_s = db_path, ttl_s
        self._db = store.connect(db_path)
        self._lock = threading.Lock()

    def __setitem__(self, token: str, username: str) -> None:
        with self._lock:
            user = labeling.get_user(self._db, username)
            if user is None or user.disabled:
                raise HTTPException(status_code=400, detail="Incorrect credentials.")
            labeling.create_session(self._db, user.id, token, self.ttl_s, _CLIENT.get())

    def get(self, token, default=None):
        with self._lock:
            user = labeling.session_user(self._db, token)
        return user.name if user else default

    def __getitem__(self, token):
        name = self.get(token)
        if name is None:
            raise KeyError(token)
        return name

    def __contains__(self, token) -> bool:
        return self.get(token) is not None

    def __delitem__(self, token) -> None:
        self.revoke(token)

    def revoke(self, token: str) -> None:
        with self._lock:
            labeling.revoke_session(self._db, token)

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0


class LoginGuard:
    """Gradio's ``auth``: limits failed logins, checks the password off the event loop, says
    when an account is disabled, and marks the browser of a successful login as a known
    device for that name (see ``LoginLimiter``)."""

    def __init__(self, svc, limiter: LoginLimiter | None = None, threads: int | None = None):
        self.svc = svc
        self.limiter = limiter or LoginLimiter()
        # scrypt takes ~50 ms of one core: a flood of logins may use at most this many
        # threads, leaving the rest of the machine to the annotators' requests.
        self._cpu = anyio.CapacityLimiter(threads or max(1, (os.cpu_count() or 2) // 2))

    async def check(self, username: str, password: str) -> bool:
        attempt = _LOGIN.get() or LoginAttempt(_CLIENT.get(), {})
        address = attempt.address
        if not isinstance(username, str) or not isinstance(password, str):
            return False
        name = labeling.name_key(username)[:200]
        user = await anyio.to_thread.run_sync(self._user, username)
        device = known_device(name, user.password_hash, attempt.cookies) if user else None
        refusal = self.limiter.begin(name, address, device)
        if refusal:
            log.warning("login refused for %r from %s: %s", name, address, refusal.reason)
            raise HTTPException(
                status_code=429, headers={"Retry-After": str(refusal.retry_after_s)},
                detail=f"{refusal.reason}: try again in {_duration(refusal.retry_after_s)}.")
        ok = False
        try:
            ok = await anyio.to_thread.run_sync(
                verify_password_or_dummy, password, user.password_hash if user else None,
                limiter=self._cpu)
            ok = ok and user is not None
        finally:
            self.limiter.end(name, address, device, ok)
        if not ok:
            log.warning("failed login for %r from %s", name, address)
            return False
        if user.disabled:
            log.warning("login refused for %r from %s: the account is disabled", name, address)
            raise HTTPException(status_code=403, detail="This account is disabled: ask an "
                                                        "admin to enable it.")
        if device is None:
            cookie_name, value = device_cookie(name, user.password_hash)
            attempt.set_cookies.append(
                f"{cookie_name}={value}; Max-Age={DEVICE_COOKIE_DAYS * 86400}; Path=/; "
                f"HttpOnly; SameSite=Lax{'; Secure' if attempt.tls else ''}".encode())
        return True

    def _user(self, username: str):
        return labeling.get_user(self.svc.db(), username)


DEVICE_COOKIE_DAYS = 365


def _duration(seconds: int) -> str:
    return f"{seconds} s" if seconds < 120 else f"{math.ceil(seconds / 60)} minutes"


# The login page shows Gradio's "Incorrect credentials" for a 400 and nothing otherwise; this
# hides it and shows the reason of every refusal (wrong password, lockout, disabled account,
# another site) as one message inside the login card.
LOGIN_PAGE_HEAD = """
<style>p.creds { display: none !important; }</style>
<script>
(() => {
  const original = window.fetch;
  window.fetch = async (...args) => {
    const response = await original(...args);
    const url = String(args[0] && args[0].url || args[0]);
    if (/\\/login\\/?$/.test(new URL(url, location.href).pathname) && !response.ok) {
      const body = await response.clone().json().catch(() => ({}));
      let box = document.getElementById('rl-login-refused');
      if (!box) {
        box = document.createElement('p');
        box.id = 'rl-login-refused';
        box.setAttribute('role', 'alert');
        box.style.color = 'var(--error-text-color, #b91c1c)';
        const anchor = [...document.querySelectorAll('p.auth')].pop()
          || document.querySelector('h2');
        if (anchor) anchor.after(box); else document.body.prepend(box);
      }
      box.textContent = typeof body.detail === 'string' ? body.detail
        : 'Login refused; try again later.';
    }
    return response;
  };
})();
</script>
"""

# What a plain GET of /logout shows: signing out takes a POST from this origin.
LOGOUT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Log out of RankLoop</title></head>
<body style="font-family: sans-serif; margin: 3em auto; max-width: 30em">
<form method="post" action="logout"><p>Log out of RankLoop?</p>
<button type="submit" id="rl-logout-confirm">Log out</button> <a href="./">Back to the app</a>
</form></body></html>
"""


@dataclass
class ServedApp:
    """A running server: ``close()`` stops it (tests serve in a thread)."""

    blocks: gr.Blocks
    server: object
    thread: threading.Thread | None
    url: str

    def close(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=30)


def create_server_app(svc, blocks: gr.Blocks, *, session_ttl_s: float, head: str, css: str,
                      auth_message: str, limiter: LoginLimiter | None = None) -> FastAPI:
    sessions = SessionTokens(svc.db_path, session_ttl_s)
    guard = LoginGuard(svc, limiter)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SecurityMiddleware, sessions=sessions)
    cookie: dict[str, str] = {}

    def current_user(request) -> str | None:
        """The user of a request's Gradio login session, read as Gradio's own routes do."""
        name = cookie.get("id", "")
        token = (request.cookies.get(f"access-token-{name}")
                 or request.cookies.get(f"access-token-unsecure-{name}"))
        return sessions.get(token) if token else None

    # Before the Gradio mount, which answers every other path.
    app.include_router(create_rank_router(svc, current_user))
    app = gr.mount_gradio_app(
        app, blocks, path="", auth=guard.check, auth_message=auth_message,
        show_error=False, footer_links=[], head=head, css=css,
        max_file_size=0,
    )
    [gradio_app] = [r.app for r in app.routes if hasattr(getattr(r, "app", None), "tokens")]
    gradio_app.tokens = sessions
    # Gradio names its login cookie with a random id per start; one per database instead, so
    # that a browser's session (kept in SQLite) outlives a restart of the app.
    gradio_app.cookie_id = cookie["id"] = hashlib.sha256(
        os.path.realpath(svc.db_path).encode()).hexdigest()[:32]
    app.state.sessions, app.state.login_guard = sessions, guard
    return app


def run(svc, blocks: gr.Blocks, *, host: str, port: int, block: bool, session_ttl_s: float,
        head: str, css: str, auth_message: str, ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None, limiter: LoginLimiter | None = None,
        forwarded_allow_ips: str | None = None) -> ServedApp:
    """Serves the app with uvicorn. ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are read
    only from the proxies listed in ``forwarded_allow_ips`` (comma-separated addresses or
    networks); by default from nobody, so a client cannot choose the address its failed
    logins are counted under."""
    import uvicorn

    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise ValueError("TLS needs both a certificate file and its key file")
    app = create_server_app(svc, blocks, session_ttl_s=session_ttl_s, head=head, css=css,
                            auth_message=auth_message, limiter=limiter)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                            proxy_headers=bool(forwarded_allow_ips),
                            forwarded_allow_ips=forwarded_allow_ips or None,
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    scheme = "https" if ssl_certfile else "http"
    served = ServedApp(blocks, server, None, f"{scheme}://{host}:{port}/")
    if block:
        server.run()
        return served
    served.thread = threading.Thread(target=server.run, daemon=True, name="rankloop-server")
    served.thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not served.thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the app did not start on {host}:{port}")
        time.sleep(0.05)
    return served
