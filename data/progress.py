"""Progress of a generation job, for the screen annotators see while the first candidates are
being generated: prompts done of how many, and an estimate of the time left.

The generation recipe records every prompt of its source before it samples (``prompts``) and
refreshes its run's ``updated_at`` when it starts; each prompt's candidates are stored
together, with one timestamp. So, for the job:

- its run is the non-human run refreshed most recently since the job started (None while the
  model is still loading);
- prompts done are the prompts with all k candidates in that run;
- the total is the prompts stored up to the run's start that are not gold-only; on the store
  the first run fills (the case this serves) those are exactly the job's prompts;
- the rate is measured over this job's own stored prompts (from the first to the last one,
  so the model's loading time is not counted) once two are stored; with one stored, from the
  job's start to it (loading included, so the first estimate errs long).

Training progress comes from the recipe's ``metrics.jsonl`` (``training_progress``): each
logged line has its step, ``train/epoch`` (steps done over steps per epoch) and the loss, so
step of total follows from the epochs the job was started with.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

GENERATE_KIND = "generate"


@dataclass(frozen=True)
class GenerationProgress:
    job_id: int
    run_id: int | None
    """None until the job has loaded its model and recorded its run."""
    prompts_done: int
    prompts_total: int | None
    started_at: float
    prompts_per_second: float | None
    """None until this job has stored two prompts."""
    seconds_left: float | None

    def line(self, now: float | None = None) -> str:
        """Plain words for the waiting screen and the console."""
        if self.run_id is None or self.prompts_total is None:
            elapsed = (time.time() if now is None else now) - self.started_at
            return ("Loading the model to generate the first candidates… "
                    f"({_duration(max(0.0, elapsed))} so far)")
        text = f"{self.prompts_done} of {self.prompts_total} prompts ready"
        if not self.prompts_done and self.prompts_total:
            # The run is recorded before the model loads: until the first prompt is stored
            # the job loads it and samples, and the time it has taken is what there is to say.
            elapsed = (time.time() if now is None else now) - self.started_at
            return (text + " — loading the model and writing the first candidates "
                    f"({_duration(max(0.0, elapsed))} so far; an estimate follows the first "
                    "prompt)")
        if self.seconds_left is not None and self.prompts_done < self.prompts_total:
            text += f", about {_duration(self.seconds_left)} left"
        return text


def duration(seconds: float) -> str:
    """"40 s", "12 min", "1.5 h"."""
    return _duration(seconds)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def generation_progress(db: sqlite_utils.Database, job_id: int | None = None
                        ) -> GenerationProgress | None:
    """Progress of generation job ``job_id``, or of the newest running one; None when there is
    no such job."""
    if job_id is None:
        row = db.execute("SELECT id, started_at FROM jobs WHERE kind = ? AND status = 'running' "
                         "ORDER BY id DESC LIMIT 1", [GENERATE_KIND]).fetchone()
    else:
        row = db.execute("SELECT id, started_at FROM jobs WHERE id = ? AND kind = ?",
                         [job_id, GENERATE_KIND]).fetchone()
    if row is None:
        return None
    job_id, started_at = row
    run = db.execute(
        "SELECT id, k, updated_at FROM generation_runs WHERE updated_at >= ? "
        "AND backend NOT IN ('human', 'gold') ORDER BY updated_at DESC LIMIT 1",
        [started_at]).fetchone()
    if run is None:
        return GenerationProgress(job_id, None, 0, None, started_at, None, None)
    run_id, k, run_started = run
    stored = [t for (t,) in db.execute(
        "SELECT MIN(created_at) FROM candidates WHERE run_id = ? GROUP BY prompt_id "
        "HAVING COUNT(*) >= ? ORDER BY 1", [run_id, k])]
    total = db.execute(
        "SELECT COUNT(*) FROM prompts p WHERE (p.created_at <= ? AND NOT EXISTS "
        "(SELECT 1 FROM items i WHERE i.prompt_id = p.id AND i.is_gold = 1)) "
        "OR EXISTS (SELECT 1 FROM candidates c WHERE c.prompt_id = p.id AND c.run_id = ?)",
        [run_started, run_id]).fetchone()[0]
    mine = [t for t in stored if t >= started_at]
    rate = None
    if len(mine) >= 2 and mine[-1] > mine[0]:
        rate = (len(mine) - 1) / (mine[-1] - mine[0])
    elif len(mine) == 1 and mine[0] > started_at:
        rate = 1 / (mine[0] - started_at)
    left = None if rate is None else max(0, total - len(stored)) / rate
    return GenerationProgress(job_id, run_id, len(stored), total, started_at, rate, left)



@dataclass(frozen=True)
class TrainingProgress:
    step: int
    """Optimizer steps done (0 before the first logged line)."""
    total: int | None
    """Steps the run will take; None until the first line is logged."""
    loss: float | None
    """The training loss of the last logged step."""
    seconds_left: float | None

    def line(self) -> str:
        if not self.step:
            return "Loading the model and the pairs…"
        text = f"step {self.step}" + (f" of {self.total}" if self.total else "")
        if self.loss is not None:
            text += f", loss {self.loss:.4f}"
        if self.seconds_left is not None and self.total and self.step < self.total:
            text += f", about {_duration(self.seconds_left)} left"
        return text


def training_progress(metrics_path: str | os.PathLike, *, epochs: float, started_at: float,
                      now: float | None = None) -> TrainingProgress:
    """How far a training job is, from its ``metrics.jsonl``. The time left extrapolates the
    time since the job started (model loading included) over the steps done."""
    now = time.time() if now is None else now
    step, epoch, loss, logged_at = 0, None, None, None
    try:
        with open(metrics_path, "rb") as f:
            lines = f.read().decode("utf-8", errors="replace").splitlines()
        logged_at = Path(metrics_path).stat().st_mtime
    except OSError:
        lines = []
    for raw in lines:
        try:
            row = json.loads(raw)
        except ValueError:  # a line being written right now
            continue
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            continue
        if "train/epoch" in row:
            step, epoch = row["step"], row["train/epoch"]
            loss = row.get("train/loss", loss)
    total = None
    if step and epoch:
        total = max(step, round(epochs * step / epoch))
    left = None
    if step and total and logged_at is not None and logged_at > started_at:
        left = (total - step) * (logged_at - started_at) / step - max(0.0, now - logged_at)
        left = max(1.0, left)
    return TrainingProgress(step, total, loss if isinstance(loss, (int, float)) else None,
                            left)
