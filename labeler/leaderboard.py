"""The Admin tab's Leaderboard: ratings of the policies people compared blind, with intervals,
the length-controlled ratings, the win matrix with votes per pair, mean answer length, and the
share of comparison items the queue serves.

Policy names appear here and nowhere an annotator looks; they are shown in Dataframes (text,
never HTML).
"""

from __future__ import annotations

import math

import gradio as gr
import pandas as pd

from labeler.handlers import LabelerService
from labeler.ui import guard, username

RESAMPLES = 1000
RATING_COLUMNS = ["policy", "rating", "95% interval", "length-controlled", "its interval",
                  "votes", "mean tokens"]


def _num(value: float, digits: int = 0) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _interval(low: float, high: float) -> str:
    return "–" if low is None or math.isnan(low) else f"[{low:.0f}, {high:.0f}]"


def leaderboard_tables(svc: LabelerService, name: str, *, comparison_items_only: bool = False,
                       resamples: int = RESAMPLES) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """(a summary line, the ratings table best first, the win matrix: row's win rate over
    column with the votes between them) for an admin."""
    from data.arena import leaderboard, votes_from_db

    svc.require_admin(name)
    votes = votes_from_db(svc.db(), comparison_items_only=comparison_items_only)
    board = leaderboard(votes, resamples=resamples)
    if not board.names:
        return ("No votes between policies yet: add comparison items with `rankloop arena "
                "add`, or run the loop with people ranking (`--previous-share`).",
                pd.DataFrame(columns=RATING_COLUMNS), pd.DataFrame(columns=["policy"]))
    rows = [[r["policy"], _num(r["rating"]), _interval(r["ci_low"], r["ci_high"]),
             _num(r.get("lc_rating", math.nan)),
             _interval(r.get("lc_ci_low", math.nan), r.get("lc_ci_high", math.nan)),
             r["votes"], _num(r["mean_tokens"], 1)] for r in board.rows()]
    matrix = [[a] + [("–" if not board.pair_votes[a][b]
                      else f"{board.win_matrix[a][b]:.2f} ({board.pair_votes[a][b]})")
                     for b in board.names] for a in board.names]
    summary = (f"**{board.votes}** votes between **{len(board.names)}** policies. Ratings on "
               f"the Arena scale (mean 1000), 95% bootstrap intervals over {resamples} "
               "resamples; the length-controlled rating holds answer length equal. Win matrix: "
               "the row's share of its votes against the column (ties half), votes in "
               "brackets.")
    return (summary, pd.DataFrame(rows, columns=RATING_COLUMNS),
            pd.DataFrame(matrix, columns=["policy"] + board.names))


def save_comparison_share(svc: LabelerService, name: str, share) -> str:
    from data import settings

    user = svc.require_admin(name)
    try:
        value = float(share)
    except (TypeError, ValueError):
        return "Not saved: the share is a number between 0 and 1."
    try:
        settings.set_setting(svc.db(), "comparison_share", value, by=user.name)
    except settings.SettingsError as exc:
        return f"Not saved: {exc}."
    return (f"Saved: the queue offers a comparison item first {value:.0%} of the time "
            "(either kind when the other runs out).")


def create_leaderboard_section(svc: LabelerService):
    """The Leaderboard sub-tab's components; returns ``(load, load_outputs)`` for the page
    load, like the console's other sections."""
    from types import SimpleNamespace

    with gr.Row():
        summary = gr.Markdown(elem_id="rl-admin-leaderboard-summary")
        only = gr.Checkbox(label="Comparison items only (leave out the loop's rounds)",
                           elem_id="rl-admin-leaderboard-only")
        refresh = gr.Button("Refresh", size="sm", scale=0, elem_id="rl-admin-leaderboard-refresh")
    ratings = gr.Dataframe(headers=RATING_COLUMNS, label="Ratings", interactive=False,
                           elem_id="rl-admin-leaderboard-ratings")
    matrix = gr.Dataframe(label="Win rate of row over column (votes)", interactive=False,
                          elem_id="rl-admin-leaderboard-matrix")
    with gr.Row():
        share = gr.Number(label="Share of comparison items in the queue (0-1)", minimum=0,
                          maximum=1, step=0.05, elem_id="rl-admin-comparison-share")
        save = gr.Button("Save share", scale=0, elem_id="rl-admin-save-comparison-share")
        message = gr.Textbox(show_label=False, interactive=False,
                             elem_id="rl-admin-comparison-share-message",
                             elem_classes="rl-admin-message")

    @guard
    def show(comparison_only, request: gr.Request):
        return leaderboard_tables(svc, username(request),
                                  comparison_items_only=bool(comparison_only))

    @guard
    def save_share(value, request: gr.Request):
        return save_comparison_share(svc, username(request), value)

    refresh.click(show, only, [summary, ratings, matrix], api_visibility="undocumented")
    save.click(save_share, share, message, api_visibility="undocumented")

    def load(name):
        from data import settings

        return (*leaderboard_tables(svc, name),
                settings.get_setting(svc.db(), "comparison_share"))

    return SimpleNamespace(load=load, load_outputs=[summary, ratings, matrix, share])
