"""The Gradio labeling app: a Rank tab for annotators and an Admin tab for admins.

Every handler looks the user up from the login (``request.username``) and reads and writes
SQLite; nothing lives in ``gr.State``, so a refresh or reconnect resumes where the annotator was.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime

import gradio as gr

from data.labeling import MAX_CANDIDATES
from labeler import handlers, server
from labeler.server import DEFAULT_SESSION_HOURS
from labeler.handlers import BadRequest, LabelerService, PermissionDenied, TaskView
from labeler.render import candidate_title

MAX_K = MAX_CANDIDATES  # candidate slots on the page; generation refuses a larger k
log = logging.getLogger("rankloop.app")

SHORTCUTS_MD = (
    "**Keys:** `1`–`9` give the highlighted candidate that rank and move to the next · "
    "`←` `→` (or `J` `K`) move the highlight · `Enter` submit · `S` skip. "
    "Equal ranks mean a tie."
)

# Keyboard shortcuts. Gradio re-renders components, so the highlight is re-applied on each key.
KEYBOARD_JS = """
<script>
(() => {
  let cursor = 0;
  const slots = () => [...document.querySelectorAll('.rl-candidate')]
      .filter(el => el.offsetParent !== null);
  const highlight = () => {
    const all = slots();
    if (!all.length) return;
    cursor = Math.max(0, Math.min(cursor, all.length - 1));
    all.forEach((el, i) => el.classList.toggle('rl-current', i === cursor));
  };
  const typing = (el) => el && (el.tagName === 'TEXTAREA' ||
      (el.tagName === 'INPUT' && !['radio', 'checkbox'].includes(el.type)));
  document.addEventListener('keydown', (event) => {
    if (typing(event.target) || event.ctrlKey || event.metaKey || event.altKey) return;
    const all = slots();
    if (/^[1-9]$/.test(event.key) && all.length) {
      highlight();
      const option = all[cursor].querySelector(`input[type=radio][value="${event.key}"]`);
      if (option) { option.click(); cursor = Math.min(cursor + 1, all.length - 1); }
      event.preventDefault();
    } else if (['ArrowRight', 'ArrowDown', 'j', 'J'].includes(event.key)) {
      cursor += 1; event.preventDefault();
    } else if (['ArrowLeft', 'ArrowUp', 'k', 'K'].includes(event.key)) {
      cursor -= 1; event.preventDefault();
    } else if (event.key === 'Enter') {
      document.querySelector('#rl-submit')?.click(); cursor = 0; event.preventDefault();
    } else if (event.key === 's' || event.key === 'S') {
      document.querySelector('#rl-skip')?.click(); cursor = 0; event.preventDefault();
    } else { return; }
    highlight();
  });
  new MutationObserver(highlight).observe(document.documentElement,
      {childList: true, subtree: true});
})();
</script>
"""

CSS = """
.rl-candidate { border: 2px solid transparent; border-radius: 8px; }
.rl-current { border-color: var(--color-accent); }
.rl-md { overflow-wrap: anywhere; word-break: break-word; max-width: 100%; }
.rl-md pre { white-space: pre-wrap; overflow-wrap: anywhere; }
.rl-md table { display: block; overflow-x: auto; }
.rl-md blockquote { border-left: 3px solid var(--border-color-primary); margin: 0.5em 0;
                    padding-left: 0.8em; }
