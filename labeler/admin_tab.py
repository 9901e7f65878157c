"""The Admin tab: live dataset status, the data browser, jobs, export, users and project settings.

Each form has its own message box beside its button. Everything an annotator or a model wrote
(prompts, candidates, rationales, user names, tags, job logs) is shown in Textbox and
Dataframe components, which show text as text, or as HTML made by ``labeler/render.py``.
"""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from data import browser as item_browser
from data.export import FORMATS, PAIR_MODES, TIES
from data.labeling import MAX_CANDIDATES, ROLES
from data.queue_order import ORDERS as QUEUE_ORDERS
from labeler import admin
from labeler.handlers import LabelerService
from labeler.leaderboard import create_leaderboard_section
from labeler.render import render_untrusted_markdown
from labeler.ui import guard, username


class Section(SimpleNamespace):
    """What a section's builder hands the console: the components its timers and the page
    load update, by name, and for sections with a page load ``load(user)`` with the
    ``load_outputs`` it fills."""


MAX_K = MAX_CANDIDATES
LIVE_S = 3.0
"""Counts, jobs and the log tail: cheap queries, polled often."""
PLOTS_S = 15.0
"""Plots, agreement and the annotator table read every vote: polled less often."""
PAGE_SIZES = [25, 50, 100, 200]

ADMIN_CSS = """
.rl-admin-message textarea { font-size: 0.95em; }
.rl-admin-error textarea { border-left: 4px solid #b91c1c !important; background: #fef2f2;
  color: #7f1d1d; }
.rl-admin-ok textarea { border-left: 4px solid #15803d !important; background: #f0fdf4;
  color: #14532d; }
.rl-admin-table th, .rl-admin-table th * { white-space: nowrap; word-break: keep-all;
  overflow-wrap: normal; }
.rl-admin-note { color: var(--body-text-color-subdued); font-size: 0.9em; }
#rl-admin-log textarea { font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
  font-size: 0.85em; }
#rl-admin-guidelines-preview { border: 1px solid var(--border-color-primary);
  border-radius: 6px; padding: 0.5em 1em; max-height: 24em; overflow: auto; }
"""
"""Style rules for the Admin tab's own elements; the app adds them to the page's CSS."""


def _message(elem_id: str) -> gr.Textbox:
    return gr.Textbox(label="Message", interactive=False, elem_id=elem_id, lines=1,
                      max_lines=4, elem_classes=["rl-admin-message"])


def _said(message: str) -> gr.Textbox:
    """A form's answer: a refusal looks like an error, anything done like a success, in the
    console's words."""
    message = admin.console_message(message or "")
    kind = "rl-admin-error" if admin.is_refusal(message) else "rl-admin-ok"
    return gr.Textbox(value=message, elem_classes=["rl-admin-message", kind])


def _times_frame(points):
    import pandas as pd

    # Counted per UTC hour (per UTC day over longer spans) and labelled as text, so the plot
    # shows the same UTC times as every table of the console, whatever the browser's zone.
    periods = admin.labels_per_period(points)
    return pd.DataFrame({"time (UTC)": [p for p, _ in periods],
                         "rankings": [n for _, n in periods]})


def _agreement_frame(pairs):
    import pandas as pd

    return pd.DataFrame({"pair": [f"{a} / {b}" for a, b, _, _ in pairs],
                         "agreement": [float(p.rstrip("%")) for _, _, p, _ in pairs]})


RAW_INPUTS = (gr.Textbox, gr.Number, gr.Dropdown, gr.Radio, gr.Checkbox)
"""Inputs whose value reaches a handler the same with or without Gradio's preprocessing (a
Number's precision aside, which ``labeler/admin.py`` checks itself)."""


def _raw_inputs(build):
    """Runs ``build`` and turns off Gradio's preprocessing for the guarded events it adds
    whose inputs are all plain fields: an API client's value outside a dropdown's choices, or
    a list where a number belongs, then reaches the handler, whose checks answer a one-line
    refusal (``labeler.ui.guard``), instead of failing inside Gradio with a traceback. The
    console's controls send the same plain values either way. The hooks other modules add to
    the console are included when they follow the same pattern (a guarded handler)."""
    blocks = gr.context.Context.root_block
    before = set(blocks.fns) if blocks is not None else set()
    result = build()
    if blocks is not None:
        for key in set(blocks.fns) - before:
            fn = blocks.fns[key]
            if (getattr(fn.fn, "__wrapped__", None) is not None
                    and all(isinstance(b, RAW_INPUTS) for b in fn.inputs)):
                fn.preprocess = False
    return result


