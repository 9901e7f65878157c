"""Background jobs: `rankloop` CLI subprocesses started from the app, tracked in SQLite.

The app process never loads a model: generation and training run as separate processes whose
output goes to a log file next to the database; a watcher thread records how each one ended.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from data import store

RUNNING, SUCCEEDED, FAILED, STOPPED, LOST = "running", "succeeded", "failed", "stopped", "lost"
INTERRUPTED = "interrupted"
"""Stopped because the app itself stopped (a job an admin stops is STOPPED): the app's own
first generation resumes after an interruption, never after an admin's stop."""
MAX_RUNNING = 2
"""Jobs of one app running at once: each may load a model, and the machine also serves the
annotators."""


class JobError(Exception):
    """A job that cannot be started, with a message meant for the admin."""


@dataclass(frozen=True)
class Job:
    id: int
    pid: int | None
    kind: str
    argv: list[str]
    status: str
    returncode: int | None
    started_by: str
    started_at: float
    finished_at: float | None
    log_path: str


def jobs_dir(db_path: str) -> Path:
    path = Path(db_path).resolve()
    return path.parent / f"{path.name}.jobs"


def workspace_dir(db_path: str) -> Path:
    """The one folder that jobs started from the app may write into, next to the database."""
    path = Path(db_path).resolve()
    return path.parent / f"{path.name}.workspace"


def confine_output(db_path: str, output: str) -> Path:
    """``output`` as an absolute path inside the workspace; refuses ``..``, absolute paths
    elsewhere and links that lead out of it."""
    if not isinstance(output, str) or not output.strip() or "\x00" in output:
        raise JobError("give an output folder inside the workspace")
    workspace = workspace_dir(db_path)
    raw = Path(output.strip())
    if ".." in raw.parts:
        raise JobError("an output folder cannot contain '..'")
    target = raw if raw.is_absolute() else workspace / raw
    resolved = target.resolve()
    if resolved == workspace or workspace not in resolved.parents:
        raise JobError(f"output folders go inside the workspace {workspace}")
    return resolved


