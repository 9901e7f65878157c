"""The SQLite store: the one place that defines RankLoop's schema.

Every table is created by a numbered migration in ``MIGRATIONS``; ``open_store`` applies the
ones a database has not seen yet, in order, each in its own transaction, and records them in
``schema_migrations``. Votes (``rankings``) and the pairs derived from them (``comparisons``)
are append-only: triggers refuse UPDATE and DELETE on them.

Connections run in WAL mode with foreign keys on and a busy timeout, so the labeling app,
generation jobs and trainers can write to one file from several processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

DEFAULT_DB = "rankloop.db"
BUSY_TIMEOUT_MS = 30_000


class StoreError(Exception):
    """A database that cannot be opened or written, with a message meant for the user."""


def default_db_path() -> str:
    """``$RANKLOOP_DB`` when set, else ``./rankloop.db``."""
    return os.environ.get("RANKLOOP_DB") or DEFAULT_DB


# ---------------------------------------------------------------------------------------------
# Schema: numbered migrations. Append new ones; never edit one that has shipped.
# ---------------------------------------------------------------------------------------------

def _add_reference_column(db: sqlite_utils.Database, table: str, column: str, target: str) -> None:
    # Plain ALTER TABLE: sqlite-utils' add_column(fk=...) rebuilds the table, which would drop
    # the append-only triggers.
    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} INTEGER REFERENCES {target}(id)")


def _m1_generation(db: sqlite_utils.Database) -> None:
    db["prompts"].create(
        {
            "id": int,
            "prompt_hash": str,  # sha256 of the canonical messages JSON: one row per prompt
            "messages": str,  # JSON list of {"role", "content"}, ending with a user turn
            "source": str,  # where the prompt was first read from
            "source_id": str,  # the id it had there, when it had one
            "created_at": float,
        },
        pk="id",
        not_null={"prompt_hash", "messages", "created_at"},
    )
    db["prompts"].create_index(["prompt_hash"], unique=True)
    db["generation_runs"].create(
        {
            "id": int,
            "settings_hash": str,  # identifies "the same run settings" for resuming
            "model": str,
            "backend": str,
            "k": int,
            "temperature": float,
            "top_p": float,
            "max_new_tokens": int,
            "seed": int,
            "settings": str,  # JSON of everything above plus backend-specific options
            "created_at": float,
            "updated_at": float,
        },
        pk="id",
        not_null={"settings_hash", "model", "backend", "k", "created_at"},
    )
    db["generation_runs"].create_index(["settings_hash"], unique=True)
    db["candidates"].create(
        {
            "id": int,
            "prompt_id": int,
            "run_id": int,
            "idx": int,  # 0..k-1 within (prompt, run)
            "text": str,
            "token_count": int,
            "finish_reason": str,  # "stop" (end of sequence) or "length" (hit max_new_tokens)
            "created_at": float,
        },
        pk="id",
        foreign_keys=[("prompt_id", "prompts", "id"), ("run_id", "generation_runs", "id")],
        not_null={"prompt_id", "run_id", "idx", "text", "created_at"},
    )
    db["candidates"].create_index(["prompt_id", "run_id", "idx"], unique=True)
    db["candidates"].create_index(["run_id"])


def _m2_labeling(db: sqlite_utils.Database) -> None:
    # Identical candidates for one prompt make a meaningless comparison; flag, don't drop.
    _add_reference_column(db, "candidates", "duplicate_of", "candidates")
    db["users"].create(
        {
            "id": int,
            "name": str,
            "role": str,  # "annotator" or "admin"
            "password_hash": str,  # KDF output with its parameters, never the password
            "created_at": float,
        },
        pk="id",
        not_null={"name", "role", "password_hash", "created_at"},
    )
    db["users"].create_index(["name"], unique=True)
    db["rankings"].create(
        {
            "id": int,
            "submission_key": str,  # client-chosen; a resubmitted key stores nothing new
            "user_id": int,
            "prompt_id": int,
            "candidate_ids": str,  # JSON list, in the order shown to the annotator
            "ranks": str,  # JSON list aligned with candidate_ids; 1 = best, equal = tie
            "has_tie": int,
            "all_bad": int,
            "skipped": int,
            "rationale": str,
            "demonstration_id": int,  # the annotator's own answer, ranked above all candidates
            "shown_at": float,
            "submitted_at": float,
        },
        pk="id",
        foreign_keys=[
            ("user_id", "users", "id"),
            ("prompt_id", "prompts", "id"),
            ("demonstration_id", "candidates", "id"),
        ],
        not_null={"user_id", "prompt_id", "candidate_ids", "submitted_at"},
        defaults={"has_tie": 0, "all_bad": 0, "skipped": 0},
    )
    db["rankings"].create_index(["submission_key"], unique=True)
    db["rankings"].create_index(["prompt_id"])
    db["comparisons"].create(
        {
            "id": int,
            "ranking_id": int,
            "prompt_id": int,
            "chosen_id": int,  # candidate ranked better (either side when tie = 1)
            "rejected_id": int,
            "tie": int,
        },
        pk="id",
        foreign_keys=[
            ("ranking_id", "rankings", "id"),
            ("prompt_id", "prompts", "id"),
            ("chosen_id", "candidates", "id"),
            ("rejected_id", "candidates", "id"),
        ],
        not_null={"ranking_id", "prompt_id", "chosen_id", "rejected_id", "tie"},
    )
    db["comparisons"].create_index(["ranking_id"])
    for table in ("rankings", "comparisons"):
        for op in ("UPDATE", "DELETE"):
            db.execute(
                f"CREATE TRIGGER {table}_append_only_{op.lower()} BEFORE {op} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )


def _m3_model_scores(db: sqlite_utils.Database) -> None:
    # A reward model's score for a candidate, next to the human rankings of the same candidates.
    db["model_scores"].create(
        {
            "id": int,
            "candidate_id": int,
            "scorer": str,  # "bt:/abs/model/dir" or "armorm:/abs/model/dir"
            "score": float,
            "objectives": str,  # JSON {name: value} for multi-objective scorers, else NULL
            "created_at": float,
        },
        pk="id",
        foreign_keys=[("candidate_id", "candidates", "id")],
        not_null={"candidate_id", "scorer", "score", "created_at"},
    )
    db["model_scores"].create_index(["candidate_id", "scorer"], unique=True)
    db["model_scores"].create_index(["scorer"])


def _m4_labeling_queue(db: sqlite_utils.Database) -> None:
    # Demonstrations are candidates written by an annotator (in a run whose backend is "human").
    _add_reference_column(db, "candidates", "author_id", "users")
    db["items"].create(
        {
            "id": int,
            "prompt_id": int,
            "run_id": int,
            "is_gold": int,
            "gold_ranks": str,  # JSON ranks aligned with the run's candidates by idx
            "created_at": float,
        },
        pk="id",
        foreign_keys=[("prompt_id", "prompts", "id"), ("run_id", "generation_runs", "id")],
        not_null={"prompt_id", "run_id", "created_at"},
        defaults={"is_gold": 0},
    )
    db["items"].create_index(["prompt_id", "run_id"], unique=True)
    # An item handed to an annotator; mutable bookkeeping, unlike the vote log.
    db["assignments"].create(
        {
            "id": int,
            "item_id": int,
            "user_id": int,
            "candidate_ids": str,  # JSON, the shuffled order shown to this annotator
            "shown_at": float,
            "expires_at": float,
            "submitted_at": float,
            "skipped": int,
        },
        pk="id",
        foreign_keys=[("item_id", "items", "id"), ("user_id", "users", "id")],
        not_null={"item_id", "user_id", "candidate_ids", "shown_at", "expires_at"},
        defaults={"skipped": 0},
    )
    db["assignments"].create_index(["item_id", "user_id"], unique=True)
    db["assignments"].create_index(["user_id", "submitted_at"])
    _add_reference_column(db, "rankings", "item_id", "items")
    _add_reference_column(db, "rankings", "assignment_id", "assignments")
    db["rankings"].create_index(["item_id"])
    db["jobs"].create(
        {
            "id": int,
            "kind": str,
            "argv": str,  # JSON command line
            "log_path": str,
            "pid": int,
            "status": str,  # running, succeeded, failed
            "returncode": int,
            "started_by": str,
            "started_at": float,
            "finished_at": float,
        },
        pk="id",
        not_null={"kind", "argv", "status", "started_at"},
    )


def _m5_policy_iterations(db: sqlite_utils.Database) -> None:
    # One row per policy iteration of `rankloop loop`: the newest row's model is the policy
    # that the next generation samples from.
    db["policy_iterations"].create(
        {
            "id": int,
            "iteration": int,  # 1, 2, ... in the order they finished
            "algorithm": str,  # "rebel"
            "base_model": str,  # the policy that generated this iteration's candidates
            "model": str,  # the trained policy's folder (absolute path)
            "run_id": int,  # the generation run whose candidates were trained on
            "scorer": str,  # reward model that scored them ("bt:/abs/dir", ...)
            "report": str,  # JSON: held-out reward old vs new, win rate, KL, lengths
            "created_at": float,
        },
        pk="id",
        foreign_keys=[("run_id", "generation_runs", "id")],
        not_null={"iteration", "algorithm", "base_model", "model", "created_at"},
    )
    db["policy_iterations"].create_index(["iteration"], unique=True)


def _m6_queue_set_aside(db: sqlite_utils.Database) -> None:
    # An item the app cannot show (more candidates than the page holds, text that fails to
    # render) is set aside once, so it never comes back to strand another annotator.
    db.execute("ALTER TABLE items ADD COLUMN set_aside_at REAL")
    db.execute("ALTER TABLE items ADD COLUMN set_aside_reason TEXT")


def _m7_accounts(db: sqlite_utils.Database) -> None:
    # name_key is the NFKC case-folded name: "Ann" and "ａｎｎ" are one account. Older files
    # may hold two names that now collide; the later one keeps a suffixed key so the unique
    # index can be built, and stays able to log in under its exact name. The key is computed
    # here as it was when this migration shipped: a migration never follows live code.
    import unicodedata

    def name_key(name: str) -> str:
        return unicodedata.normalize("NFKC", name).casefold()

    db.execute("ALTER TABLE users ADD COLUMN name_key TEXT")
    db.execute("ALTER TABLE users ADD COLUMN disabled_at REAL")
    seen = set()
    for user_id, name in db.execute("SELECT id, name FROM users ORDER BY id").fetchall():
        key = name_key(name)
        if key in seen:
            key = f"{key}#{user_id}"
        seen.add(key)
        db.execute("UPDATE users SET name_key = ? WHERE id = ?", [key, user_id])
    db["users"].create_index(["name_key"], unique=True)
    # Login sessions: only a hash of the cookie's token is stored, so the file alone cannot
    # be used to sign in.
    db["sessions"].create(
        {
            "token_hash": str,  # sha256 hex of the session token
            "user_id": int,
            "created_at": float,
            "expires_at": float,
            "revoked_at": float,
            "client": str,  # address that logged in, for the admin's eyes
        },
        pk="token_hash",
        foreign_keys=[("user_id", "users", "id")],
        not_null={"user_id", "created_at", "expires_at"},
    )
    db["sessions"].create_index(["user_id"])


def _m20_queue_order(db: sqlite_utils.Database) -> None:
    # Per-project settings chosen by an admin (the queue order, as JSON under "queue_order").
    db["project_settings"].create(
        {"key": str, "value": str, "updated_at": float, "updated_by": str},
        pk="key", not_null={"value", "updated_at"},
    )
    # Active selection: an item's uncertainty under the reward model(s), with the scores it was
    # computed from (data/queue_order.py).
    db["item_uncertainty"].create(
        {
            "item_id": int,
            "uncertainty": float,  # higher = served earlier by the "uncertain" order
            "method": str,  # "gap" (one scorer) or "ensemble"
            "scorers": str,  # JSON list of scorer names
            "scores": str,  # JSON {candidate id: [score per scorer]}
            "computed_at": float,
        },
        pk="item_id",
        foreign_keys=[("item_id", "items", "id")],
        not_null={"uncertainty", "method", "scorers", "scores", "computed_at"},
    )


# A ranking is the latest version of its vote when no revision supersedes it. Every reader of
# the vote log (exports, agreement, training pairs, admin counts) goes through these views.
LATEST_RANKINGS = "latest_rankings"
LATEST_COMPARISONS = "latest_comparisons"


def _m50_revisions_and_suggestions(db: sqlite_utils.Database) -> None:
    # A revision is a new rankings row pointing at the one it replaces; the old row stays.
    _add_reference_column(db, "rankings", "supersedes", "rankings")
    # One revision per row keeps each vote's history a single chain.
    db.execute("CREATE UNIQUE INDEX idx_rankings_supersedes ON rankings (supersedes) "
               "WHERE supersedes IS NOT NULL")
    # The model suggestion the annotator started from (JSON ranks aligned with candidate_ids),
    # and whether the stored ranks kept its order (1), changed it (0), or none was shown (NULL).
    db.execute("ALTER TABLE rankings ADD COLUMN suggested_ranks TEXT")
    db.execute("ALTER TABLE rankings ADD COLUMN suggestion_scorer TEXT")
    db.execute("ALTER TABLE rankings ADD COLUMN suggestion_accepted INTEGER")
    # The suggestion pinned when an assignment was first shown: JSON {scorer, ranks, scores}.
    db.execute("ALTER TABLE assignments ADD COLUMN suggestion TEXT")
    db.execute(f"CREATE VIEW {LATEST_RANKINGS} AS SELECT r.* FROM rankings r "
               "WHERE NOT EXISTS (SELECT 1 FROM rankings s WHERE s.supersedes = r.id)")
    db.execute(f"CREATE VIEW {LATEST_COMPARISONS} AS SELECT c.* FROM comparisons c "
               "WHERE NOT EXISTS (SELECT 1 FROM rankings s WHERE s.supersedes = c.ranking_id)")


def _m51_drafts(db: sqlite_utils.Database) -> None:
    # Work in progress on one assignment, kept until it is submitted; mutable, unlike votes.
    db["drafts"].create(
        {
            "assignment_id": int,
            "user_id": int,
            "ranks": str,  # JSON list aligned with the assignment's candidate_ids; null = unranked
            "all_bad": int,
            "rationale": str,
            "demonstration": str,
            "updated_at": float,
        },
        pk="assignment_id",
        foreign_keys=[("assignment_id", "assignments", "id"), ("user_id", "users", "id")],
        not_null={"user_id", "ranks", "updated_at"},
        defaults={"all_bad": 0},
    )


def _m52_settings(db: sqlite_utils.Database) -> None:
    # Project settings share the project_settings table (migration 20) with the queue order.
    db["user_settings"].create(
        {"user_id": int, "key": str, "value": str, "updated_at": float},
        pk=("user_id", "key"), foreign_keys=[("user_id", "users", "id")],
        not_null={"value", "updated_at"},
    )


def _m53_item_tags(db: sqlite_utils.Database) -> None:
    db["item_tags"].create(
        {"item_id": int, "tag": str, "created_at": float},
        pk=("item_id", "tag"), foreign_keys=[("item_id", "items", "id")],
        not_null={"created_at"},
    )
    db["item_tags"].create_index(["tag", "item_id"])


# Recomputes one item's row of item_stats from its latest votes. ``{item}`` is an SQL
# expression for the item id. Agreement counts, over the item's candidate pairs, the pairs of
# judgments that order a pair alike (same winner, or both a tie) out of all pairs of judgments:
# the same measure as data.agreement.pairwise_agreement, summed over annotator pairs.
_ITEM_STATS_UPSERT = """
INSERT INTO item_stats (item_id, labels, skips, judged_pairs, agreeing_pairs, last_submitted_at)
SELECT {item},
  (SELECT COUNT(*) FROM rankings r WHERE r.item_id = {item} AND r.skipped = 0
     AND NOT EXISTS (SELECT 1 FROM rankings s WHERE s.supersedes = r.id)),
  (SELECT COUNT(*) FROM rankings r WHERE r.item_id = {item} AND r.skipped = 1
     AND NOT EXISTS (SELECT 1 FROM rankings s WHERE s.supersedes = r.id)),
  (SELECT COALESCE(SUM(n * (n - 1) / 2), 0) FROM (
     SELECT COUNT(*) AS n FROM comparisons c JOIN rankings r ON r.id = c.ranking_id
     WHERE r.item_id = {item} AND NOT EXISTS (SELECT 1 FROM rankings s WHERE s.supersedes = r.id)
     GROUP BY MIN(c.chosen_id, c.rejected_id), MAX(c.chosen_id, c.rejected_id))),
  (SELECT COALESCE(SUM(n * (n - 1) / 2), 0) FROM (
     SELECT COUNT(*) AS n FROM comparisons c JOIN rankings r ON r.id = c.ranking_id
     WHERE r.item_id = {item} AND NOT EXISTS (SELECT 1 FROM rankings s WHERE s.supersedes = r.id)
     GROUP BY MIN(c.chosen_id, c.rejected_id), MAX(c.chosen_id, c.rejected_id),
              CASE WHEN c.tie THEN -1 ELSE c.chosen_id END)),
  (SELECT MAX(r.submitted_at) FROM rankings r WHERE r.item_id = {item})
