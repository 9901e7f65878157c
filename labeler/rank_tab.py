"""The Rank tab: one task at a time, ranked with the mouse or the keyboard.

The whole task is one server-rendered HTML block (``labeler/render.py``); the page's script
(``labeler/static/rank.js``) keeps the ranks in the browser until submit, so ranking costs no
round trip, and sends each action to the tab's JSON routes (``labeler/rank_api.py``), putting
the answer into the two hosts below.

The same actions are Gradio events too (``/load_task``, ``/submit``, ``/skip``, ``/reopen``,
``/save_draft``, ``/set_layout``, ``/differences``), for API clients such as gradio_client:
one JSON input each, and the screen's HTML with a status dict as outputs. The README's "API
clients" section documents each payload and answer (a test runs its example).
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from labeler import handlers
from labeler.handlers import LabelerService, Screen
from labeler.render import overlay_html
from labeler.ui import guard, username

_STATIC = Path(__file__).resolve().parent / "static"
LOGOUT_JS = """<script>
// Signing out takes a POST from this page (a link or an <img> elsewhere cannot sign anyone out).
document.addEventListener('click', (event) => {
  const link = event.target.closest && event.target.closest('#rl-logout');
  if (!link) return;
  event.preventDefault();
  fetch('logout', {method: 'POST', credentials: 'same-origin'})
    .finally(() => location.assign('./'));
});
</script>"""
RANK_JS = f"<script>\n{(_STATIC / 'rank.js').read_text()}\n</script>\n{LOGOUT_JS}"
"""The page's controller, in the page head (the CSP allows inline scripts for Gradio)."""
CSS = (_STATIC / "rank.css").read_text()

# The API's actions, each the event of a hidden button.
ACTIONS = ("submit", "skip", "open", "reopen", "draft", "layout", "diff")

# The hosts the page's script fills; their own value never changes, so the page never redraws
# them behind the script's back.
SCREEN_HOST = '<div id="rl-screen-body"><p class="rl-loading">Loading your task…</p></div>'
DIFF_HOST = '<div id="rl-diff-body"></div>'


class RankTab:
    """The components of the Rank tab."""

    def __init__(self):
        self.screen = gr.HTML(SCREEN_HOST, elem_id="rl-screen", js_on_load=None)
        self.diff = gr.HTML(DIFF_HOST, elem_id="rl-diff", js_on_load=None)
        # What the API's events answer (rendered and sanitized on the server).
        self.api_screen = gr.HTML(visible=False, js_on_load=None)
        self.api_diff = gr.HTML(visible=False, js_on_load=None)
        self.payload = gr.JSON(visible=False, label="payload")
        self.status = gr.JSON(visible=False, label="status")
        self.buttons = {kind: gr.Button(kind, visible="hidden", elem_id=f"rl-do-{kind}")
                        for kind in ACTIONS}

    @property
    def screen_outputs(self) -> list:
        return [self.api_screen, self.status]

    def show(self, result: Screen) -> list:
        return [result.html, result.status]


def create_rank_tab(svc: LabelerService) -> RankTab:
    tab = RankTab()
    fast = dict(concurrency_limit=None, show_progress="hidden", preprocess=False)

    @guard
    def load_task(request: gr.Request):
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
    b["submit"].click(submit, [tab.payload], tab.screen_outputs, api_name="submit", **fast)
    b["skip"].click(skip, [tab.payload], tab.screen_outputs, api_name="skip", **fast)
    b["open"].click(load_task, None, tab.screen_outputs, api_name="load_task", **fast)
    b["reopen"].click(reopen, [tab.payload], tab.screen_outputs, api_name="reopen", **fast)
    b["draft"].click(save_draft, [tab.payload], None, api_name="save_draft", **fast)
    b["layout"].click(set_layout, [tab.payload], None, api_name="set_layout", **fast)
    b["diff"].click(differences, [tab.payload], [tab.api_diff], api_name="differences", **fast)
    return tab