def create_admin_tab(svc: LabelerService):
    return _raw_inputs(lambda: _create_admin_tab(svc))


def _create_admin_tab(svc: LabelerService):
    live = gr.Timer(LIVE_S, active=False)
    slow = gr.Timer(PLOTS_S, active=False)

    def counts(name):
        return admin.live_counts(svc, name), admin.running_jobs_md(svc, name)

    def plots(name):
        st = admin.dataset_status(svc, name)
        extra = (f"\n\n**{st.counts['set_aside']}** items set aside because the page cannot "
                 "show them (their reason is in the items table)"
                 if st.counts.get("set_aside") else "")
        # An empty chart says so instead of drawing empty axes (Vega warns about an
        # "infinite extent" on no data).
        has_times, has_pairs = bool(st.labels_over_time), bool(st.agreement_pairs)
        return (admin.alpha_md(st.alpha) + extra,
                gr.BarPlot(value=_times_frame(st.labels_over_time) if has_times else None,
                           visible=has_times),
                gr.BarPlot(value=_agreement_frame(st.agreement_pairs) if has_pairs else None,
                           visible=has_pairs),
                "" if has_times else "**Rankings per hour:** no rankings yet.",
                "" if has_pairs else ("**Pairwise agreement:** no data yet; it needs items "
                                      "ranked by 2 or more annotators (the overlap, in the "
                                      "Project tab)."),
                st.annotators, st.agreement_pairs)

    @guard
    def refresh_all(request: gr.Request):
        name = username(request)
        return (*counts(name), *plots(name))

    with gr.Tabs():
        with gr.Tab("Overview", id="admin-overview"):
            overview = _overview_section()
            overview.refresh.click(refresh_all, None, [overview.counts, overview.running,
                                                       overview.alpha,
                                                       overview.labels_plot,
                                                       overview.agreement_plot,
                                                       overview.labels_empty,
                                                       overview.agreement_empty,
                                                       overview.annotators, overview.pairs],
                                   api_visibility="undocumented")
        with gr.Tab("Data", id="admin-data") as data_tab:
            data = _browser_section(svc)
        data_tab.select(data.current, data.current_inputs, data.page_outputs,
                        api_visibility="undocumented", show_progress="hidden")
        with gr.Tab("Jobs", id="admin-jobs"):
            jobs = _jobs_section(svc)
        with gr.Tab("Export", id="admin-export"):
            _export_section(svc)
        with gr.Tab("Users", id="admin-users"):
            users = _users_section(svc)
        with gr.Tab("Project", id="admin-project"):
            project = _project_section(svc)
        with gr.Tab("Leaderboard", id="admin-leaderboard"):
            board = create_leaderboard_section(svc)

    @guard
    def tick_live(job_id, request: gr.Request):
        name = username(request)
        return *counts(name), admin.jobs_table(svc, name), admin.job_log(svc, name, job_id)

    @guard
    def tick_slow(request: gr.Request):
        return plots(username(request))

    live_outputs = [overview.counts, overview.running, jobs.table, jobs.log]
    slow_outputs = [overview.alpha, overview.labels_plot, overview.agreement_plot,
                    overview.labels_empty, overview.agreement_empty, overview.annotators,
                    overview.pairs]
    live.tick(tick_live, [jobs.job_id], live_outputs, api_visibility="undocumented",
              show_progress="hidden")
    slow.tick(tick_slow, None, slow_outputs, api_visibility="undocumented",
              show_progress="hidden")

    @guard
    def status(request: gr.Request):
        """Everything the tab shows, for the page load (admins only)."""
        name = username(request)
        return (*counts(name), *plots(name), admin.jobs_table(svc, name),
                admin.job_log(svc, name, 0), *jobs.load(name), *data.load(name),
                *users.load(name), *project.load(name), *board.load(name),
                gr.Timer(active=True), gr.Timer(active=True))

    outputs = [overview.counts, overview.running, *slow_outputs, jobs.table, jobs.log,
               *jobs.load_outputs, *data.load_outputs, *users.load_outputs,
               *project.load_outputs, *board.load_outputs, live, slow]
    return status, outputs