WHERE true
ON CONFLICT (item_id) DO UPDATE SET labels = excluded.labels, skips = excluded.skips,
  judged_pairs = excluded.judged_pairs, agreeing_pairs = excluded.agreeing_pairs,
  last_submitted_at = excluded.last_submitted_at;
"""


def _m54_item_stats(db: sqlite_utils.Database) -> None:
    # Per-item counts over the latest votes, kept current by triggers on the append-only vote
    # log, so the admin's item browser filters 100k items by index instead of re-deriving
    # every item's agreement on each page.
    db.execute("""
        CREATE TABLE item_stats (
            item_id INTEGER PRIMARY KEY REFERENCES items(id),
            labels INTEGER NOT NULL DEFAULT 0,         -- latest submissions that are not skips
            skips INTEGER NOT NULL DEFAULT 0,          -- latest submissions that are skips
            judged_pairs INTEGER NOT NULL DEFAULT 0,   -- pairs of judgments of a candidate pair
            agreeing_pairs INTEGER NOT NULL DEFAULT 0, -- those that order it alike
            last_submitted_at REAL,
            disagreement REAL GENERATED ALWAYS AS (
                CASE WHEN judged_pairs > 0
                THEN 1.0 - CAST(agreeing_pairs AS REAL) / judged_pairs END) VIRTUAL
        )""")
    db.execute("CREATE INDEX idx_item_stats_labels ON item_stats (labels)")
    db.execute("CREATE INDEX idx_item_stats_disagreement ON item_stats (disagreement)")
    db.execute("CREATE INDEX idx_item_stats_recent ON item_stats (last_submitted_at)")
    # A new ranking (its comparisons follow) and each new comparison refresh the item's row;
    # the ranking trigger alone covers revisions into a skip, which add no comparisons.
    db.execute("CREATE TRIGGER item_stats_on_ranking AFTER INSERT ON rankings "
               "WHEN NEW.item_id IS NOT NULL BEGIN "
               + _ITEM_STATS_UPSERT.format(item="NEW.item_id") + " END")
    item_of_comparison = "(SELECT item_id FROM rankings WHERE id = NEW.ranking_id)"
    db.execute("CREATE TRIGGER item_stats_on_comparison AFTER INSERT ON comparisons "
               f"WHEN {item_of_comparison} IS NOT NULL BEGIN "
               + _ITEM_STATS_UPSERT.format(item=item_of_comparison) + " END")
    db.execute(_ITEM_STATS_UPSERT.format(item="i.id").replace(
        "WHERE true", "FROM items i WHERE EXISTS (SELECT 1 FROM rankings r WHERE r.item_id = i.id)"))
    # The browser's other filters: by run, by annotator, items held right now.
    db["items"].create_index(["run_id"])
    db["rankings"].create_index(["user_id", "item_id"])
    db["assignments"].create_index(["submitted_at", "expires_at"])


def _m55_items_exist(db: sqlite_utils.Database) -> None:
    # Items used to be made when a page asked for a task; now storing candidates makes them.
    # Stores written before get theirs here, with the rule as it stood when this shipped.
    db.execute(
        """
        INSERT OR IGNORE INTO items (prompt_id, run_id, is_gold, created_at)
        SELECT c.prompt_id, c.run_id, 0, MAX(c.created_at)
        FROM candidates c JOIN generation_runs r ON r.id = c.run_id
        WHERE r.backend NOT IN ('human', 'gold')
          AND NOT EXISTS (SELECT 1 FROM items i
                          WHERE i.prompt_id = c.prompt_id AND i.run_id = c.run_id)
        GROUP BY c.prompt_id, c.run_id
        HAVING COUNT(*) >= MAX(r.k)
        ORDER BY MIN(c.id)
        """)


def _m70_policies(db: sqlite_utils.Database) -> None:
    # A policy is a named source of candidates (the base model, a loop iteration, any model
    # folder). A candidate knows its policy when its run mixes several (blind comparisons, a
    # loop round with the previous policy's answers); NULL means the run's own model.
    db["policies"].create(
        {
            "id": int,
            "name": str,  # shown to admins only; never to annotators
            "model": str,  # what it samples from: "default", a folder or a Hub id
            "created_at": float,
        },
        pk="id",
        not_null={"name", "model", "created_at"},
    )
    db["policies"].create_index(["name"], unique=True)
    _add_reference_column(db, "candidates", "policy_id", "policies")
    # A comparison item exists to compare policies on a held-out prompt (a run of backend
    # "arena"); the queue serves them at the share an admin sets.
    db.execute("ALTER TABLE items ADD COLUMN comparison INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX idx_items_comparison ON items (comparison)")


LATEST_ADJUDICATIONS = "latest_adjudications"


def _m60_adjudication_and_active_time(db: sqlite_utils.Database) -> None:
    # Seconds the task was visible and in use before it was submitted, as the page measured
    # them (wall time, shown_at to submitted_at, also counts a lunch break); NULL when unknown.
    db.execute("ALTER TABLE rankings ADD COLUMN active_seconds REAL")
    # A reviewer may settle disputed items without being an admin.
    db.execute("ALTER TABLE users ADD COLUMN reviewer INTEGER NOT NULL DEFAULT 0")
    # A reviewer's decision on a disputed item, append-only: a later decision on the same item
    # replaces the earlier one for labels, and both stay. outcome: "vote" (the vote named by
    # ranking_id is the item's label, the others are not), "votes_stand" (every vote stays a
    # label), "discard" (no vote of the item is a label).
    db.execute("""
        CREATE TABLE adjudications (
            id INTEGER PRIMARY KEY,
            item_id INTEGER NOT NULL REFERENCES items(id),
            reviewer_id INTEGER NOT NULL REFERENCES users(id),
            outcome TEXT NOT NULL CHECK (outcome IN ('vote', 'votes_stand', 'discard')),
            ranking_id INTEGER REFERENCES rankings(id),
            note TEXT,
            created_at REAL NOT NULL,
            CHECK ((outcome = 'vote') = (ranking_id IS NOT NULL))
        )""")
    db.execute("CREATE INDEX idx_adjudications_item ON adjudications (item_id, id)")
    db.execute(f"CREATE VIEW {LATEST_ADJUDICATIONS} AS SELECT a.* FROM adjudications a "
               "WHERE a.id = (SELECT MAX(b.id) FROM adjudications b WHERE b.item_id = a.item_id)")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[sqlite_utils.Database], None]


def _m80_vote_guidelines(db: sqlite_utils.Database) -> None:
    # The version of the annotators' guidelines in force when a vote was stored (a short hash
    # of their text, ``data.settings.guidelines_version``); NULL when there were none.
    db.execute("ALTER TABLE rankings ADD COLUMN guidelines_version TEXT")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "prompts, generation runs, candidates", _m1_generation),
    Migration(2, "users, rankings, comparisons; duplicate flag on candidates", _m2_labeling),
    Migration(3, "model scores", _m3_model_scores),
    Migration(4, "labeling queue: items, assignments, jobs; demonstration authors",
              _m4_labeling_queue),
    Migration(5, "policy iterations", _m5_policy_iterations),
    Migration(6, "items set aside when they cannot be shown", _m6_queue_set_aside),
    Migration(7, "accounts: normalised names, disabling, login sessions", _m7_accounts),
    Migration(20, "project settings; item uncertainty for the queue order", _m20_queue_order),
    Migration(50, "vote revisions and model suggestions; latest-votes views",
              _m50_revisions_and_suggestions),
    Migration(51, "drafts", _m51_drafts),
    Migration(52, "per-user settings", _m52_settings),
    Migration(53, "item tags", _m53_item_tags),
    Migration(54, "item stats kept by triggers; item browser indexes", _m54_item_stats),
    Migration(55, "an item for every complete candidate set", _m55_items_exist),
    Migration(60, "active seconds of each vote; reviewers; adjudications",
              _m60_adjudication_and_active_time),
    Migration(70, "policies; the policy of each candidate; comparison items", _m70_policies),
    Migration(80, "the guidelines version of each vote", _m80_vote_guidelines),
)
SCHEMA_VERSION = max(m.version for m in MIGRATIONS)


def schema_version(db: sqlite_utils.Database) -> int:
    if not db["schema_migrations"].exists():
        return 0
    row = db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
    return row[0] or 0


def applied_versions(db: sqlite_utils.Database) -> set[int]:
    if not db["schema_migrations"].exists():
        return set()
    return {row[0] for row in db.execute("SELECT version FROM schema_migrations")}


def migrate(db: sqlite_utils.Database, target: int = SCHEMA_VERSION) -> int:
    """Applies every migration up to ``target`` that the database has not seen; returns the
    highest version applied. Each version is tracked (not just the highest), so a database
    that has a higher-numbered migration still gets a lower-numbered one it lacks."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    for migration in MIGRATIONS:
        if migration.version > target:
            continue
        # BEGIN IMMEDIATE takes the write lock first, so two processes opening a fresh file
        # at once cannot both apply the same migration.
        db.execute("BEGIN IMMEDIATE")
        try:
            if migration.version in applied_versions(db):
                db.execute("ROLLBACK")
                continue
            migration.apply(db)
            db.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                [migration.version, migration.name, time.time()],
            )
            db.execute("COMMIT")
        except BaseException:
            if db.conn.in_transaction:
                db.execute("ROLLBACK")
            raise
    return schema_version(db)


