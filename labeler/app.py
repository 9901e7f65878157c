"""The Gradio labeling app: a Rank tab for annotators and an Admin tab for admins.

Every handler looks the user up from the login (``request.username``) and reads and writes
SQLite; nothing lives in ``gr.State``, so a refresh or reconnect resumes where the annotator was.
The tabs live in ``labeler/rank_tab.py`` and ``labeler/admin_tab.py``; the Rank tab's script
talks to its own JSON routes (``labeler/rank_api.py``).
"""

from __future__ import annotations

import gradio as gr

from data.adjudication import can_review
from labeler import server
from labeler.admin_tab import ADMIN_CSS, create_admin_tab
from labeler.handlers import LabelerService
from labeler.rank_tab import CSS, RANK_JS, create_rank_tab
from labeler.render import header_html
from labeler.review_tab import create_review_tab
from labeler.server import DEFAULT_SESSION_HOURS
from labeler.ui import guard, username


def build_app(svc: LabelerService) -> gr.Blocks:
    with gr.Blocks(title="RankLoop") as demo:
        with gr.Row(equal_height=False):
            # On a phone only the name shows: the title stays one line.
            gr.HTML('<h2 id="rl-title">RankLoop<span class="rl-title-rest"> — rank the '
                    'candidate responses</span></h2>', js_on_load=None)
            header = gr.HTML(elem_id="rl-header-box", js_on_load=None)
        with gr.Tabs() as tabs:
            with gr.Tab("Rank", id="rank"):
                create_rank_tab(svc)
            with gr.Tab("Admin", id="admin", visible=False) as admin_tab:
                admin_status, admin_outputs = create_admin_tab(svc)
            with gr.Tab("Review", id="review", visible=False) as review_tab:
                review_load, review_outputs = create_review_tab(svc)

        @guard
        def on_load(request: gr.Request):
            name = username(request)
            user = svc.user(name)
            # Admins and named reviewers settle disputed items (labeler/review_tab.py).
            review = ([gr.Tab(visible=True), *review_load(request)]
                      if can_review(svc.db(), user.id) else
                      [gr.Tab(visible=False), *[gr.skip()] * len(review_outputs)])
            top = header_html(user.name)
            # The Rank tab's screen is the page script's to fetch (labeler/rank_api.py).
            if user.is_admin:
                # An admin lands on the console; their Rank tab takes a task only once opened.
                svc.ensure_candidates()
                return [gr.Tab(visible=True), gr.Tabs(selected="admin"), top,
                        *admin_status(request), *review]
            return [gr.Tab(visible=False), gr.skip(), top, *[gr.skip()] * len(admin_outputs),
                    *review]

        demo.load(on_load, None, [admin_tab, tabs, header, *admin_outputs, review_tab,
                                  *review_outputs],
                  api_visibility="private", show_progress="hidden")
    return demo


def serve(svc: LabelerService, *, host: str = "127.0.0.1", port: int = 7860,
          block: bool = True, session_hours: float = DEFAULT_SESSION_HOURS,
          ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
          limiter=None, forwarded_allow_ips: str | None = None):
    """Serves the app (see labeler/server.py for sessions, login limits and headers)."""
    demo = build_app(svc)
    demo.queue(default_concurrency_limit=16)
    return server.run(
        svc, demo, host=host, port=port, block=block, session_ttl_s=session_hours * 3600,
        head=RANK_JS, css=CSS + ADMIN_CSS,
        auth_message="RankLoop: log in with the account an admin created for you.",
        ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, limiter=limiter,
        forwarded_allow_ips=forwarded_allow_ips)
