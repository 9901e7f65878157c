"""The Rank tab's own JSON routes: what the page's script calls for each action.

An annotator's submit-and-next is the hottest request of the app. Sent through a Gradio event
it pays for the queue, the session state of every component and the postprocessing of the
outputs; here it is one plain POST to the same handlers (``labeler/handlers.py``), answered
with the next screen's HTML (rendered by ``labeler/render.py``) and its status.

- Identity is the Gradio login session (the same cookie, the same ``sessions`` table), looked up
  by ``current_user``; nothing else is trusted from the request.
- A request must be JSON (``application/json``, so a cross-site form cannot send one without a
  CORS preflight, which this app never answers) from this origin when the browser says where it
  comes from; its body is read up to ``MAX_BODY_BYTES`` and no further.
- Refusals answer 400/401/403/413/415 with ``{"error": sentence}`` and log one line; any
  other failure is logged once with its traceback and answers 500 with a plain sentence.

The Gradio events of the same names (``/submit``, ``/load_task`` ...) stay, for API clients.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from labeler import handlers
from labeler.handlers import BadRequest, LabelerService, NotLoggedIn, PermissionDenied, Screen
from labeler.render import overlay_html

log = logging.getLogger("rankloop.app")

PREFIX = "/rank/api"
MAX_BODY_BYTES = 1 << 20
"""Larger than the biggest valid payload: a rationale and an answer of ``MAX_TEXT_CHARS``
(20,000) characters each, every character escaped as a surrogate pair (``\\ud83d\\ude00``,
12 bytes), is 480 KB."""


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _screen(result: Screen) -> dict:
    return {"html": result.html, "status": result.status}


def _actions(svc: LabelerService) -> dict[str, Callable[[str, object], dict]]:
    """Each route's work: (user name, JSON payload) -> JSON answer."""
    return {
        "screen": lambda name, p: _screen(handlers.first_screen(svc, name, p)),
        "submit": lambda name, p: _screen(handlers.submit(svc, name, p)),
        "skip": lambda name, p: _screen(handlers.skip(svc, name, p)),
        "reopen": lambda name, p: _screen(handlers.reopen(svc, name, p)),
        "draft": lambda name, p: {"draft": handlers.save_draft(svc, name, p)},
        "layout": lambda name, p: {"layout": handlers.set_layout(svc, name, p)},
        "guidelines": lambda name, p: {"read": handlers.guidelines_read(svc, name, p)},
        "diff": lambda name, p: {"html": overlay_html(handlers.differences(svc, name, p))},
    }


def _same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site. Browsers say so in
    ``Sec-Fetch-Site``, which a proxy leaves alone; without it, the ``Origin`` must name this
    host (as the client or a proxy in front of the app gives it)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if not origin:
        return True  # not a browser's cross-origin request (those always carry Origin)
    hosts = {request.headers.get("host", ""), request.headers.get("x-forwarded-host", "")}
    return urlsplit(origin).netloc in hosts - {""}


async def _read_json(request: Request):
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise _Refused(415, "send the request as application/json")
    if not _same_origin(request):
        raise _Refused(403, "requests from other sites are refused")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _Refused(413, f"the request is larger than {MAX_BODY_BYTES:,} bytes")
    if not body:
        return None
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise _Refused(400, "the request is not valid JSON") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def create_rank_router(svc: LabelerService,
                       current_user: Callable[[Request], str | None]) -> APIRouter:
    """The routes under ``PREFIX``; ``current_user`` names the logged-in user of a request."""
    router = APIRouter(prefix=PREFIX)
    actions = _actions(svc)

    async def serve(action: str, request: Request) -> JSONResponse:
        work = actions.get(action)
        if work is None:
            return JSONResponse({"error": f"no such action {action[:40]!r}"}, status_code=404)
        name = ""

        def as_user(payload):
            nonlocal name
            name = current_user(request) or ""  # a SQLite read: kept off the event loop
            if not name:
                raise _Refused(401, "your session has ended: reload the page to log in again")
            return work(name, payload)

        try:
            payload = await _read_json(request)
            answer = await run_in_threadpool(as_user, payload)
        except _Refused as exc:
            log.warning("refused %s for %r: %s", action, name, exc)
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except (BadRequest, PermissionDenied) as exc:
            log.warning("refused %s for %r: %s", action, name, exc)
            status = 401 if isinstance(exc, NotLoggedIn) else (
                403 if isinstance(exc, PermissionDenied) else 400)
            return JSONResponse({"error": str(exc)}, status_code=status)
        except Exception:
            log.exception("%s failed", action)
            return JSONResponse({"error": "Something went wrong on the server; it has been "
                                          "logged."}, status_code=500)
        return JSONResponse(answer, headers={"cache-control": "no-store"})

    router.add_api_route("/{action}", serve, methods=["POST"], include_in_schema=False)
    return router