class _RowSelection(gr.SelectData):
    """A table row selection; a call without event data (straight to the API) selects nothing
    and is refused like any other non-admin call, instead of failing inside Gradio."""

    def __init__(self, target, data):
        super().__init__(target, data or {"index": None, "value": None})


# --- overview -----------------------------------------------------------------------------------

def _overview_section() -> Section:
    o = Section()
    with gr.Row():
        o.counts = gr.Markdown(elem_id="rl-admin-counts")
        o.refresh = gr.Button("Refresh now", size="sm", scale=0)
    o.running = gr.Markdown(elem_id="rl-admin-running")
    o.alpha = gr.Markdown(elem_id="rl-admin-alpha")
    with gr.Row():
        with gr.Column():
            o.labels_plot = gr.BarPlot(
                x="time (UTC)", y="rankings", title="Rankings per hour (UTC; skips not counted)",
                height=280, x_label_angle=-30, sort="x", y_lim=[0, None],
                elem_id="rl-admin-labels-plot")
            o.labels_empty = gr.Markdown(elem_id="rl-admin-labels-empty")
        with gr.Column():
            o.agreement_plot = gr.BarPlot(x="pair", y="agreement",
                                          title="Pairwise agreement (%)", height=280,
                                          y_lim=[0, 100], elem_id="rl-admin-agreement-plot")
            o.agreement_empty = gr.Markdown(elem_id="rl-admin-agreement-empty")
    o.annotators = gr.Dataframe(
        headers=["annotator", "role", "ranked", "skipped", "all bad", "demonstrations",
                 "gold accuracy", "weight", "reliability", "median active time",
                 "too fast"], interactive=False,
        label="Annotators · weight: training weight from overlap and gold, 0 = ranks at random · "
              "reliability: its inverse noise · too fast: votes quicker than 2 s plus 1 s per "
              "60 characters of the candidates")
    o.pairs = gr.Dataframe(headers=["annotator", "annotator", "agreement", "candidate pairs"],
                           label="Agreement between annotators (items ranked by both)",
                           interactive=False, elem_classes=["rl-admin-table"])
    gr.Markdown(admin.READING_NOTE, elem_classes=["rl-admin-note"], elem_id="rl-admin-note")
    return o


# --- the data browser ---------------------------------------------------------------------------

