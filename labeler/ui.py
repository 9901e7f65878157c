"""Pieces every tab shares: the logged-in user name, and turning refusals into visible errors."""

from __future__ import annotations

import functools
import logging

import gradio as gr

from labeler.handlers import BadRequest, PermissionDenied, storable

log = logging.getLogger("rankloop.app")


def username(request: gr.Request) -> str:
    return getattr(request, "username", None) or ""


def guard(fn):
    """Turns refusals into a visible Gradio error and logs one line for each; any other
    exception is logged once with its traceback and reaches the client as a plain sentence."""
    @functools.wraps(fn)  # keeps the signature, so Gradio still passes gr.Request
    def wrapper(*args, **kwargs):
        try:
            if not all(map(_all_text, (*args, *kwargs.values()))):
                raise BadRequest("a field holds a character that is not text (a lone "
                                 "surrogate); remove it and try again")
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


def _all_text(value, depth: int = 0) -> bool:
    """False when a string in ``value`` (an event's input, JSON included) holds a lone
    surrogate: no database, log line or answer can encode it."""
    if isinstance(value, str):
        return storable(value)
    if depth > 32:  # deeper than any input of this app: left to the handler to refuse
        return True
    if isinstance(value, dict):
        return all(_all_text(k, depth + 1) and _all_text(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_all_text(v, depth + 1) for v in value)
    return True