class JobRunner:
    """Starts CLI jobs for one database and watches them until they end."""

    def __init__(self, db_path: str, max_running: int = MAX_RUNNING):
        self.db_path = db_path
        self.max_running = max_running
        self._watchers: dict[int, threading.Thread] = {}
        """The threads recording how this runner's jobs end, by job id."""

    def start(self, kind: str, args: list[str], started_by: str) -> Job:
        """Runs ``rankloop <args> --db <db>`` in the background; refuses (JobError) while
        ``max_running`` jobs run."""
        argv = [*args, "--db", self.db_path]
        db = store.connect(self.db_path)
        try:
            with store.transaction(db):  # count and insert together: two clicks start one
                running = [r for r in db.query("SELECT * FROM jobs WHERE status = ?",
                                               [RUNNING])
                           if self._from_row(r).status == RUNNING]
                if len(running) >= self.max_running:
                    raise JobError(f"{len(running)} jobs are running, the most at once; "
                                   "start this one when one has finished")
                job_id = store.add_job(db, kind, argv, started_by)
            log_path = jobs_dir(self.db_path) / f"job-{job_id}-{kind}.log"
            # Logs may quote prompts and paths: readable by the owner only.
            log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                           "wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "launch.cli", *argv], stdout=log,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    start_new_session=True,  # a Ctrl-C on the app does not kill the job midway
                )
            store.set_job_process(db, job_id, process.pid, str(log_path))
        finally:
            db.close()
        watcher = threading.Thread(target=self._watch, args=(job_id, process), daemon=True,
                                   name=f"job-{job_id}")
        self._watchers[job_id] = watcher
        watcher.start()
        return self.get(job_id)

    def _watch(self, job_id: int, process: subprocess.Popen) -> None:
        returncode = process.wait()
        self._finish(job_id, SUCCEEDED if returncode == 0 else FAILED, returncode)
        self._watchers.pop(job_id, None)

    def _finish(self, job_id: int, status: str, returncode: int | None) -> None:
        db = store.connect(self.db_path)
        try:
            store.finish_job(db, job_id, status, returncode)
        finally:
            db.close()

    def stop_all(self, grace_s: float = 10.0) -> None:
        """Stops the running jobs as the app stops (SIGTERM to each job's process group, then
        SIGKILL); they are recorded as interrupted, not stopped by an admin.

        Generation resumes where it stopped when started again with the same settings."""
        jobs = self.running()
        for job in jobs:
            self._finish(job.id, INTERRUPTED, None)
            _signal_group(job.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for job in jobs:
            while _alive(job.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(job.pid):
                _signal_group(job.pid, signal.SIGKILL)

    def stop(self, job_id: int, grace_s: float = 10.0) -> Job:
        """Stops one running job: SIGTERM to its process group, SIGKILL after ``grace_s``.
        Its status becomes "stopped" (a job that ended meanwhile keeps its own status)."""
        job = self.get(job_id)
        if job is None:
            raise JobError(f"there is no job {job_id}")
        if job.status != RUNNING:
            raise JobError(f"job {job_id} is not running (it is {job.status})")
        self._finish(job.id, STOPPED, None)
        _signal_group(job.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while _alive(job.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(job.pid):
            _signal_group(job.pid, signal.SIGKILL)
        return self.get(job_id)

    def get(self, job_id: int) -> Job | None:
        jobs = [j for j in self.list() if j.id == job_id]
        return jobs[0] if jobs else None

    def list(self, limit: int = 50) -> list[Job]:
        rows = self._rows(limit)
        # A job of this runner whose process just ended is being recorded by its watcher:
        # wait for that instead of calling it lost.
        ended = [self._watchers[r["id"]] for r in rows if r["status"] == RUNNING
                 and r["id"] in self._watchers and not _alive(r["pid"])]
        if ended:
            for watcher in ended:
                watcher.join(timeout=5.0)
            rows = self._rows(limit)
        return [self._from_row(r) for r in rows]

    def _rows(self, limit: int) -> list[dict]:
        db = store.connect(self.db_path)
        try:
            return list(db.query("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", [limit]))
        finally:
            db.close()

    def running(self, kind: str | None = None) -> list[Job]:
        return [j for j in self.list() if j.status == RUNNING and kind in (None, j.kind)]

    @staticmethod
    def _from_row(row: dict) -> Job:
        status = row["status"]
        # A job whose app was restarted has no watcher: trust the process table instead.
        if status == RUNNING and row["pid"] and not _alive(row["pid"]):
            status = LOST
        return Job(row["id"], row["pid"], row["kind"], json.loads(row["argv"]), status, row["returncode"],
                   row["started_by"] or "", row["started_at"], row["finished_at"],
                   row["log_path"] or "")

    @staticmethod
    def log_tail(job: Job, max_bytes: int = 6000, max_lines: int = 200) -> str:
        """The end of a job's log as plain text (see ``clean_log`` and ``plain_log``)."""
        if not job.log_path or not os.path.exists(job.log_path):
            return ""
        with open(job.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            start = max(0, f.tell() - max_bytes)
            f.seek(start)
            raw = f.read()
        if start:  # the first line was cut: drop it rather than show half a line
            raw = raw.split(b"\n", 1)[1] if b"\n" in raw else raw
        lines = plain_log(clean_log(raw.decode("utf-8", errors="replace"))).split("\n")
        return "\n".join(lines[-max_lines:])


# OSC (ESC ] ... BEL or ESC \), CSI (ESC [ params final byte), then any other two-byte escape.
_OSC = re.compile(r"\x1b\][^\x07\x1b\n]*(?:\x07|\x1b\\|(?=\n)|$)")
_CSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x9b[0-?]*[ -/]*[@-~]")
_ESC = re.compile(r"\x1b[@-Z\\-_]?")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_log(text: str) -> str:
    """A terminal log as the plain text a terminal would end up showing.

    Progress bars redraw their line with carriage returns and colour it with escape codes:
    each line keeps only its last state (the text after its last ``\\r``, a trailing ``\\r``
    does not blank it), CSI sequences (colours, cursor moves, line erases) and OSC sequences
    (window titles, hyperlinks) are removed, and so are other control characters but tabs.
    ``\\r\\n`` line ends count as one line end."""
    text = _OSC.sub("", text.replace("\r\n", "\n"))
    text = _ESC.sub("", _CSI.sub("", text))
    lines = []
    for line in text.split("\n"):
        states = [s for s in line.split("\r") if s]
        lines.append(_CONTROL.sub("", states[-1] if states else ""))
    return "\n".join(lines)


_LOAD_REPORT = re.compile(r"^(\S+) LOAD REPORT from: (.*)$")
_HEAD_KEYS = re.compile(r"^(score|v_head|classifier|lm_head)\.(weight|bias)$")
NEW_HEAD = ("{model} from {source}: a new reward head ({keys}) was initialised, as expected "
            "when a reward model starts from a base model; training fits it.")


def plain_log(text: str) -> str:
    """Expected messages said in plain words: the transformers load report that only lists a
    newly initialised reward head ("score.weight | MISSING", which reads like an error) becomes
    one sentence; any other load report (unexpected or mismatched weights) stays as it is."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _LOAD_REPORT.match(lines[i].strip())
        if not match:
            out.append(lines[i])
            i += 1
            continue
        end, statuses, in_notes = i + 1, [], False
        while end < len(lines):
            line = lines[end].strip()
            if line == "Notes:":
                in_notes = True
            elif in_notes and not line.startswith("- "):
                break
            elif not in_notes and line and "|" not in line and set(line) - set("-+| "):
                break
            elif "|" in line and not in_notes:
                cells = [c.strip() for c in line.split("|")]
                if len(cells) >= 2 and cells[1] and cells[0] != "Key":
                    statuses.append((cells[0], cells[1]))
            end += 1
        if statuses and all(s == "MISSING" and _HEAD_KEYS.match(k) for k, s in statuses):
            out.append(NEW_HEAD.format(model=match.group(1), source=match.group(2),
                                       keys=", ".join(k for k, _ in statuses)))
            i = end
        else:
            out.extend(lines[i:end])
            i = end
    return "\n".join(out)


def _signal_group(pid: int | None, sig: int) -> None:
    if not pid:
        return
    try:
        os.killpg(pid, sig)  # jobs start their own session, so pid == process group id
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A finished child of this process stays a zombie until reaped; it is not running.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True
