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
  so the model's loading time is not counted), once two are stored.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def line(self) -> str:
        """Plain words for the waiting screen."""
        if self.run_id is None or self.prompts_total is None:
            return "Loading the model to generate the first candidates…"
        text = f"{self.prompts_done} of {self.prompts_total} prompts ready"
        if self.seconds_left is not None and self.prompts_done < self.prompts_total:
            text += f", about {_duration(self.seconds_left)} left"
        return text


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
    left = None if rate is None else max(0, total - len(stored)) / rate
    return GenerationProgress(job_id, run_id, len(stored), total, started_at, rate, left)

