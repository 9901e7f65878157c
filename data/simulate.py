"""Simulated annotators: rank the app's queue by a Python scoring function plus noise.

A scoring function (``MODULE:FUNCTION``, called as ``FUNCTION(prompts, responses)`` with the
prompt conversations and the response texts, returning one float per response: the same
signature as PPO's ``--reward-fn``) stands for what people prefer. Each simulated annotator
fetches items from the labeling queue and submits rankings through the same two functions the
app's handlers call (``labeling.next_assignment`` and ``labeling.submit_assignment``), so the
queue's overlap, ordering and append-only vote log apply to them exactly as to people.

Noise: an annotator ranks the shown candidates by ``score / noise + Gumbel(0, 1)``. Sorting
Gumbel-perturbed utilities draws a ranking from the Plackett-Luce model, whose pairwise
marginals are Bradley-Terry: P(a ranked above b) = σ((s_a − s_b) / noise). ``noise = 0``
ranks by the score alone (equal scores tie). Each annotator draws from their own seeded
random stream, so several annotators on one item disagree as often as the noise implies and
agreement statistics (pairwise, Krippendorff's alpha) mean something.

Simulated annotators are ordinary ``annotator`` users named ``sim-1``, ``sim-2``, ...; their
stored password hash is not a scrypt hash, so nobody can log in as one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import sqlite_utils

from data import labeling
from data.errors import ConfigError
from data.rankings import validate_submission
from data.score_functions import ScoreFn, load_score_function
from data.votes import RankingRecord
SIMULATED_PREFIX = "simulated:"
_NO_LOGIN = "!simulated-annotator"  # not a scrypt hash: verify_password refuses every password


class SimulationError(ConfigError):
    """A simulation that cannot run, with a message meant for the user."""


def load_score_fn(spec: str) -> ScoreFn:
    """``MODULE:FUNCTION`` (with or without the ``simulated:`` prefix), importable from the
    working directory, wrapped to check it returns one finite float per response."""
    spec = spec[len(SIMULATED_PREFIX):] if spec.startswith(SIMULATED_PREFIX) else spec
    return load_score_function(spec, what="scoring function", noun="scores",
                               error=SimulationError)


@dataclass(frozen=True)
class SimulationConfig:
    annotators: int = 3
    """Simulated annotators (``sim-1`` .. ``sim-N``), created on first use."""
    noise: float = 1.0
    """Temperature of the Gumbel noise on the scores; 0 ranks by the score alone."""
    overlap: int = 2
    """Distinct annotators who rank each item (the queue's overlap for this simulation)."""
    limit: int | None = None
    """Stop after this many submissions; None ranks until the queue is empty."""
    seed: int = 0
    timeout_s: float = 30 * 60
    """Assignment timeout, as in the app."""

    def __post_init__(self) -> None:
        if self.annotators < 1:
            raise SimulationError("at least one simulated annotator is needed")
        if not 1 <= self.overlap <= self.annotators:
            raise SimulationError(f"overlap must be between 1 and the {self.annotators} "
                                  f"annotators, got {self.overlap}")
        if self.noise < 0 or not math.isfinite(self.noise):
            raise SimulationError(f"noise must be a finite number >= 0, got {self.noise}")
        if self.limit is not None and self.limit < 1:
            raise SimulationError("limit must be at least 1")


def noisy_ranks(scores: Sequence[float], noise: float, rng: random.Random) -> tuple[int, ...]:
    """Ranks (1 = best, equal = tie) of one annotator's judgment of ``scores``: the order of
    ``score / noise + Gumbel`` draws, a Plackett-Luce sample; ``noise = 0``: of the scores."""
    if noise > 0:
        utility = [s / noise - math.log(-math.log(1.0 - rng.random())) for s in scores]
    else:
        utility = list(scores)
    # Competition ranking: equal utilities share the better rank.
    return tuple(1 + sum(other > mine for other in utility) for mine in utility)


def planted_rankings(rng, temperatures: Sequence[float], *, items: int, k: int, overlap: int,
                     gold_items: int) -> list[RankingRecord]:
    """Votes, in memory, of annotators ``annotator-0``, ``annotator-1``, ... at planted
    Plackett-Luce temperatures (``temperature * strength + Gumbel``; 0 ranks at random), for
    checking reliability estimates. Each of ``items`` items has ``k`` candidates of normal
    strengths and is ranked by ``overlap`` annotators; the first ``gold_items`` are gold
    (ranked by strength) and ranked by everyone. ``rng``: a ``numpy.random.Generator``."""
    import numpy as np

    def order(utility) -> list[int]:
        return [int(x) for x in 1 + np.argsort(np.argsort(-utility))]

    records = []
    for item in range(items):
        strengths = rng.normal(size=k)
        cands = [item * 10 + j for j in range(k)]
        gold = order(strengths) if item < gold_items else None
        who = (range(len(temperatures)) if gold else
               rng.choice(len(temperatures), size=overlap, replace=False))
        for a in who:
            ranks = order(temperatures[a] * strengths + rng.gumbel(size=k))
            records.append(RankingRecord(
                ranking_id=len(records) + 1, annotator=f"annotator-{a}", prompt_id=item,
                prompt=[], item_id=item, source_run=1, is_gold=gold is not None,
                gold_ranks=gold, candidate_ids=cands, candidates=[""] * k, ranks=ranks,
                has_tie=False, all_bad=False, skipped=False, rationale=None,
                demonstration_id=None, demonstration=None, shown_at=0.0, submitted_at=1.0,
                user_id=a))
    return records


@dataclass
class SimulationSummary:
    submitted: int = 0
    """Rankings stored by this call."""
    items: set[int] = field(default_factory=set)
    """Distinct items ranked."""
    per_annotator: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        who = ", ".join(f"{name} {n}" for name, n in sorted(self.per_annotator.items()))
        return (f"simulated annotators stored {self.submitted} rankings of "
                f"{len(self.items)} items ({who or 'none'})")


def simulated_users(db: sqlite_utils.Database, n: int) -> list[labeling.User]:
    users = []
    for i in range(1, n + 1):
        name = f"sim-{i}"
        user = labeling.get_user(db, name)
        if user is None:
            user = labeling.add_user(db, name, "annotator", _NO_LOGIN)
        elif user.password_hash != _NO_LOGIN:
            raise SimulationError(f"user {name!r} exists and is not a simulated annotator")
        users.append(user)
    return users


def simulate_queue(db: sqlite_utils.Database, score_fn: ScoreFn, config: SimulationConfig, *,
                   now: float | None = None) -> SimulationSummary:
    """Ranks the open items of the app's queue: the annotators take turns fetching their next
    item (``next_assignment``) and submitting a noisy ranking of it (``submit_assignment``),
    until none of them is handed an item or ``limit`` rankings are stored. Gold items are not
    served to them (gold rate 0), so gold accuracy stays a measure of people."""
    users = simulated_users(db, config.annotators)
    policy = labeling.QueuePolicy(overlap=config.overlap, timeout_s=config.timeout_s)
    streams = [random.Random(f"{config.seed}:{u.name}") for u in users]
    summary = SimulationSummary(per_annotator={u.name: 0 for u in users})
    active = list(range(len(users)))
    while active:
        still = []
        for index in active:
            if config.limit is not None and summary.submitted >= config.limit:
                return summary
            user, rng = users[index], streams[index]
            assignment = labeling.next_assignment(db, user.id, policy, now=now, rng=rng)
            if assignment is None:
                continue
            scores = score_fn([assignment.messages] * len(assignment.texts), assignment.texts)
            submission = validate_submission(assignment.candidate_ids,
                                             noisy_ranks(scores, config.noise, rng))
            stored = labeling.submit_assignment(db, assignment.id, user.id, submission, now=now)
            if stored.created:
                summary.submitted += 1
                summary.items.add(assignment.item_id)
                summary.per_annotator[user.name] += 1
            still.append(index)
        active = still
    return summary