def check_writable(path: str | os.PathLike) -> None:
    """Raises StoreError if ``path`` could not be created or written, without creating it."""
    target = Path(path)
    if str(target) == ":memory:":
        return
    if target.exists():
        if target.is_dir():
            raise StoreError(f"database path {target} is a directory")
        if not os.access(target, os.R_OK | os.W_OK):
            raise StoreError(f"database {target} is not writable")
        return
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise StoreError(f"cannot create database {target}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"cannot create database {target}: directory {parent} is not writable")


def _owner_only(path: str) -> None:
    """Creates the database file readable and writable by its owner only (it holds password
    hashes and every vote), and narrows an existing one of ours; SQLite gives the -wal and
    -shm files the database file's permissions."""
    if path == ":memory:" or path.startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        return
    except FileExistsError:
        pass
    for name in (path, f"{path}-wal", f"{path}-shm"):
        try:
            st = os.stat(name)
            if st.st_uid == os.getuid() and st.st_mode & 0o077:
                os.chmod(name, 0o600)
        except OSError:
            pass


def connect(path: str | os.PathLike | None = None) -> sqlite_utils.Database:
    """A connection with RankLoop's settings, without touching the schema (see open_store)."""
    path = str(path or default_db_path())
    check_writable(path)
    _owner_only(path)
    try:
        # check_same_thread off: a server may hand one thread's connection to another, never
        # two at once.
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        db = sqlite_utils.Database(conn)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if path != ":memory:":
            db.enable_wal()
        db.execute("PRAGMA foreign_keys = ON")
        # WAL makes NORMAL durable against process death (a crash of the OS may lose the last
        # transactions, never corrupt the file).
        db.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from exc
    return db


def open_store(path: str | os.PathLike | None = None, *, migrate_to: int = SCHEMA_VERSION):
    """Opens (creating if needed) the database at ``path`` and brings its schema up to date."""
    db = connect(path)
    try:
        migrate(db, migrate_to)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot migrate database {path}: {exc}") from exc
    return db


class transaction:
    """``with transaction(db):`` runs the block in one BEGIN IMMEDIATE ... COMMIT.

    Nested use joins the outer transaction, so typed functions compose into one atomic write.
    """

    def __init__(self, db: sqlite_utils.Database):
        self.db = db
        self.outermost = False

    def __enter__(self) -> sqlite_utils.Database:
        if not self.db.conn.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
            self.outermost = True
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.outermost:
            return
        if exc_type is None:
            self.db.execute("COMMIT")
        elif self.db.conn.in_transaction:  # an error may already have rolled it back
            self.db.execute("ROLLBACK")


# ---------------------------------------------------------------------------------------------
# Typed access
# ---------------------------------------------------------------------------------------------

def canonical_json(value) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def prompt_hash(messages: Sequence[dict]) -> str:
    return hashlib.sha256(canonical_json(list(messages)).encode()).hexdigest()


def upsert_prompts(
    db: sqlite_utils.Database,
    prompts: Iterable[tuple[Sequence[dict], str, str | None]],
) -> list[int]:
    """Stores ``(messages, source, source_id)`` prompts once each; returns their ids in order."""
    ids: list[int] = []
    now = time.time()
    with transaction(db):
        for messages, source, source_id in prompts:
            digest = prompt_hash(messages)
            row = db.execute("SELECT id FROM prompts WHERE prompt_hash = ?", [digest]).fetchone()
            if row:
                ids.append(row[0])
                continue
            cursor = db.execute(
                "INSERT INTO prompts (prompt_hash, messages, source, source_id, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [digest, canonical_json(list(messages)), source, source_id, now],
            )
            ids.append(cursor.lastrowid)
    return ids


def prompt_messages(db: sqlite_utils.Database, prompt_id: int) -> list[dict]:
    return json.loads(db["prompts"].get(prompt_id)["messages"])


@dataclass(frozen=True)
class RunSettings:
    """What makes two generation invocations "the same run" (and so resumable)."""

    model: str
    backend: str
    k: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int

    def to_json(self) -> str:
        return canonical_json(self.__dict__)

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def get_or_create_run(db: sqlite_utils.Database, settings: RunSettings) -> int:
    digest = settings.digest()
    now = time.time()
    with transaction(db):
        row = db.execute(
            "SELECT id FROM generation_runs WHERE settings_hash = ?", [digest]
        ).fetchone()
        if row:
            db.execute("UPDATE generation_runs SET updated_at = ? WHERE id = ?", [now, row[0]])
            return row[0]
        cursor = db.execute(
            "INSERT INTO generation_runs (settings_hash, model, backend, k, temperature, top_p, "
            "max_new_tokens, seed, settings, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [digest, settings.model, settings.backend, settings.k, settings.temperature,
             settings.top_p, settings.max_new_tokens, settings.seed, settings.to_json(), now, now],
        )
        return cursor.lastrowid


