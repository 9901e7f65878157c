"""The order in which the labeling queue serves items, chosen per project (database) by an admin.

- ``fifo``: oldest item first (the default);
- ``random``: a fixed pseudo-random permutation of the items (seeded, so a restart serves the
  same order and tests can check it);
- ``uncertain``: items the reward model is least sure about first (active selection). Each
  item's uncertainty is computed from stored ``model_scores`` of its candidates and kept in
  ``item_uncertainty`` together with the exact scores it was computed from:
  - one scorer: ``gap`` = 1 − tanh(g / 2), where g is the smallest score gap between two of
    the item's candidates. tanh(g / 2) = |2σ(g) − 1| is how sure a Bradley-Terry model is of
    that pair's order, so 1 = a coin flip, 0 = certain;
  - several scorers (an ensemble): ``ensemble`` = the mean, over the item's candidate pairs,
    of the standard deviation across members of σ(s_a − s_b): how much the members disagree.
  Items without scores from every configured scorer come after the scored ones, oldest first.

In every order, items that other annotators have already started come first, so overlap
completes before new items are opened. ``data.labeling.next_assignment`` asks
``next_item_sql`` for its query; uncertainties are (re)computed by ``refresh_uncertainty``,
called when the order is set, when ``rankloop score`` or ``rankloop loop`` store scores, when
the app starts and before ``rankloop simulate`` ranks.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import sqlite_utils

from data import store
from data.errors import ConfigError

ORDERS = ("fifo", "random", "uncertain")
_SETTING = "queue_order"
# Knuth's multiplicative hash: (id · A + seed) mod 2^32 is a permutation of the ids.
_HASH_A, _HASH_M = 2654435761, 2**32


@dataclass(frozen=True)
class QueueOrder:
    order: str = "fifo"
    scorers: tuple[str, ...] = ()
    """``uncertain``: the reward model(s) whose stored scores measure uncertainty."""
    seed: int = 0
    """``random``: which permutation."""

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ConfigError(f"queue order must be one of {', '.join(ORDERS)}, not {self.order!r}")
        if self.order == "uncertain" and not self.scorers:
            raise ConfigError("the uncertain queue order needs at least one reward model "
                             "(--queue-scorer bt:DIR), whose stored scores it reads")


def get_queue_order(db: sqlite_utils.Database) -> QueueOrder:
    if not db["project_settings"].exists():
        return QueueOrder()
    row = db.execute("SELECT value FROM project_settings WHERE key = ?", [_SETTING]).fetchone()
    if row is None:
        return QueueOrder()
    value = json.loads(row[0])
    return QueueOrder(value["order"], tuple(value.get("scorers", ())), int(value.get("seed", 0)))


def set_queue_order(db: sqlite_utils.Database, order: QueueOrder, *,
                    set_by: str | None = None) -> int:
    """Stores the project's queue order; for ``uncertain`` computes every item's uncertainty
    now and returns how many items have one."""
    value = {"order": order.order, "scorers": list(order.scorers), "seed": order.seed}
    with store.transaction(db):
        db.execute(
            "INSERT INTO project_settings (key, value, updated_at, updated_by) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            [_SETTING, json.dumps(value), time.time(), set_by])
    return refresh_uncertainty(db) if order.order == "uncertain" else 0


def next_item_sql(db: sqlite_utils.Database, available_where: str) -> str:
    """The queue's next-item query over ``items i`` filtered by ``available_where``, ordered
    by the project's queue order (one row: the item id)."""
    order = get_queue_order(db)
    started = ("(SELECT COUNT(*) FROM assignments a WHERE a.item_id = i.id "
               "AND a.submitted_at IS NOT NULL AND a.skipped = 0) DESC")
    if order.order == "random":
        key = f"((i.id * {_HASH_A} + {int(order.seed) % _HASH_M}) % {_HASH_M}), i.id"
    elif order.order == "uncertain":
        key = ("(SELECT u.uncertainty FROM item_uncertainty u WHERE u.item_id = i.id) "
               "DESC NULLS LAST, i.id")
    else:
        key = "i.id"
    return f"SELECT i.id FROM items i WHERE {available_where} ORDER BY {started}, {key} LIMIT 1"