def _browser_section(svc: LabelerService) -> Section:
    b = Section()
    statuses = [("any", admin.ANY)] + [(s.replace("_", " "), s)
                                       for s in item_browser.STATUSES]
    with gr.Row():
        status = gr.Dropdown(statuses, value=admin.ANY, label="Status",
                             elem_id="rl-admin-filter-status")
        annotator = gr.Dropdown([admin.ANY], value=admin.ANY, label="Annotator",
                                elem_id="rl-admin-filter-annotator")
        run = gr.Dropdown([admin.ANY], value=admin.ANY, label="Run", elem_id="rl-admin-filter-run")
        tag = gr.Dropdown([admin.ANY], value=admin.ANY, label="Tag", elem_id="rl-admin-filter-tag")
        order = gr.Dropdown([("oldest first", "id"), ("latest ranked first", "recent"),
                             ("most disputed first", "disagreement")], value="id",
                            label="Order", elem_id="rl-admin-filter-order")
    with gr.Row():
        prev_page = gr.Button("← Previous", size="sm", elem_id="rl-admin-prev", scale=0,
                              min_width=110)
        page = gr.Number(value=1, precision=0, minimum=1, label="Page", elem_id="rl-admin-page",
                         scale=0, min_width=100)
        next_page = gr.Button("Next →", size="sm", elem_id="rl-admin-next", scale=0,
                              min_width=110)
        page_size = gr.Dropdown(PAGE_SIZES, value=50, label="Per page", scale=0, min_width=110,
                                elem_id="rl-admin-page-size")
        caption = gr.Textbox(label="Items", interactive=False, elem_id="rl-admin-page-caption")
    table = gr.Dataframe(headers=admin.BROWSE_HEADERS, label="Items (select a row to open it)",
                         interactive=False, wrap=True, max_height=480,
                         elem_id="rl-admin-items", elem_classes=["rl-admin-table"])
    with gr.Row():
        item_id = gr.Number(value=None, precision=0, label="Item id",
                            elem_id="rl-admin-item-id", scale=0, min_width=140)
        open_item = gr.Button("Open item", elem_id="rl-admin-open-item", scale=0)
        release = gr.Button("Release its holds", elem_id="rl-admin-release", scale=0,
                            size="sm")
        summary = gr.Textbox(label="Item", interactive=False, elem_id="rl-admin-item-summary",
                             lines=2, max_lines=4)
    prompt = gr.HTML(elem_id="rl-admin-item-prompt", label="Prompt")
    candidates = gr.Dataframe(headers=["candidate", "disputed", "text"],
                              label="Candidates: human ranks beside the reward models' "
                                    "(disputed candidates highlighted)",
                              interactive=False, wrap=True, elem_id="rl-admin-item-candidates",
                              elem_classes=["rl-admin-table"])
    rankings = gr.Dataframe(headers=admin.RANKING_HEADERS,
                            label="Every ranking of the item, oldest first", interactive=False,
                            wrap=True, elem_id="rl-admin-item-rankings",
                            elem_classes=["rl-admin-table"])

    filters = [status, annotator, run, tag, order, page_size]

    def show_page(name, page_number, status, annotator, run, tag, order, page_size):
        view = admin.browse(svc, name, status=status, annotator=annotator, run_id=run, tag=tag,
                            order=order, page=(page_number or 1) - 1, page_size=page_size)
        return (gr.Dataframe(value=view.rows or None, headers=admin.BROWSE_HEADERS),
                view.page + 1, view.caption())

    def turn(delta):
        @guard
        def run(page_number, status, annotator, run, tag, order, page_size,
                request: gr.Request):
            wanted = max(1, (admin.as_int("the page", page_number) or 1) + delta)
            return show_page(username(request), wanted, status, annotator, run, tag, order,
                             page_size)
        return run

    @guard
    def first_page(status, annotator, run, tag, order, page_size, request: gr.Request):
        return show_page(username(request), 1, status, annotator, run, tag, order, page_size)

    page_outputs = [table, page, caption]
    for control in filters:
        control.input(first_page, filters, page_outputs, api_visibility="undocumented")
    prev_page.click(turn(-1), [page, *filters], page_outputs, api_visibility="undocumented")
    next_page.click(turn(1), [page, *filters], page_outputs, api_visibility="undocumented")
    page.submit(turn(0), [page, *filters], page_outputs, api_visibility="undocumented")

    def show_item(name, wanted):
        view = admin.item_view(svc, name, wanted)
        if view is None:
            return (wanted, f"No item {wanted}." if wanted else "Give an item id.", "",
                    gr.Dataframe(value=None, headers=["candidate", "disputed", "text"]),
                    gr.Dataframe(value=None, headers=admin.RANKING_HEADERS))
        cells = {"headers": view.candidate_headers, "data": view.candidate_rows,
                 "metadata": {"styling": view.candidate_styling, "display_value": None}}
        return (wanted, view.summary, view.prompt_html,
                gr.Dataframe(value=cells, headers=view.candidate_headers),
                gr.Dataframe(value=view.ranking_rows or None, headers=admin.RANKING_HEADERS))

    item_outputs = [item_id, summary, prompt, candidates, rankings]

    @guard
    def open_by_id(wanted, request: gr.Request):
        return show_item(username(request), wanted)

    @guard
    def open_selected(evt: _RowSelection, request: gr.Request):
        row = evt.row_value or []
        return show_item(username(request), row[0] if row else None)

    open_item.click(open_by_id, [item_id], item_outputs, api_visibility="undocumented")

    @guard
    def release_holds(wanted, request: gr.Request):
        name = username(request)
        message = admin.release_item(svc, name, wanted)
        return (*show_item(name, wanted)[:1], message, *show_item(name, wanted)[2:])

    release.click(release_holds, [item_id], item_outputs, api_visibility="undocumented")
    item_id.submit(open_by_id, [item_id], item_outputs, api_visibility="undocumented")
    table.select(open_selected, None, item_outputs, api_visibility="undocumented")

    def current_choices(name):
        choices = admin.browse_choices(svc, name)
        return (gr.Dropdown(choices=[admin.ANY, *choices["annotators"]]),
                gr.Dropdown(choices=[("any", admin.ANY), *choices["runs"]]),
                gr.Dropdown(choices=[admin.ANY, *choices["tags"]]))

    @guard
    def refresh_choices(request: gr.Request):
        return current_choices(username(request))

    # Annotators, runs and tags come and go while the console is open: each list is read
    # again as it is opened.
    for control in (annotator, run, tag):
        control.focus(refresh_choices, None, [annotator, run, tag],
                      api_visibility="undocumented", show_progress="hidden")

    def load(name):
        rows = show_page(name, 1, admin.ANY, admin.ANY, admin.ANY, admin.ANY, "id", 50)
        return (*current_choices(name), *rows)

    # The page loads once, at login: opening the tab reads the items again, so its counts
    # are today's, not the login's.
    b.current = turn(0)
    b.current_inputs = [page, *filters]
    b.page_outputs = page_outputs
    b.load = load
    b.load_outputs = [annotator, run, tag, *page_outputs]
    return b