def prompts_with_candidates(db: sqlite_utils.Database, run_id: int, k: int) -> set[int]:
    """Ids of prompts that already have all ``k`` candidates from ``run_id``."""
    rows = db.execute(
        "SELECT prompt_id FROM candidates WHERE run_id = ? GROUP BY prompt_id HAVING COUNT(*) >= ?",
        [run_id, k],
    )
    return {r[0] for r in rows}


@dataclass(frozen=True)
class CandidateIn:
    text: str
    token_count: int
    finish_reason: str


def duplicate_targets(texts: Sequence[str]) -> list[int | None]:
    """For each text, the index of the first earlier identical text, else None."""
    first_seen: dict[str, int] = {}
    out: list[int | None] = []
    for i, text in enumerate(texts):
        key = text.strip()
        out.append(first_seen.get(key))
        first_seen.setdefault(key, i)
    return out


# Runs whose candidates never form an item to rank: annotators' own answers ("human") and gold
# items, which are made together with their candidates (data.labeling.add_gold_item).
HUMAN_BACKEND = "human"
_NOT_RANKED_BACKENDS = (HUMAN_BACKEND, "gold")
ARENA_BACKEND = "arena"
"""The backend of a run of blind comparisons: each candidate's policy says where it came from."""


def add_items(db: sqlite_utils.Database, *, prompt_id: int | None = None,
              run_id: int | None = None) -> int:
    """Creates the labeling item of every (prompt, run) whose k candidates are all stored
    (only those of ``prompt_id`` / ``run_id`` when given); returns how many were added.
    Called where candidates are written, so an item exists as soon as its candidates do."""
    if not db["items"].exists():  # a store migrated only part way (migration tests)
        return 0
    where, params = [], [time.time(), *_NOT_RANKED_BACKENDS]
    for column, value in (("prompt_id", prompt_id), ("run_id", run_id)):
        if value is not None:
            where.append(f"AND c.{column} = ?")
            params.append(value)
    # Runs of backend "arena" hold blind comparisons of policies (launch/cmd_arena.py).
    flag_column = flag_value = ""
    if "comparison" in db["items"].columns_dict:
        flag_column, flag_value = ", comparison", ", MAX(r.backend = ?)"
        params.insert(1, ARENA_BACKEND)
    with transaction(db):
        return db.execute(
            f"""
            INSERT OR IGNORE INTO items (prompt_id, run_id, is_gold, created_at{flag_column})
            SELECT c.prompt_id, c.run_id, 0, ?{flag_value}
            FROM candidates c JOIN generation_runs r ON r.id = c.run_id
            WHERE r.backend NOT IN (?, ?) {' '.join(where)}
              AND NOT EXISTS (SELECT 1 FROM items i
                              WHERE i.prompt_id = c.prompt_id AND i.run_id = c.run_id)
            GROUP BY c.prompt_id, c.run_id
            HAVING COUNT(*) >= MAX(r.k)
            ORDER BY MIN(c.id)
            """, params).rowcount


