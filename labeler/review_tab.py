"""The Review tab: admins and named reviewers settle the items annotators disagree on.

The queue is ``data.adjudication``'s (lowest agreement first). Each vote is shown as its
annotator saw it: the letters A, B, C ... in the order shown to them, mapped to the
candidates' numbers, their order best first in those letters, and the time they spent. The
decision (keep one vote as the item's label, let all votes stand, or discard the item) is
stored as its own record; ``data.votes`` says how it changes the labels. Admins also name
reviewers here. Everything annotators or models wrote is shown in Dataframe and Textbox
components (text as text) or as HTML made by ``labeler/render.py``.
"""

from __future__ import annotations

import gradio as gr

from data import adjudication
from labeler.handlers import BadRequest, LabelerService, PermissionDenied
from labeler.render import conversation_html
from labeler.ui import guard, username

QUEUE_SHOWN = 50
CANDIDATE_HEADERS = ["#", "gold rank", "text"]
VOTE_HEADERS = ["vote", "annotator", "letters as they saw them", "order (best first)",
                "active time", "wall time", "rationale"]
OUTCOME_CHOICES = [("Keep one vote as the item's label", "vote"),
                   ("All votes stand (the disagreement is real)", "votes_stand"),
                   ("Discard the item (no vote is a label)", "discard")]


def require_reviewer(svc: LabelerService, name: str | None):
    user = svc.user(name)
    if not adjudication.can_review(svc.db(), user.id):
        raise PermissionDenied("reviewing disputed items is for admins and named reviewers")
    return user


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 90:
        return f"{value:.0f} s"
    if value < 5400:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def queue_choices(svc: LabelerService, name: str) -> tuple[str, list[tuple[str, int]]]:
    """The queue's size as a sentence, and its first items as dropdown choices."""
    require_reviewer(svc, name)
    db = svc.db()
    waiting = adjudication.queue_size(db)
    choices = [(f"item {item_id} · agreement {agreement:.2f}", item_id)
               for item_id, agreement in adjudication.queue_entries(db, limit=QUEUE_SHOWN)]
    if not waiting:
        return "Nothing to review: no undecided item has disagreeing votes.", []
    more = f" (the first {QUEUE_SHOWN} are listed)" if waiting > QUEUE_SHOWN else ""
    return (f"**{waiting}** item{'s' if waiting != 1 else ''} to review, lowest agreement "
            f"first{more}."), choices


def _as_item_id(value) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest("the item is one from the list")
    return value


def item_view(svc: LabelerService, name: str, item_id) -> tuple[str, str, list, list, list]:
    """(summary, prompt HTML, candidate rows, vote rows, vote choices) of a queued item."""
    require_reviewer(svc, name)
    item_id = _as_item_id(item_id)
    if item_id is None:
        return "Choose an item from the queue.", "", [], [], []
    found = adjudication.queued_item(svc.db(), item_id)
    if found is None:
        return (f"Item {item_id} is not in the queue any more (decided, or its votes agree "
                "now).", "", [], [], [])
    number = {c.id: c.number for c in found.candidates}
    candidates = [[c.number, "" if c.gold_rank is None else c.gold_rank, c.text]
                  for c in found.candidates]
    votes, choices = [], []
    for v in found.votes:
        letters = ", ".join(f"{letter} = #{number.get(cid, '?')}"
                            for cid, letter in sorted(v.letters.items(), key=lambda kv: kv[1]))
        active = _seconds(v.active_seconds) + (" (too fast)" if v.too_fast else "")
        votes.append([v.ranking_id, v.annotator, letters, v.order, active,
                      _seconds(v.wall_seconds), v.rationale or ""])
        if v.ranks:
            choices.append((f"vote {v.ranking_id} by {v.annotator}", v.ranking_id))
    summary = (f"Item {found.item_id}" + (" · gold" if found.is_gold else "")
               + f" · agreement {found.agreement:.2f} · {len(found.votes)} votes")
    return summary, conversation_html(found.messages), candidates, votes, choices


def decide(svc: LabelerService, name: str, item_id, outcome, vote_id, note) -> str:
    user = require_reviewer(svc, name)
    item_id = _as_item_id(item_id)
    if item_id is None:
        return "Not recorded: choose an item first."
    if not isinstance(outcome, str) or outcome not in adjudication.OUTCOMES:
        return "Not recorded: choose what to do with the item."
    if outcome == "vote" and (vote_id is None or isinstance(vote_id, bool)
                              or not isinstance(vote_id, int)):
        return "Not recorded: choose the vote to keep."
    if note is not None and not isinstance(note, str):
        raise BadRequest("the note must be text")
    try:
        decision = adjudication.record_decision(
            svc.db(), item_id=item_id, reviewer_id=user.id, outcome=outcome,
            ranking_id=vote_id if outcome == "vote" else None, note=note or "")
    except adjudication.AdjudicationError as exc:
        return f"Not recorded: {exc}."
    what = {"vote": f"vote {vote_id} is the item's label",
            "votes_stand": "all its votes stand", "discard": "the item gives no label"}[outcome]
    return f"Recorded decision {decision} on item {item_id}: {what}."