# --- jobs ---------------------------------------------------------------------------------------

def _jobs_section(svc: LabelerService) -> Section:
    j = Section()
    gr.Markdown("#### Generate candidates")
    with gr.Row():
        prompts = gr.Textbox(value="bundled", label="Prompts (bundled, file, folder or Hub id)")
        model = gr.Textbox(value="default", elem_id="rl-admin-gen-model",
                           label="Model (default: the newest policy iteration, else the "
                                 "embedded model; a folder or a cached Hub id)")
        backend = gr.Dropdown(list(admin.BACKENDS), value="auto", label="Backend")
    with gr.Row():
        k = gr.Number(value=4, precision=0, minimum=1, maximum=MAX_K, label="k")
        limit = gr.Number(value=0, precision=0, minimum=0, label="Limit (0 = all prompts)")
        max_new_tokens = gr.Number(value=256, precision=0, minimum=1, label="Max new tokens")
        temperature = gr.Number(value=0.8, minimum=0, step=0.1, label="Temperature")
        top_p = gr.Number(value=0.9, step=0.05, label="Top p")
        seed = gr.Number(value=0, precision=0, label="Seed")
        # Parallel engines need GPUs: on a machine without one the fields are not offered.
        gpu = admin.machine_has_gpu()
        data_parallel = gr.Number(value=1, precision=0, minimum=1, visible=gpu,
                                  label="Data parallel (engines, e.g. one per GPU)",
                                  elem_id="rl-admin-gen-dp")
        tensor_parallel = gr.Number(value=1, precision=0, minimum=1, visible=gpu,
                                    label="Tensor parallel (GPUs per vLLM engine)",
                                    elem_id="rl-admin-gen-tp")
    j.estimate = gr.Markdown(elem_id="rl-admin-gen-estimate")
    with gr.Row():
        start = gr.Button("Start generation job", variant="primary", scale=0,
                          elem_id="rl-admin-gen-start")
        gen_message = _message("rl-admin-gen-message")
    gr.Markdown("#### Train a reward model on the rankings")
    with gr.Row():
        reward_output = gr.Textbox(label="Output folder (inside the workspace next to the "
                                         "database)", placeholder="models/reward-1")
        reward_model = gr.Textbox(value="default", label="Base model")
        reward_epochs = gr.Number(value=1, precision=0, minimum=1, label="Epochs")
        reward_lora = gr.Number(value=0, precision=0, minimum=0, label="LoRA rank (0 = full)")
        agreed_only = gr.Checkbox(label="Only pairs the annotators agree on")
    with gr.Row():
        train = gr.Button("Start reward training job", scale=0, elem_id="rl-admin-train-start")
        train_message = _message("rl-admin-train-message")
    gr.Markdown("#### Score the candidates with a reward model")
    with gr.Row():
        scorer = gr.Textbox(label="Scorer", placeholder="bt:models/reward-1 or armorm:FOLDER")
        score = gr.Button("Start scoring job", scale=0, elem_id="rl-admin-score-start")
        score_message = _message("rl-admin-score-message")
    gr.Markdown("#### Jobs")
    j.table = gr.Dataframe(headers=admin.JOB_HEADERS,
                           label="Jobs (newest first)", interactive=False,
                           wrap=True, elem_id="rl-admin-jobs", elem_classes=["rl-admin-table"])
    with gr.Row():
        j.job_id = gr.Number(value=0, precision=0, minimum=0, elem_id="rl-admin-job-id",
                             label="Job (0 = the latest; its log follows below)")
        stop = gr.Button("Stop job", variant="stop", scale=0, elem_id="rl-admin-stop")
        stop_message = _message("rl-admin-stop-message")
    j.log = gr.Textbox(label="Log tail (follows the end of the log)", lines=14, max_lines=14,
                       autoscroll=True, interactive=False, elem_id="rl-admin-log")

    @guard
    def start_job(prompts, model, backend, k, limit, max_new_tokens, temperature, top_p, seed,
                  data_parallel_size, tensor_parallel_size, request: gr.Request):
        return _said(admin.start_generation(
            svc, username(request), prompts=prompts, k=k or 4, limit=limit, backend=backend,
            model=model, max_new_tokens=max_new_tokens or 256, temperature=temperature,
            top_p=top_p, seed=seed, data_parallel_size=data_parallel_size or 1,
            tensor_parallel_size=tensor_parallel_size or 1))

    @guard
    def train_job(output, model, epochs, lora_r, agreed, request: gr.Request):
        return _said(admin.start_reward_training(
            svc, username(request), output=output, model=model, epochs=epochs, lora_r=lora_r,
            agreed_only=agreed))

    @guard
    def score_job(scorer_spec, request: gr.Request):
        return _said(admin.start_scoring(svc, username(request), scorer=scorer_spec))

    @guard
    def stop_job(job_id, request: gr.Request):
        name = username(request)
        message = admin.stop_job(svc, name, job_id)
        return _said(message), admin.jobs_table(svc, name), admin.job_log(svc, name, job_id)

    @guard
    def jobs_now(job_id, request: gr.Request):
        name = username(request)
        return admin.jobs_table(svc, name), admin.job_log(svc, name, job_id)

    def estimate(name, prompts, k, limit, max_new_tokens):
        return admin.generation_estimate(svc, name, prompts=prompts, k=k, limit=limit,
                                         max_new_tokens=max_new_tokens)

    @guard
    def show_estimate(prompts, k, limit, max_new_tokens, request: gr.Request):
        return estimate(username(request), prompts, k, limit, max_new_tokens)

    for control in (prompts, k, limit, max_new_tokens):
        control.change(show_estimate, [prompts, k, limit, max_new_tokens], j.estimate,
                       api_visibility="undocumented", show_progress="hidden")
    j.load = lambda name: (estimate(name, "bundled", 4, 0, 256),)
    j.load_outputs = [j.estimate]

    start.click(start_job, [prompts, model, backend, k, limit, max_new_tokens, temperature,
                            top_p, seed, data_parallel, tensor_parallel], gen_message,
                api_visibility="undocumented").then(
        jobs_now, [j.job_id], [j.table, j.log], api_visibility="undocumented")
    train.click(train_job, [reward_output, reward_model, reward_epochs, reward_lora,
                            agreed_only], train_message, api_visibility="undocumented").then(
        jobs_now, [j.job_id], [j.table, j.log], api_visibility="undocumented")
    score.click(score_job, [scorer], score_message, api_visibility="undocumented").then(
        jobs_now, [j.job_id], [j.table, j.log], api_visibility="undocumented")
    stop.click(stop_job, [j.job_id], [stop_message, j.table, j.log],
               api_visibility="undocumented")
    j.job_id.change(jobs_now, [j.job_id], [j.table, j.log], api_visibility="undocumented")
    return j