def add_candidates(
    db: sqlite_utils.Database, prompt_id: int, run_id: int, samples: Sequence[CandidateIn],
    policy_ids: Sequence[int | None] | None = None,
) -> list[int]:
    """Stores one prompt's candidates atomically: all of them or none, with the item that
    annotators rank once all k of the run's candidates are there. ``policy_ids`` (aligned with
    ``samples``) records which policy wrote each, for a run that mixes policies. Returns
    their ids."""
    now = time.time()
    ids: list[int] = []
    duplicates = duplicate_targets([s.text for s in samples])
    policies = list(policy_ids) if policy_ids is not None else [None] * len(samples)
    if len(policies) != len(samples):
        raise ValueError("one policy id per candidate")
    with transaction(db):
        for idx, (sample, dup, policy) in enumerate(zip(samples, duplicates, policies)):
            columns, values = "", []
            if policy is not None:
                columns, values = ", policy_id", [policy]
            cursor = db.execute(
                "INSERT INTO candidates (prompt_id, run_id, idx, text, token_count, finish_reason, "
                f"created_at, duplicate_of{columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?"
                f"{', ?' * len(values)})",
                [prompt_id, run_id, idx, sample.text, sample.token_count, sample.finish_reason,
                 now, None if dup is None else ids[dup], *values],
            )
            ids.append(cursor.lastrowid)
        add_items(db, prompt_id=prompt_id, run_id=run_id)
    return ids


