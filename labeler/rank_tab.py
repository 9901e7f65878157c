"""The Rank tab: one task at a time, ranked with the mouse or the keyboard."""

from __future__ import annotations

import gradio as gr

from data.labeling import MAX_CANDIDATES
from labeler import handlers
from labeler.handlers import LabelerService, TaskView
from labeler.render import candidate_title
from labeler.ui import guard, username

MAX_K = MAX_CANDIDATES  # candidate slots on the page; generation refuses a larger k

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

    @guard
    def load_task(request: gr.Request):
        return RankTab.show(handlers.current_task(svc, username(request)))

    @guard
    def poll_task(assignment_id, request: gr.Request):
        if assignment_id:  # already showing a task: leave the page alone
            return [gr.skip()] * len(tab.task_outputs)
        return RankTab.show(handlers.current_task(svc, username(request)))

    @guard
    def submit(values: dict, request: gr.Request):
        # `inputs` is a set, so Gradio passes one {component: value} dict.
        message, view = handlers.submit_ranking(
            svc, username(request), values[tab.assignment_id],
            [values[r] for r in tab.ranks], all_bad=values[tab.all_bad],
            rationale=values[tab.rationale], demonstration=values[tab.demonstration])
        return [message, *_keep_inputs_if_refused(message, view, values[tab.assignment_id])]

    @guard
    def skip(assignment_id, request: gr.Request):
        message, view = handlers.submit_ranking(svc, username(request), assignment_id, [],
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
