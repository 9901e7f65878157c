"""What the Admin tab's controls do, as plain functions of the service and the admin's name.

Like ``labeler/handlers.py``: no Gradio here, every check and refusal is testable against a
real SQLite file, and each function first checks that the user is an admin.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from data import agreement, labeling, store
from labeler.handlers import GENERATE_KIND, LabelerService, _as_bool, _as_int
from labeler.jobs import JobError, JobRunner, confine_output


@dataclass(frozen=True)
class DatasetStatus:
    counts: dict[str, int]
    annotators: list[list]
    """Rows: annotator, role, ranked, skipped, all bad, demonstrations, gold accuracy."""
    alpha: float | None
    agreement_pairs: list[list]
    """Rows: annotator, annotator, agreement, candidate pairs compared."""
    labels_over_time: list[tuple[float, int]]
    """(submission time, cumulative submissions)."""

    def summary_md(self) -> str:
        c = self.counts
        alpha = "n/a (needs overlap ≥ 2)" if self.alpha is None else f"{self.alpha:.3f}"
        return (
            f"**{c.get('prompts', 0)}** prompts · **{c.get('candidates', 0)}** candidates · "
            f"**{c.get('items', 0)}** items · **{c.get('rankings', 0)}** rankings · "
            f"**{c.get('comparisons', 0)}** pairwise comparisons\n\n"
            f"Krippendorff's alpha (ordinal, over items ranked by ≥ 2 annotators): **{alpha}**"
            + (f"\n\n**{c['set_aside']}** items set aside because the page cannot show them "
               "(their reason is in the items table)" if c.get("set_aside") else "")
        )


def dataset_status(svc: LabelerService, username: str) -> DatasetStatus:
    svc.require_admin(username)
    db = svc.db()
    labeling.sync_items(db)
    counts = store.counts(db)
    counts["items"] = db["items"].count
    counts["set_aside"] = len(labeling.set_aside_items(db))
    rows = labeling.rankings_for_agreement(db)
    regular = [r for r in rows if not r["is_gold"]]
    gold = agreement.gold_accuracy([r for r in rows if r["is_gold"]])
    annotators = []
    for row in labeling.per_annotator_counts(db):
        accuracy = agreement.ratio(gold.get(row["annotator"], (0, 0)))
        annotators.append([row["annotator"], row["role"], row["ranked"] or 0,
                           row["skipped"] or 0, row["all_bad"] or 0, row["demonstrations"] or 0,
                           "" if accuracy is None else f"{accuracy:.0%}"])
    pairs = [[a, b, f"{agree / total:.0%}", total]
             for (a, b), (agree, total) in sorted(agreement.pairwise_agreement(regular).items())]
    times = labeling.submission_times(db)
    return DatasetStatus(counts, annotators, agreement.krippendorff_alpha_ordinal(regular), pairs,
                         [(t, i + 1) for i, t in enumerate(times)])


def start_generation(svc: LabelerService, username: str, *, prompts: str = "bundled",
                     k: int = 4, limit: int | None = None, backend: str = "auto",
                     model: str = "default", max_new_tokens: int = 256,
                     tensor_parallel_size: int = 1, data_parallel_size: int = 1) -> str:
    user = svc.require_admin(username)
    k = _as_int("k", k)
    if k is None or not 1 <= k <= labeling.MAX_CANDIDATES:
        return (f"Not started: k is the number of candidates per prompt, 1 to "
                f"{labeling.MAX_CANDIDATES} (the page shows at most that many).")
    if model in (None, "", "default"):
        # The loop records each new policy: the app's next candidates come from the newest.
        model = store.current_policy(svc.db()) or "default"
    args = ["generate", "--prompts", prompts or "bundled", "--k", str(int(k)),
            "--backend", backend, "--model", model,
            "--max-new-tokens", str(int(max_new_tokens)), "--no-progress"]
    if limit:
        args += ["--limit", str(int(limit))]
    for flag, size in (("--tensor-parallel-size", tensor_parallel_size),
                       ("--data-parallel-size", data_parallel_size)):
        if size and int(size) > 1:
            args += [flag, str(int(size))]
    return _start(svc, GENERATE_KIND, args, user)


def _start(svc: LabelerService, kind: str, args: list[str], user: labeling.User) -> str:
    try:
        job = svc.jobs.start(kind, args, started_by=user.name)
    except JobError as exc:
        return f"Not started: {exc}."
    return f"Started job {job.id}: rankloop {' '.join(job.argv)}"


def start_reward_training(svc: LabelerService, username: str, *, output: str,
                          model: str = "default", epochs: int = 1, agreed_only: bool = False,
                          lora_r: int = 0) -> str:
    """`rankloop train reward` on the app's ranked pairs, as a background job."""
    user = svc.require_admin(username)
    if not isinstance(output, str) or not output.strip():
        return "Not started: give an output folder for the reward model."
    try:
        folder = confine_output(svc.db_path, output)
    except JobError as exc:
        return f"Not started: {exc}."
    epochs, lora_r = _as_int("epochs", epochs), _as_int("the LoRA rank", lora_r)
    args = ["train", "reward", "--output", str(folder), "--model", model or "default",
            "--epochs", str(max(1, epochs or 1)), "--no-progress"]
    if _as_bool("agreed only", agreed_only):
        args.append("--agreed-only")
    if lora_r:
        args += ["--lora-r", str(lora_r)]
    return _start(svc, "train-reward", args, user)


def start_scoring(svc: LabelerService, username: str, *, scorer: str) -> str:
    """`rankloop score` of every candidate with a reward model, as a background job."""
    user = svc.require_admin(username)
    if not isinstance(scorer, str) or ":" not in scorer:
        return "Not started: the scorer is bt:FOLDER or armorm:FOLDER."
    return _start(svc, "score", ["score", "--scorer", scorer.strip()], user)


def jobs_table(svc: LabelerService, username: str) -> list[list]:
    svc.require_admin(username)
    now = time.time()
    return [[j.id, j.kind, j.status, "" if j.returncode is None else j.returncode, j.started_by,
             f"{((j.finished_at or now) - j.started_at):.0f} s", " ".join(j.argv)]
            for j in svc.jobs.list()]


def job_log(svc: LabelerService, username: str, job_id: int | None = None) -> str:
    svc.require_admin(username)
    jobs = svc.jobs.list(limit=1) if not job_id else [svc.jobs.get(int(job_id))]
    jobs = [j for j in jobs if j is not None]
    if not jobs:
        return "No jobs yet."
    job = jobs[0]
    return f"job {job.id} ({job.kind}, {job.status})\n" + JobRunner.log_tail(job)