# --- export -------------------------------------------------------------------------------------

def _export_section(svc: LabelerService) -> None:
    gr.Markdown("#### Export the rankings as a Hugging Face dataset (what `rankloop export` "
                "writes)")
    with gr.Row():
        to = gr.Textbox(label="Folder inside the workspace next to the database, or "
                              "hub:OWNER/NAME", placeholder="exports/rankings-1",
                        elem_id="rl-admin-export-to")
        fmt = gr.Dropdown(list(FORMATS), value="conversational", label="Format")
        pairs = gr.Dropdown(list(PAIR_MODES), value="all", label="Pairs")
        ties = gr.Dropdown(list(TIES), value="exclude", label="Ties")
    with gr.Row():
        min_agreement = gr.Textbox(value="", label="Minimum agreement, 0-1 (empty: keep all "
                                   "pairs; else only pairs judged by 2+ annotators)",
                                   elem_id="rl-admin-export-min-agreement")
        test_fraction = gr.Number(value=0.1, step=0.05, label="Test fraction")
        seed = gr.Number(value=0, precision=0, label="Seed")
        keep_names = gr.Checkbox(label="Keep annotator names (else pseudonyms)")
        overwrite = gr.Checkbox(label="Replace a non-empty folder")
        private = gr.Checkbox(label="Private Hub repository")
    with gr.Row():
        run_export = gr.Button("Export", variant="primary", scale=0, elem_id="rl-admin-export")
        message = _message("rl-admin-export-message")
    # The files written on the server, also as one zip to download here.
    download = gr.File(label="Download the export (zip)", visible=False, interactive=False,
                       elem_id="rl-admin-export-download")

    @guard
    def export(to, fmt, pairs, ties, min_agreement, test_fraction, seed, keep_names, overwrite,
               private, request: gr.Request):
        name = username(request)
        said = admin.export_dataset(
            svc, name, to=to, format=fmt, pairs=pairs, ties=ties,
            min_agreement=min_agreement, test_fraction=test_fraction, seed=seed,
            keep_annotator_names=keep_names, overwrite=overwrite, private=private)
        archive = admin.export_download(svc, name, said)
        return _said(said), gr.File(value=archive, visible=archive is not None)

    run_export.click(export, [to, fmt, pairs, ties, min_agreement, test_fraction, seed,
                              keep_names, overwrite, private], [message, download],
                     api_visibility="undocumented")