.rl-long:has(> details[open]) > .rl-preview { display: none; }
.rl-md summary { cursor: pointer; color: var(--color-accent); margin: 0.3em 0; }
"""


def _username(request: gr.Request) -> str:
    return getattr(request, "username", None) or ""


def _guard(fn):
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
                        _username(request) if request else "", exc)
            raise gr.Error(str(exc), print_exception=False) from None
        except gr.Error:
            raise
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise gr.Error("Something went wrong on the server; it has been logged.",
                           print_exception=False) from None
    return wrapper


# --- Rank tab -----------------------------------------------------------------------------------

class RankTab:
    """Components of the Rank tab, and the mapping from a TaskView onto them."""

    def __init__(self):
        with gr.Row():
            self.progress = gr.Markdown(elem_id="rl-progress")
            gr.Markdown("[Log out](/logout)", elem_id="rl-logout")
        gr.Markdown("#### Prompt")
        # Rendered and sanitized on the server (labeler/render.py); gr.HTML shows it as is.
        self.prompt = gr.HTML(elem_id="rl-prompt", js_on_load=None)
        self.assignment_id = gr.Number(visible=False, precision=0)
        self.slots, self.texts, self.ranks = [], [], []
        with gr.Row(equal_height=False):
            for i in range(MAX_K):
                with gr.Column(visible=False, min_width=260,
                               elem_classes=["rl-candidate"], elem_id=f"rl-cand-{i}") as slot:
                    gr.Markdown(candidate_title(i))
                    self.texts.append(gr.HTML(elem_id=f"rl-text-{i}", js_on_load=None))
                    self.ranks.append(gr.Radio(label="Rank (1 = best)", choices=[],
                                               elem_id=f"rl-rank-{i}"))
                self.slots.append(slot)
        with gr.Row():
            self.all_bad = gr.Checkbox(label="All candidates are bad", elem_id="rl-all-bad")
        self.rationale = gr.Textbox(label="Why? (optional)", lines=2, elem_id="rl-rationale")
        with gr.Accordion("Write a better answer (optional)", open=False):
            self.demonstration = gr.Textbox(
                label="Your answer is stored as a demonstration and ranked above all candidates",
                lines=6, elem_id="rl-demonstration")
        with gr.Row():
            self.submit = gr.Button("Submit", variant="primary", elem_id="rl-submit")
            self.skip = gr.Button("Skip", elem_id="rl-skip")
        self.message = gr.Markdown(elem_id="rl-message")
        gr.Markdown(SHORTCUTS_MD)
        self.poll = gr.Timer(3.0, active=False)

    @property
    def task_outputs(self) -> list:
        return [self.assignment_id, self.progress, self.prompt, *self.slots, *self.texts,
                *self.ranks, self.all_bad, self.rationale, self.demonstration, self.poll]

    @staticmethod
    def show(view: TaskView) -> list:
        k = len(view.candidates_html)  # at most MAX_K: handlers set larger items aside
        choices = [str(r) for r in range(1, k + 1)]
        return [
            view.assignment_id, view.progress_md, view.prompt_html,
            *[gr.Column(visible=i < k) for i in range(MAX_K)],
            *[view.candidates_html[i] if i < k else "" for i in range(MAX_K)],
            *[gr.Radio(choices=choices if i < k else [], value=None) for i in range(MAX_K)],
            False, "", "", gr.Timer(active=view.waiting),
        ]


def create_rank_tab(svc: LabelerService) -> RankTab:
    tab = RankTab()

    @_guard
    def load_task(request: gr.Request):
        return RankTab.show(handlers.current_task(svc, _username(request)))

    @_guard
    def poll_task(assignment_id, request: gr.Request):
        if assignment_id:  # already showing a task: leave the page alone
            return [gr.skip()] * len(tab.task_outputs)
        return RankTab.show(handlers.current_task(svc, _username(request)))

    @_guard
    def submit(values: dict, request: gr.Request):
        # `inputs` is a set, so Gradio passes one {component: value} dict.
        message, view = handlers.submit_ranking(
            svc, _username(request), values[tab.assignment_id],
            [values[r] for r in tab.ranks], all_bad=values[tab.all_bad],
            rationale=values[tab.rationale], demonstration=values[tab.demonstration])
        return [message, *_keep_inputs_if_refused(message, view, values[tab.assignment_id])]

    @_guard
    def skip(assignment_id, request: gr.Request):
        message, view = handlers.submit_ranking(svc, _username(request), assignment_id, [],
                                                skipped=True)
        return [message, *RankTab.show(view)]

    def _keep_inputs_if_refused(message: str, view: TaskView, submitted_id) -> list:
        shown = RankTab.show(view)
        if message.startswith("Not saved") and view.assignment_id == submitted_id:
            # Keep what the annotator entered so they can fix it instead of starting over.
            start = 3 + 2 * MAX_K
            shown[start:start + MAX_K] = [gr.skip()] * MAX_K
            shown[start + MAX_K:start + MAX_K + 3] = [gr.skip()] * 3
        return shown

    inputs = {tab.assignment_id, tab.all_bad, tab.rationale, tab.demonstration, *tab.ranks}
    # preprocess=False: the handlers type-check the raw values themselves, so a wrong type is
    # one clear refusal instead of a component's exception.
    tab.submit.click(submit, inputs, [tab.message, *tab.task_outputs], api_name="submit",
                     trigger_mode="once", concurrency_limit=None, preprocess=False)
    tab.skip.click(skip, [tab.assignment_id], [tab.message, *tab.task_outputs],
                   api_name="skip", trigger_mode="once", concurrency_limit=None,
                   preprocess=False)
    tab.poll.tick(poll_task, [tab.assignment_id], tab.task_outputs, api_visibility="private")
    tab.load_task = load_task
    return tab


# --- Admin tab ----------------------------------------------------------------------------------

def create_admin_tab(svc: LabelerService):
    summary = gr.Markdown()
    refresh = gr.Button("Refresh")
    with gr.Row():
        labels_plot = gr.LinePlot(x="time", y="rankings", title="Rankings over time",
                                  height=260)
        agreement_plot = gr.BarPlot(x="pair", y="agreement", title="Pairwise agreement (%)",
                                    height=260, y_lim=[0, 100])
    annotators = gr.Dataframe(
        headers=["annotator", "role", "ranked", "skipped", "all bad", "demonstrations",
                 "gold accuracy"], label="Annotators", interactive=False)
    pairs = gr.Dataframe(headers=["annotator", "annotator", "agreement", "candidate pairs"],
                         label="Agreement between annotators (items ranked by both)",
                         interactive=False)
    gr.Markdown("#### Generate candidates")
    with gr.Row():
        prompts = gr.Textbox(value="bundled", label="Prompts (bundled, file, folder or Hub id)")
        model = gr.Textbox(value="default",
                           label="Model (default: the newest policy iteration, else the "
                                 "embedded model)")
        backend = gr.Dropdown(["auto", "vllm", "transformers"], value="auto", label="Backend")
    with gr.Row():
        k = gr.Number(value=4, precision=0, minimum=1, maximum=MAX_K, label="k")
        limit = gr.Number(value=0, precision=0, minimum=0, label="Limit (0 = all prompts)")
        max_new_tokens = gr.Number(value=256, precision=0, minimum=1, label="Max new tokens")
        data_parallel = gr.Number(value=1, precision=0, minimum=1,
                                  label="Data parallel (engines, e.g. one per GPU)")
        tensor_parallel = gr.Number(value=1, precision=0, minimum=1,
                                    label="Tensor parallel (GPUs per vLLM engine)")
    start = gr.Button("Start generation job", variant="primary")
    gr.Markdown("#### Train a reward model on the rankings")
    with gr.Row():
        reward_output = gr.Textbox(label="Output folder (inside the workspace next to the "
                                         "database)", placeholder="models/reward-1")
        reward_model = gr.Textbox(value="default", label="Base model")
        reward_epochs = gr.Number(value=1, precision=0, minimum=1, label="Epochs")
        reward_lora = gr.Number(value=0, precision=0, minimum=0, label="LoRA rank (0 = full)")
        agreed_only = gr.Checkbox(label="Only pairs the annotators agree on")
    train = gr.Button("Start reward training job")
    gr.Markdown("#### Score the candidates with a reward model")
    with gr.Row():
        scorer = gr.Textbox(label="Scorer", placeholder="bt:models/reward-1 or armorm:FOLDER")
        score = gr.Button("Start scoring job")
    started = gr.Markdown()
    jobs = gr.Dataframe(headers=["id", "kind", "status", "exit", "by", "time", "command"],
                        label="Jobs", interactive=False)
    job_id = gr.Number(value=0, precision=0, minimum=0, label="Show the log of job (0 = latest)")
    log = gr.Textbox(label="Log tail", lines=14, max_lines=14, autoscroll=True)
    ticker = gr.Timer(2.0)

    @_guard
    def status(request: gr.Request):
        st = handlers.dataset_status(svc, _username(request))
        import pandas as pd

        labels = pd.DataFrame({"time": [datetime.fromtimestamp(t) for t, _ in
                                        st.labels_over_time],
                               "rankings": [n for _, n in st.labels_over_time]})
        agree = pd.DataFrame({"pair": [f"{a} / {b}" for a, b, _, _ in st.agreement_pairs],
                              "agreement": [float(p.rstrip("%")) for _, _, p, _ in
                                            st.agreement_pairs]})
        return st.summary_md(), labels, agree, st.annotators, st.agreement_pairs

    @_guard
    def start_job(prompts, model, backend, k, limit, max_new_tokens, data_parallel_size,
                  tensor_parallel_size, request: gr.Request):
        return handlers.start_generation(
            svc, _username(request), prompts=prompts, k=k or 4, limit=limit, backend=backend,
            model=model, max_new_tokens=max_new_tokens or 256,
            data_parallel_size=data_parallel_size or 1,
            tensor_parallel_size=tensor_parallel_size or 1)

    @_guard
    def train_job(output, model, epochs, lora_r, agreed, request: gr.Request):
        return handlers.start_reward_training(svc, _username(request), output=output,
                                              model=model, epochs=epochs, lora_r=lora_r,
                                              agreed_only=agreed)

    @_guard
    def score_job(scorer_spec, request: gr.Request):
        return handlers.start_scoring(svc, _username(request), scorer=scorer_spec)

    @_guard
    def watch(job_id, request: gr.Request):
        name = _username(request)
        return handlers.jobs_table(svc, name), handlers.job_log(svc, name, job_id)

    status_outputs = [summary, labels_plot, agreement_plot, annotators, pairs]
    refresh.click(status, None, status_outputs, api_visibility="undocumented")
    start.click(start_job, [prompts, model, backend, k, limit, max_new_tokens,
                            data_parallel, tensor_parallel], started,
                api_visibility="undocumented")
    train.click(train_job, [reward_output, reward_model, reward_epochs, reward_lora,
                            agreed_only], started, api_visibility="undocumented")
    score.click(score_job, [scorer], started, api_visibility="undocumented")
    ticker.tick(watch, [job_id], [jobs, log], api_visibility="undocumented")
    return status, status_outputs


# --- the app ------------------------------------------------------------------------------------

def build_app(svc: LabelerService) -> gr.Blocks:
    with gr.Blocks(title="RankLoop") as demo:
        gr.Markdown("## RankLoop — rank the candidate responses")
        with gr.Tabs():
            with gr.Tab("Rank", id="rank"):
                rank = create_rank_tab(svc)
            with gr.Tab("Admin", id="admin", visible=False) as admin_tab:
                admin_status, admin_outputs = create_admin_tab(svc)

        @_guard
        def on_load(request: gr.Request):
            user = svc.user(_username(request))
            task = rank.load_task(request)
            admin = admin_status(request) if user.is_admin else [gr.skip()] * len(admin_outputs)
            return [gr.Tab(visible=user.is_admin), *task, *admin]

        demo.load(on_load, None, [admin_tab, *rank.task_outputs, *admin_outputs],
                  api_name="load_task")
    return demo


def serve(svc: LabelerService, *, host: str = "127.0.0.1", port: int = 7860,
          block: bool = True, session_hours: float = DEFAULT_SESSION_HOURS,
          ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
          limiter=None):
    """Serves the app (see labeler/server.py for sessions, login limits and headers)."""
    demo = build_app(svc)
    demo.queue(default_concurrency_limit=16)
    return server.run(
        svc, demo, host=host, port=port, block=block, session_ttl_s=session_hours * 3600,
        head=KEYBOARD_JS, css=CSS,
        auth_message="RankLoop: log in with the account an admin created for you.",
        ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, limiter=limiter)