def get_or_create_policy(db: sqlite_utils.Database, name: str, model: str) -> int:
    """The id of the policy called ``name``, created with ``model`` on first use. A name
    already bound to another model is refused: votes would mix two policies under one name."""
    with transaction(db):
        row = db.execute("SELECT id, model FROM policies WHERE name = ?", [name]).fetchone()
        if row:
            if row[1] != model:
                raise StoreError(f"policy {name!r} already samples from {row[1]}, not {model}")
            return row[0]
        return db.execute("INSERT INTO policies (name, model, created_at) VALUES (?, ?, ?)",
                          [name, model, time.time()]).lastrowid


def candidate_policies(db: sqlite_utils.Database) -> dict[int, tuple[str, int]]:
    """Candidate id -> (its policy's name, its token count), for every candidate: the stored
    policy, else the model of its run (runs of one policy record none per candidate)."""
    if "policy_id" not in db["candidates"].columns_dict:
        return {}
    return {r[0]: (r[1], r[2] or 0) for r in db.execute(
        "SELECT c.id, COALESCE(p.name, g.model), c.token_count FROM candidates c "
        "JOIN generation_runs g ON g.id = c.run_id LEFT JOIN policies p ON p.id = c.policy_id")}


def candidates_for_run(db: sqlite_utils.Database, run_id: int) -> list[dict]:
    return list(
        db.query("SELECT * FROM candidates WHERE run_id = ? ORDER BY prompt_id, idx", [run_id])
    )