# --- users --------------------------------------------------------------------------------------

def _users_section(svc: LabelerService) -> Section:
    u = Section()
    table = gr.Dataframe(headers=["user", "role", "status"], label="Users", interactive=False,
                         elem_id="rl-admin-users")
    gr.Markdown("#### Create a user")
    with gr.Row():
        new_name = gr.Textbox(label="User name", elem_id="rl-admin-new-name")
        new_password = gr.Textbox(label="Initial password (8+ characters)", type="password",
                                  elem_id="rl-admin-new-password")
        new_role = gr.Radio(list(ROLES), value="annotator", label="Role",
                            elem_id="rl-admin-new-role")
    with gr.Row():
        create = gr.Button("Create user", variant="primary", scale=0,
                           elem_id="rl-admin-create-user")
        create_message = _message("rl-admin-create-message")
    gr.Markdown("#### Change a user")
    with gr.Row():
        who = gr.Dropdown([], label="User", allow_custom_value=True, elem_id="rl-admin-who")
        password = gr.Textbox(label="New password", type="password",
                              elem_id="rl-admin-reset-password")
        role = gr.Radio(list(ROLES), value="annotator", label="Role", elem_id="rl-admin-role")
    with gr.Row():
        disable = gr.Button("Disable", variant="stop", scale=0, elem_id="rl-admin-disable")
        enable = gr.Button("Enable", scale=0, elem_id="rl-admin-enable")
        reset = gr.Button("Reset password", scale=0, elem_id="rl-admin-reset")
        set_role = gr.Button("Set role", scale=0, elem_id="rl-admin-set-role")
        change_message = _message("rl-admin-user-message")

    def refreshed(name):
        return (admin.users_table(svc, name),
                gr.Dropdown(choices=[row[0] for row in admin.users_table(svc, name)]))

    @guard
    def create_user(name, password, role, request: gr.Request):
        me = username(request)
        message = admin.create_user(svc, me, name=name, password=password, role=role)
        cleared = "" if message.startswith("Created") else gr.skip()
        return (_said(message), *refreshed(me), cleared, cleared)

    def change(action):
        @guard
        def run(target, password, role, request: gr.Request):
            me = username(request)
            message = action(me, target, password, role)
            return (_said(message), *refreshed(me), "" if message.startswith("New password")
                    else gr.skip())
        return run

    create.click(create_user, [new_name, new_password, new_role],
                 [create_message, table, who, new_name, new_password],
                 api_visibility="undocumented")
    outputs = [change_message, table, who, password]
    for button, action in (
            (disable, lambda me, t, p, r: admin.set_user_disabled(svc, me, name=t,
                                                                  disabled=True)),
            (enable, lambda me, t, p, r: admin.set_user_disabled(svc, me, name=t,
                                                                 disabled=False)),
            (reset, lambda me, t, p, r: admin.reset_password(svc, me, name=t, password=p)),
            (set_role, lambda me, t, p, r: admin.set_user_role(svc, me, name=t, role=r))):
        button.click(change(action), [who, password, role], outputs,
                     api_visibility="undocumented")

    u.load = refreshed
    u.load_outputs = [table, who]
    return u


# --- project settings ---------------------------------------------------------------------------