# --- uncertainty: pure functions ------------------------------------------------------------------

def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def gap_uncertainty(scores: Sequence[float]) -> float:
    """1 − tanh(g / 2) for the smallest gap g between two of the scores (1 = a tie)."""
    if len(scores) < 2:
        raise ValueError("an item needs at least two scored candidates")
    ordered = sorted(scores)
    smallest = min(b - a for a, b in zip(ordered, ordered[1:]))
    return 1.0 - math.tanh(smallest / 2)


def ensemble_uncertainty(member_scores: Sequence[Sequence[float]]) -> float:
    """Mean over candidate pairs of the population standard deviation, across ensemble
    members, of σ(s_a − s_b). ``member_scores``: one score list per member, aligned by
    candidate."""
    if len(member_scores) < 2:
        raise ValueError("an ensemble needs at least two members")
    k = len(member_scores[0])
    if k < 2 or any(len(m) != k for m in member_scores):
        raise ValueError("every member must score the same two or more candidates")
    spreads = [statistics.pstdev([_sigmoid(m[a] - m[b]) for m in member_scores])
               for a, b in combinations(range(k), 2)]
    return sum(spreads) / len(spreads)


# --- uncertainty: the store -------------------------------------------------------------------------

@dataclass
class ItemUncertainty:
    item_id: int
    uncertainty: float
    method: str
    """``gap`` (one scorer) or ``ensemble``."""
    scores: dict[int, list[float]] = field(default_factory=dict)
    """Candidate id → its score from each scorer, in the order of the scorers."""


def item_uncertainty(item_id: int, scores: dict[int, list[float]]) -> ItemUncertainty:
    members = list(zip(*scores.values()))  # one tuple per scorer, aligned by candidate
    if len(members) == 1:
        return ItemUncertainty(item_id, gap_uncertainty(members[0]), "gap", scores)
    return ItemUncertainty(item_id, ensemble_uncertainty(members), "ensemble", scores)


def refresh_uncertainty(db: sqlite_utils.Database) -> int:
    """Recomputes the uncertainty of every non-gold item whose candidates all have scores from
    each of the project's ``uncertain`` scorers; returns how many items have one. Does nothing
    for the other orders."""
    order = get_queue_order(db)
    if order.order != "uncertain":
        return 0
    scorers = list(order.scorers)
    by_scorer = {s: store.model_scores(db, s) for s in scorers}
    rows: list[ItemUncertainty] = []
    items = db.execute(
        "SELECT i.id, c.id FROM items i JOIN candidates c "
        "ON c.prompt_id = i.prompt_id AND c.run_id = i.run_id "
        "WHERE i.is_gold = 0 ORDER BY i.id, c.idx").fetchall()
    grouped: dict[int, list[int]] = {}
    for item_id, candidate_id in items:
        grouped.setdefault(item_id, []).append(candidate_id)
    for item_id, candidate_ids in grouped.items():
        if len(candidate_ids) < 2 or not all(c in by_scorer[s] for s in scorers
                                             for c in candidate_ids):
            continue
        scores = {c: [by_scorer[s][c].score for s in scorers] for c in candidate_ids}
        rows.append(item_uncertainty(item_id, scores))
    now = time.time()
    with store.transaction(db):
        db.conn.executemany(
            "INSERT INTO item_uncertainty (item_id, uncertainty, method, scorers, scores, "
            "computed_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (item_id) DO UPDATE SET "
            "uncertainty = excluded.uncertainty, method = excluded.method, "
            "scorers = excluded.scorers, scores = excluded.scores, "
            "computed_at = excluded.computed_at",
            [(r.item_id, r.uncertainty, r.method, json.dumps(scorers),
              json.dumps({str(c): v for c, v in r.scores.items()}), now) for r in rows])
    return len(rows)


def stored_uncertainty(db: sqlite_utils.Database) -> dict[int, dict]:
    """Item id → its stored uncertainty row (uncertainty, method, scorers, scores)."""
    return {row["item_id"]: {**row, "scorers": json.loads(row["scorers"]),
                             "scores": {int(k): v for k, v in json.loads(row["scores"]).items()}}
            for row in db.query("SELECT * FROM item_uncertainty")}