def set_reviewer(svc: LabelerService, name: str, target, reviewer) -> str:
    svc.require_admin(name)
    if not isinstance(target, str) or not target.strip():
        return "Not changed: give the user's name."
    if not isinstance(reviewer, bool):
        raise BadRequest("reviewer must be true or false")
    try:
        adjudication.set_reviewer(svc.db(), target.strip(), reviewer)
    except adjudication.AdjudicationError as exc:
        return f"Not changed: {exc}."
    return (f"{target.strip()} is now a reviewer." if reviewer else
            f"{target.strip()} is no longer a reviewer.")


def create_review_tab(svc: LabelerService):
    """Builds the tab's components; returns ``(load, outputs)`` for the page load, which
    fills the queue for a reviewer and shows the reviewers' form to admins."""
    gr.Markdown("Items whose annotators disagree, lowest agreement first. Each vote shows "
                "the letters its annotator saw (their own shuffled order) mapped to the "
                "candidates' numbers below.")
    with gr.Row():
        summary = gr.Markdown(elem_id="rl-review-summary")
        refresh = gr.Button("Refresh", scale=0, elem_id="rl-review-refresh")
    item = gr.Dropdown(label="Item", choices=[], elem_id="rl-review-item")
    item_summary = gr.Markdown(elem_id="rl-review-item-summary")
    prompt = gr.HTML(elem_id="rl-review-prompt")
    candidates = gr.Dataframe(headers=CANDIDATE_HEADERS, label="Candidates", interactive=False,
                              wrap=True, elem_id="rl-review-candidates")
    votes = gr.Dataframe(headers=VOTE_HEADERS, label="Votes", interactive=False, wrap=True,
                         elem_id="rl-review-votes")
    outcome = gr.Radio(OUTCOME_CHOICES, label="Decision", elem_id="rl-review-outcome")
    keep = gr.Dropdown(label="Vote to keep", choices=[], elem_id="rl-review-keep")
    note = gr.Textbox(label="Note (optional)", lines=2, elem_id="rl-review-note")
    record = gr.Button("Record decision", variant="primary", elem_id="rl-review-record")
    message = gr.Textbox(label="Message", show_label=False, interactive=False,
                         elem_id="rl-review-message")
    with gr.Group(visible=False) as admins_only:
        gr.Markdown("Name a reviewer (admins review without being named).")
        with gr.Row():
            who = gr.Textbox(label="User name", elem_id="rl-review-who")
            flag = gr.Checkbox(label="Reviewer", value=True, elem_id="rl-review-flag")
            apply = gr.Button("Apply", scale=0, elem_id="rl-review-apply")
        reviewer_message = gr.Textbox(label="Message", show_label=False, interactive=False,
                                      elem_id="rl-review-reviewer-message")

    def queue_outputs(name, selected=None):
        text, choices = queue_choices(svc, name)
        values = [v for _, v in choices]
        chosen = selected if selected in values else (values[0] if values else None)
        return [text, gr.Dropdown(choices=choices, value=chosen),
                *show_item(name, chosen)]

    def show_item(name, item_id):
        text, html, cand_rows, vote_rows, vote_choices = item_view(svc, name, item_id)
        return [text, html, cand_rows, vote_rows,
                gr.Dropdown(choices=vote_choices, value=None)]

    item_outputs = [item_summary, prompt, candidates, votes, keep]
    outputs = [summary, item, *item_outputs]

    @guard
    def on_refresh(selected, request: gr.Request):
        return queue_outputs(username(request), selected)

    @guard
    def on_item(item_id, request: gr.Request):
        return show_item(username(request), item_id)

    @guard
    def on_record(item_id, choice, vote_id, text, request: gr.Request):
        name = username(request)
        said = decide(svc, name, item_id, choice, vote_id, text)
        if said.startswith("Recorded"):
            return [said, "", *queue_outputs(name)]
        return [said, gr.skip(), *[gr.skip()] * len(outputs)]

    @guard
    def on_apply(target, reviewer, request: gr.Request):
        return set_reviewer(svc, username(request), target, reviewer)

    refresh.click(on_refresh, [item], outputs, api_visibility="private")
    item.input(on_item, [item], item_outputs, api_visibility="private")
    record.click(on_record, [item, outcome, keep, note], [message, note, *outputs],
                 api_visibility="private")
    apply.click(on_apply, [who, flag], [reviewer_message], api_visibility="private")

    def load(request: gr.Request) -> list:
        name = username(request)
        return [gr.Group(visible=svc.user(name).is_admin), *queue_outputs(name)]

    return load, [admins_only, *outputs]
