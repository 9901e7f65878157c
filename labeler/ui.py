"""Pieces every tab shares: the logged-in user name, and turning refusals into visible errors."""

from __future__ import annotations

import functools
import logging

import gradio as gr

from labeler.handlers import BadRequest, PermissionDenied

log = logging.getLogger("rankloop.app")


def username(request: gr.Request) -> str:
    return getattr(request, "username", None) or ""


def guard(fn):
    """Turns refusals into a visible Gradio error and logs one line for each; any other
    exception is logged once with its traceback and reaches the client as a plain sentence."""
    @functools.wraps(fn)  # keeps the signature, so Gradio still passes gr.Request
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (PermissionDenied, BadRequest) as exc:
            request = kwargs.get("request") or next(
                (a for a in args if isinstance(a, gr.Request)), None)
            log.warning("refused %s for %r: %s", fn.__name__,
                        username(request) if request else "", exc)
            raise gr.Error(str(exc), print_exception=False) from None
        except gr.Error:
            raise
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise gr.Error("Something went wrong on the server; it has been logged.",
                           print_exception=False) from None
    return wrapper
