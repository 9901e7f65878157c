"""Serving the app: login limits, sessions in SQLite, security headers, TLS.

The Gradio Blocks are mounted on a FastAPI app of our own (``gr.mount_gradio_app``) and run
by uvicorn, so that one ASGI middleware sees every request before Gradio does:

- security headers on every response (CSP, frame-ancestors, nosniff, no referrer) and no
  CORS headers at all: the app's pages only ever call their own origin;
- the upload routes closed for everyone (the app has no file input);
- the client address of a login kept for the limiter, and ``/logout`` ending its session.

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
from collections.abc import MutableMapping
from dataclasses import dataclass

import anyio
import gradio as gr
from fastapi import FastAPI, HTTPException

from data import labeling, store
from labeler.auth import LoginLimiter
from labeler.rank_api import create_rank_router

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
_UPLOAD_PATHS = ("/gradio_api/upload", "/gradio_api/upload_progress", "/upload")


class SecurityMiddleware:
    """Pure ASGI middleware (it never buffers a body, so streamed events pass untouched)."""

    def __init__(self, app, sessions: "SessionTokens"):
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        client = scope.get("client") or ("", 0)
        _CLIENT.set(client[0] or "")
        if path.rstrip("/") in _UPLOAD_PATHS or path.startswith("/gradio_api/upload"):
            log.warning("refused an upload from %s: uploads are closed", client[0])
            await _send_json(send, 403, {"detail": "uploads are closed: this app takes no "
                                                   "files"})
            return
        if scope["method"] == "GET" and path in ("", "/"):
            # The login page is Gradio's own and gets no `head`: add the lockout message there.
            await self.app(_without_compression(scope), receive,
                           _inject_into_html(send, LOGIN_MESSAGE_JS.encode()))
            return
        if path.rstrip("/") == "/logout":
            for token in _session_cookies(scope):
                await anyio.to_thread.run_sync(self.sessions.revoke, token)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in _DROPPED]
                headers += SECURITY_HEADERS
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _without_compression(scope):
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"accept-encoding"]
    return {**scope, "headers": headers}


def _inject_into_html(send, snippet: bytes):
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
        headers = [(k, v) for k, v in start.get("headers", [])
                   if k.lower() not in _DROPPED and k.lower() != b"content-length"]
        if any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers):
            body = body.replace(b"</head>", snippet + b"</head>", 1)
        headers += [(b"content-length", str(len(body)).encode()), *SECURITY_HEADERS]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped


async def _send_json(send, status: int, body: dict) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(raw)).encode()), *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": raw})


def _session_cookies(scope) -> list[str]:
    tokens = []
    for key, value in scope.get("headers", []):
        if key.lower() != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            name, _, token = part.strip().partition("=")
            if name.startswith("access-token") and token:
                tokens.append(token)
    return tokens


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
    """Gradio's ``auth``: limits failed logins, checks the password off the event loop."""

    def __init__(self, svc, limiter: LoginLimiter | None = None, threads: int | None = None):
        self.svc = svc
        self.limiter = limiter or LoginLimiter()
        # scrypt takes ~50 ms of one core: a flood of logins may use at most this many
        # threads, leaving the rest of the machine to the annotators' requests.
        self._cpu = anyio.CapacityLimiter(threads or max(1, (os.cpu_count() or 2) // 2))

    async def check(self, username: str, password: str) -> bool:
        address = _CLIENT.get()
        name = labeling.name_key(username or "")[:200]
        wait = self.limiter.retry_after(name, address)
        if wait > 0:
            log.warning("login refused for %r from %s: locked for %.0f s", name, address, wait)
            raise HTTPException(
                status_code=429, headers={"Retry-After": str(math.ceil(wait))},
                detail=f"Too many failed logins for this name or from this address: "
                       f"try again in {math.ceil(wait)} s.")
        ok = await anyio.to_thread.run_sync(self.svc.check_login, username, password,
                                            limiter=self._cpu)
        if ok:
            self.limiter.succeeded(name, address)
        else:
            self.limiter.failed(name, address)
            log.warning("failed login for %r from %s", name, address)
        return ok


# The login page shows "Incorrect credentials" for a 400 and nothing otherwise: this shows
# the reason of any other refusal (the lockout) under the form.
LOGIN_MESSAGE_JS = """
<script>
(() => {
  const original = window.fetch;
  window.fetch = async (...args) => {
    const response = await original(...args);
    const url = String(args[0] && args[0].url || args[0]);
    if (/\\/login\\/?$/.test(new URL(url, location.href).pathname) && response.status === 429) {
      const body = await response.clone().json().catch(() => ({}));
      let box = document.getElementById('rl-login-refused');
      if (!box) {
        box = document.createElement('p');
        box.id = 'rl-login-refused';
        box.style.color = 'var(--error-text-color, #b91c1c)';
        (document.querySelector('form, .wrap, body') || document.body).prepend(box);
      }
      box.textContent = body.detail || 'Login refused; try again later.';
    }
    return response;
  };
})();
</script>
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
        ssl_keyfile: str | None = None, limiter: LoginLimiter | None = None) -> ServedApp:
    import uvicorn

    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise ValueError("TLS needs both a certificate file and its key file")
    app = create_server_app(svc, blocks, session_ttl_s=session_ttl_s, head=head, css=css,
                            auth_message=auth_message, limiter=limiter)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                            ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
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