def counts(db: sqlite_utils.Database) -> dict[str, int]:
    """Row counts of the main tables, for status lines."""
    tables = ("prompts", "generation_runs", "candidates", "users", "rankings", "comparisons",
              "model_scores", "policy_iterations")
    return {t: db[t].count for t in tables if db[t].exists()}


def add_job(db: sqlite_utils.Database, kind: str, argv: list[str], started_by: str) -> int:
    """Records a background job as running (``labeler.jobs`` starts its process); its id."""
    return db.execute(
        "INSERT INTO jobs (kind, argv, status, started_by, started_at) VALUES (?, ?, ?, ?, ?)",
        [kind, json.dumps(argv), "running", started_by, time.time()]).lastrowid


def set_job_process(db: sqlite_utils.Database, job_id: int, pid: int, log_path: str) -> None:
    with transaction(db):
        db.execute("UPDATE jobs SET pid = ?, log_path = ? WHERE id = ?", [pid, log_path, job_id])


def finish_job(db: sqlite_utils.Database, job_id: int, status: str,
               returncode: int | None) -> None:
    """Records how a running job ended; only the first word counts, so a job stopped on
    purpose stays "stopped" when its process then exits."""
    with transaction(db):
        db.execute("UPDATE jobs SET status = ?, returncode = ?, finished_at = ? "
                   "WHERE id = ? AND status = 'running'",
                   [status, returncode, time.time(), job_id])


def jobs_overview(db: sqlite_utils.Database) -> tuple[list[dict], dict[str, int]]:
    """(the running background jobs, oldest first: id, kind, started_at, pid; how many jobs
    ended with each status)."""
    running = list(db.query("SELECT id, kind, started_at, pid FROM jobs WHERE status = "
                            "'running' ORDER BY id"))
    ended = {status: n for status, n in db.execute(
        "SELECT status, COUNT(*) FROM jobs WHERE status != 'running' GROUP BY status "
        "ORDER BY status")}
    return running, ended


# --- model scores -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelScore:
    candidate_id: int
    scorer: str
    """Which model gave the score: ``bt:<abs dir>`` or ``armorm:<abs dir>``."""
    score: float
    objectives: dict[str, float] | None = None
    """Per-objective rewards for multi-objective scorers (ArmoRM), else None."""


