"""The Rank tab: one task at a time, ranked with the mouse or the keyboard.

The whole task is one server-rendered HTML block (``labeler/render.py``); the page's script
(``labeler/static/rank.js``) keeps the ranks in the browser until submit, so ranking costs no
round trip. Each action is one Gradio event with one JSON input and few outputs: the screen,
a status for API clients, and the poll timer of the waiting screen.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from labeler import handlers
from labeler.handlers import LabelerService, Screen
from labeler.render import overlay_html
from labeler.ui import guard, username

_STATIC = Path(__file__).resolve().parent / "static"
RANK_JS = f"<script>\n{(_STATIC / 'rank.js').read_text()}\n</script>"
"""The page's controller, in the page head (the CSP allows inline scripts for Gradio)."""
CSS = (_STATIC / "rank.css").read_text()

# Actions the script sends, each through a hidden button whose event reads its payload.
ACTIONS = ("submit", "skip", "open", "reopen", "draft", "layout", "diff")
POLL_S = 3.0


def _take(kind: str) -> str:
    return f"() => [window.rankloop ? window.rankloop.take({kind!r}) : null]"


class RankTab:
    """The components of the Rank tab."""

    def __init__(self):
        # Rendered and sanitized on the server; gr.HTML shows it as is.
        self.screen = gr.HTML(elem_id="rl-screen", js_on_load=None)
        self.diff = gr.HTML(elem_id="rl-diff", js_on_load=None)
        self.payload = gr.JSON(visible=False, label="payload")
        self.status = gr.JSON(visible=False, label="status")
        self.buttons = {kind: gr.Button(kind, visible="hidden", elem_id=f"rl-do-{kind}")
                        for kind in ACTIONS}
        self.poll = gr.Timer(POLL_S, active=False)

    @property
    def screen_outputs(self) -> list:
        return [self.screen, self.status, self.poll]

    def show(self, result: Screen) -> list:
        return [result.html, result.status, gr.Timer(active=result.waiting)]


def create_rank_tab(svc: LabelerService) -> RankTab:
    tab = RankTab()
    fast = dict(concurrency_limit=None, show_progress="hidden", preprocess=False)

    @guard
    def load_task(request: gr.Request):
        return tab.show(handlers.load_screen(svc, username(request)))

    @guard
    def poll_task(status, request: gr.Request):
        if not isinstance(status, dict) or not status.get("waiting"):
            return [gr.skip()] * len(tab.screen_outputs)  # a task is on screen: leave it
        return tab.show(handlers.load_screen(svc, username(request)))

    @guard
    def submit(payload, request: gr.Request):
        return tab.show(handlers.submit(svc, username(request), payload))

    @guard
    def skip(payload, request: gr.Request):
        return tab.show(handlers.skip(svc, username(request), payload))

    @guard
    def reopen(payload, request: gr.Request):
        return tab.show(handlers.reopen(svc, username(request), payload))

    @guard
    def save_draft(payload, request: gr.Request):
        handlers.save_draft(svc, username(request), payload)

    @guard
    def set_layout(payload, request: gr.Request):
        handlers.set_layout(svc, username(request), payload)

    @guard
    def differences(payload, request: gr.Request):
        return overlay_html(handlers.differences(svc, username(request), payload))

    b = tab.buttons
    b["submit"].click(submit, [tab.payload], tab.screen_outputs, js=_take("submit"),
                      api_name="submit", trigger_mode="once", **fast)
    b["skip"].click(skip, [tab.payload], tab.screen_outputs, js=_take("skip"),
                    api_name="skip", trigger_mode="once", **fast)
    b["open"].click(load_task, None, tab.screen_outputs, api_name="load_task",
                    trigger_mode="once", **fast)
    b["reopen"].click(reopen, [tab.payload], tab.screen_outputs, js=_take("reopen"),
                      api_name="reopen", trigger_mode="once", **fast)
    b["draft"].click(save_draft, [tab.payload], None, js=_take("draft"),
                     api_name="save_draft", trigger_mode="always_last", **fast)
    b["layout"].click(set_layout, [tab.payload], None, js=_take("layout"),
                      api_name="set_layout", **fast)
    b["diff"].click(differences, [tab.payload], [tab.diff], js=_take("diff"),
                    api_name="differences", **fast)
    tab.poll.tick(poll_task, [tab.status], tab.screen_outputs, api_visibility="private",
                  show_progress="hidden")
    return tab
