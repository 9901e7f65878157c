"""The Admin tab: dataset status, agreement, and the jobs that generate, train and score."""

from __future__ import annotations

from datetime import datetime

import gradio as gr

from data.labeling import MAX_CANDIDATES
from labeler import admin
from labeler.handlers import LabelerService
from labeler.ui import guard, username

MAX_K = MAX_CANDIDATES

ADMIN_CSS = ""
"""Style rules for the Admin tab's own elements; the app adds them to the page's CSS."""

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

    @guard
    def status(request: gr.Request):
        st = admin.dataset_status(svc, username(request))
        import pandas as pd

        labels = pd.DataFrame({"time": [datetime.fromtimestamp(t) for t, _ in
                                        st.labels_over_time],
                               "rankings": [n for _, n in st.labels_over_time]})
        agree = pd.DataFrame({"pair": [f"{a} / {b}" for a, b, _, _ in st.agreement_pairs],
                              "agreement": [float(p.rstrip("%")) for _, _, p, _ in
                                            st.agreement_pairs]})
        return st.summary_md(), labels, agree, st.annotators, st.agreement_pairs

    @guard
    def start_job(prompts, model, backend, k, limit, max_new_tokens, data_parallel_size,
                  tensor_parallel_size, request: gr.Request):
        return admin.start_generation(
            svc, username(request), prompts=prompts, k=k or 4, limit=limit, backend=backend,
            model=model, max_new_tokens=max_new_tokens or 256,
            data_parallel_size=data_parallel_size or 1,
            tensor_parallel_size=tensor_parallel_size or 1)

    @guard
    def train_job(output, model, epochs, lora_r, agreed, request: gr.Request):
        return admin.start_reward_training(svc, username(request), output=output,
                                              model=model, epochs=epochs, lora_r=lora_r,
                                              agreed_only=agreed)

    @guard
    def score_job(scorer_spec, request: gr.Request):
        return admin.start_scoring(svc, username(request), scorer=scorer_spec)

    @guard
    def watch(job_id, request: gr.Request):
        name = username(request)
        return admin.jobs_table(svc, name), admin.job_log(svc, name, job_id)

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