def _project_section(svc: LabelerService) -> Section:
    p = Section()
    gr.Markdown("#### Guidelines (markdown, shown to annotators)")
    with gr.Row():
        guidelines = gr.Textbox(label="Guidelines", lines=12, max_lines=30,
                                elem_id="rl-admin-guidelines")
        with gr.Column():
            gr.Markdown("Preview")
            preview = gr.HTML(elem_id="rl-admin-guidelines-preview")
    with gr.Row():
        save = gr.Button("Save guidelines", variant="primary", scale=0,
                         elem_id="rl-admin-save-guidelines")
        guidelines_message = _message("rl-admin-guidelines-message")
    gr.Markdown("#### Ranking suggestions from a reward model")
    with gr.Row():
        suggestions = gr.Checkbox(label="Pre-fill rankings from reward-model scores",
                                  elem_id="rl-admin-suggestions")
        suggestion_scorer = gr.Textbox(label="Scorer (empty: each item's most recent one)",
                                       placeholder="bt:models/reward-1",
                                       elem_id="rl-admin-suggestion-scorer")
        save_suggestions = gr.Button("Save suggestions", scale=0,
                                     elem_id="rl-admin-save-suggestions")
        suggestions_message = _message("rl-admin-suggestions-message")
    gr.Markdown("#### Overlap: annotators per item")
    with gr.Row():
        overlap = gr.Number(precision=0, minimum=1, maximum=100, label="Annotators who rank "
                            "each item (2 or more for agreement and alpha)",
                            elem_id="rl-admin-overlap", scale=0, min_width=260)
        save_overlap = gr.Button("Save overlap", scale=0, elem_id="rl-admin-save-overlap")
        overlap_message = _message("rl-admin-overlap-message")
    gr.Markdown("#### Queue order")
    with gr.Row():
        current = gr.Textbox(label="Current order", interactive=False,
                             elem_id="rl-admin-queue-current")
        order = gr.Radio(list(QUEUE_ORDERS), value="fifo", label="Order",
                         elem_id="rl-admin-queue-order")
        scorers = gr.Textbox(label="Scorers for uncertain (comma-separated)",
                             placeholder="bt:models/reward-1", elem_id="rl-admin-queue-scorers")
        queue_seed = gr.Number(value=0, precision=0, label="Seed for random",
                               elem_id="rl-admin-queue-seed")
    with gr.Row():
        apply_order = gr.Button("Apply order", scale=0, elem_id="rl-admin-apply-order")
        order_message = _message("rl-admin-queue-message")

    @guard
    def show_preview(text, request: gr.Request):
        return admin.preview_guidelines(svc, username(request), text=text)

    guidelines.change(show_preview, guidelines, preview, api_visibility="undocumented",
                      show_progress="hidden")

    @guard
    def save_text(text, request: gr.Request):
        return _said(admin.save_guidelines(svc, username(request), text=text))

    @guard
    def save_suggest(enabled, scorer, request: gr.Request):
        return _said(admin.save_suggestions(svc, username(request), enabled=enabled,
                                            scorer=scorer))

    @guard
    def apply(order, scorers, seed, request: gr.Request):
        name = username(request)
        message = admin.set_queue_order(svc, name, order=order, scorers=scorers, seed=seed)
        return _said(message), admin.queue_order(svc, name)

    save.click(save_text, guidelines, guidelines_message, api_visibility="undocumented")

    @guard
    def apply_overlap(value, request: gr.Request):
        return _said(admin.set_overlap(svc, username(request), overlap=value)), svc.policy.overlap

    save_overlap.click(apply_overlap, overlap, [overlap_message, overlap],
                       api_visibility="undocumented")
    save_suggestions.click(save_suggest, [suggestions, suggestion_scorer], suggestions_message,
                           api_visibility="undocumented")
    apply_order.click(apply, [order, scorers, queue_seed], [order_message, current],
                      api_visibility="undocumented")

    def load(name):
        settings = admin.project_settings(svc, name)
        from data.queue_order import get_queue_order

        stored = get_queue_order(svc.db())
        return (settings.guidelines, render_untrusted_markdown(settings.guidelines),
                settings.suggestions, settings.suggestion_scorer or "",
                admin.queue_order(svc, name), stored.order, ", ".join(stored.scorers),
                stored.seed, svc.policy.overlap)

    p.load = load
    p.load_outputs = [guidelines, preview, suggestions, suggestion_scorer, current, order,
                      scorers, queue_seed, overlap]
    return p