@dataclass(frozen=True)
class CandidateToScore:
    candidate_id: int
    prompt_id: int
    messages: list[dict]
    """The prompt conversation; the candidate's text is the assistant reply to it."""
    text: str


def put_model_scores(db: sqlite_utils.Database, scores: Iterable[ModelScore]) -> int:
    """Stores scores in one transaction, replacing an earlier score by the same scorer for the
    same candidate. Returns how many were written."""
    now = time.time()
    written = 0
    with transaction(db):
        for s in scores:
            db.execute(
                "INSERT INTO model_scores (candidate_id, scorer, score, objectives, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (candidate_id, scorer) DO UPDATE SET "
                "score = excluded.score, objectives = excluded.objectives, "
                "created_at = excluded.created_at",
                [s.candidate_id, s.scorer, float(s.score),
                 None if s.objectives is None else canonical_json(s.objectives), now],
            )
            written += 1
    return written


def model_scores(
    db: sqlite_utils.Database, scorer: str, candidate_ids: Iterable[int] | None = None
) -> dict[int, ModelScore]:
    """Scores by ``scorer``, keyed by candidate id (all of them, or those in candidate_ids)."""
    rows = db.execute(
        "SELECT candidate_id, scorer, score, objectives FROM model_scores WHERE scorer = ?",
        [scorer],
    )
    wanted = None if candidate_ids is None else set(candidate_ids)
    return {
        r[0]: ModelScore(r[0], r[1], r[2], None if r[3] is None else json.loads(r[3]))
        for r in rows if wanted is None or r[0] in wanted
    }


def model_scorers(db: sqlite_utils.Database) -> dict[str, int]:
    """Each scorer that has written scores, with how many candidates it scored."""
    rows = db.execute("SELECT scorer, COUNT(*) FROM model_scores GROUP BY scorer ORDER BY scorer")
    return {r[0]: r[1] for r in rows}


def _unscored_where(scorer: str, run_id: int | None, rescore: bool) -> tuple[str, list]:
    where, params = [], []
    if run_id is not None:
        where.append("c.run_id = ?")
        params.append(run_id)
    if not rescore:
        where.append("NOT EXISTS (SELECT 1 FROM model_scores s "
                     "WHERE s.candidate_id = c.id AND s.scorer = ?)")
        params.append(scorer)
    return (" WHERE " + " AND ".join(where)) if where else "", params


def candidates_to_score(
    db: sqlite_utils.Database, scorer: str, *, run_id: int | None = None, rescore: bool = False
) -> list[CandidateToScore]:
    """Candidates (of one run, or all) with their prompts, leaving out those ``scorer`` has
    already scored unless ``rescore``."""
    where, params = _unscored_where(scorer, run_id, rescore)
    rows = db.execute("SELECT c.id, c.prompt_id, p.messages, c.text FROM candidates c "
                      "JOIN prompts p ON p.id = c.prompt_id" + where + " ORDER BY c.id", params)
    return [CandidateToScore(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]


def candidate_lengths(
    db: sqlite_utils.Database, scorer: str, *, run_id: int | None = None, rescore: bool = False
) -> dict[int, int]:
    """The candidates ``candidates_to_score`` would return, as id -> characters of prompt and
    reply (to split scoring work by length without reading every text)."""
    where, params = _unscored_where(scorer, run_id, rescore)
    rows = db.execute("SELECT c.id, length(p.messages) + length(c.text) FROM candidates c "
                      "JOIN prompts p ON p.id = c.prompt_id" + where, params)
    return {r[0]: r[1] for r in rows}


def candidates_by_id(db: sqlite_utils.Database, ids: Sequence[int]) -> list[CandidateToScore]:
    """These candidates with their prompts, in the order of ``ids``."""
    found: dict[int, CandidateToScore] = {}
    for start in range(0, len(ids), 500):  # SQLite caps the parameters of one statement
        chunk = list(ids[start:start + 500])
        rows = db.execute(
            "SELECT c.id, c.prompt_id, p.messages, c.text FROM candidates c JOIN prompts p "
            f"ON p.id = c.prompt_id WHERE c.id IN ({','.join('?' * len(chunk))})", chunk)
        found.update((r[0], CandidateToScore(r[0], r[1], json.loads(r[2]), r[3])) for r in rows)
    return [found[i] for i in ids]


def current_policy(db: sqlite_utils.Database) -> str | None:
    """The newest policy iteration's model folder (``rankloop loop``), None before the first."""
    if not db["policy_iterations"].exists():
        return None
    row = db.execute("SELECT model FROM policy_iterations ORDER BY iteration DESC LIMIT 1"
                     ).fetchone()
    return row[0] if row else None


def next_iteration(db: sqlite_utils.Database) -> int:
    """The number the next recorded policy iteration gets (1 for the first)."""
    row = db.execute("SELECT MAX(iteration) FROM policy_iterations").fetchone()
    return (row[0] or 0) + 1


def record_iteration(db: sqlite_utils.Database, *, iteration: int, algorithm: str,
                     base_model: str, model: str, run_id: int | None, scorer: str | None,
                     report: dict) -> None:
    """Records a finished policy iteration: its model becomes the current policy."""
    with transaction(db):
        db.execute(
            "INSERT INTO policy_iterations (iteration, algorithm, base_model, model, run_id, "
            "scorer, report, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [iteration, algorithm, base_model, model, run_id, scorer, json.dumps(report),
             time.time()])


def iteration_reports(db: sqlite_utils.Database) -> list[dict]:
    """Every recorded iteration's report, oldest first."""
    return [json.loads(row[0]) for row in db.execute(
        "SELECT report FROM policy_iterations ORDER BY iteration") if row[0]]
