"""Several RankLoop databases into one, and the prompt shards that produce them.

Generation beyond one machine: each node runs ``rankloop generate --shard i/n`` on the same
prompt source into its own database; ``merge_databases`` then copies each node's prompts,
runs, candidates, scores and (later) users, labeling items, assignments and rankings into one
database. Rows are matched by what identifies them, not by their ids, so nothing is stored
twice:

    prompts            prompt_hash                 generation_runs   settings_hash
    candidates         (prompt, run, idx)          model_scores      (candidate, scorer)
    users              name                        items             (prompt, run)
    assignments        (item, user)                rankings          (user, prompt, order
    comparisons        with their new ranking                            shown, submitted at)

References (candidate ids inside rankings' and assignments' JSON lists too) are rewritten to
the target's ids. A row that already exists keeps the target's version; candidates whose text
differs from the target's are counted as conflicts. Each source is merged in one transaction.
Policy iterations and jobs describe one database's history and are not copied.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from data import store
from data.errors import ConfigError


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with 0 <= i < n."""
    index, sep, count = str(text).partition("/")
    try:
        index, count = int(index), int(count)
    except ValueError:
        index = count = -1
    if not sep or count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard must be i/n with 0 <= i < n (e.g. 0/2 and 1/2), got {text!r}")
    return index, count


def in_shard(messages, index: int, count: int) -> bool:
    """Whether a prompt belongs to shard ``index`` of ``count``: by its hash, so every node
    splits one source the same way whatever order or subset it reads."""
    return int(store.prompt_hash(messages), 16) % count == index


@dataclass
class MergeSummary:
    source: str
    added: dict[str, int] = field(default_factory=dict)
    """New rows per table."""
    existing: dict[str, int] = field(default_factory=dict)
    """Rows the target already had, per table."""
    conflicts: int = 0
    """Candidates whose text differs from the target's row with the same prompt, run and idx."""

    def line(self) -> str:
        parts = [f"{table} {self.added.get(table, 0)} new / {self.existing.get(table, 0)} known"
                 for table in TABLES if self.added.get(table) or self.existing.get(table)]
        text = f"{self.source}: " + (", ".join(parts) or "nothing to merge")
        if self.conflicts:
            text += (f"; {self.conflicts} candidates differ from the target's "
                     "(the target's kept)")
        return text


# Tables in the order their references need, with the columns that identify a row.
TABLES = ("prompts", "generation_runs", "users", "candidates", "model_scores", "items",
          "assignments", "rankings", "comparisons")
_KEYS = {
    "prompts": ("prompt_hash",),
    "generation_runs": ("settings_hash",),
    "users": ("name",),
    "candidates": ("prompt_id", "run_id", "idx"),
    "model_scores": ("candidate_id", "scorer"),
    "items": ("prompt_id", "run_id"),
    "assignments": ("item_id", "user_id"),
    # Not submission_key: the app's keys name an assignment id, which is per database.
    "rankings": ("user_id", "prompt_id", "candidate_ids", "submitted_at"),
}
_REFERENCES = {  # column -> table whose ids it holds
    "candidates": {"prompt_id": "prompts", "run_id": "generation_runs",
                   "duplicate_of": "candidates", "author_id": "users"},
    "model_scores": {"candidate_id": "candidates"},
    "items": {"prompt_id": "prompts", "run_id": "generation_runs"},
    "assignments": {"item_id": "items", "user_id": "users"},
    "rankings": {"user_id": "users", "prompt_id": "prompts", "demonstration_id": "candidates",
                 "item_id": "items", "assignment_id": "assignments"},
    "comparisons": {"ranking_id": "rankings", "prompt_id": "prompts",
                    "chosen_id": "candidates", "rejected_id": "candidates"},
}
_CANDIDATE_LISTS = {"rankings": "candidate_ids", "assignments": "candidate_ids"}


def _open_source(path: str) -> tuple[sqlite3.Connection, set[str]]:
    """A read-only connection to a source database and its table names."""
    if not Path(path).is_file():
        raise store.StoreError(f"database {path} does not exist")
    try:
        conn = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise store.StoreError(f"cannot read database {path}: {exc}") from exc
    if "prompts" not in tables:
        conn.close()
        raise store.StoreError(f"{path} is not a RankLoop database (no prompts table)")
    return conn, tables


def merge_database(target, source_path: str) -> MergeSummary:
    """Copies ``source_path`` into the open ``target`` store in one transaction."""
    if Path(source_path).resolve() == Path(target.conn.execute(
            "PRAGMA database_list").fetchone()[2] or "").resolve():
        raise ConfigError(f"{source_path} is the target database itself")
    source, tables = _open_source(source_path)
    summary = MergeSummary(source_path)
    ids: dict[str, dict[int, int]] = {t: {} for t in TABLES}
    try:
        with store.transaction(target):
            for table in TABLES:
                if table in tables and target[table].exists():
                    _merge_table(target, source, table, ids, summary)
            store.add_items(target)  # candidates from a source that had no items yet
    finally:
        source.close()
    return summary


def _merge_table(target, source, table: str, ids: dict, summary: MergeSummary) -> None:
    columns = [c for c in target[table].columns_dict if c != "id"]
    source_columns = {r[1] for r in source.execute(f"PRAGMA table_info({table})")}
    columns = [c for c in columns if c in source_columns]
    references = _REFERENCES.get(table, {})
    key = _KEYS.get(table)
    known = {}
    if key:
        known = {tuple(r[:-1]): r[-1] for r in target.execute(
            f"SELECT {', '.join(key)}, id FROM {table}")}
    added = existing = 0
    for row in source.execute(f"SELECT * FROM {table} ORDER BY id"):
        values = {c: row[c] for c in columns}
        if table == "comparisons" and row["ranking_id"] not in ids["rankings"]:
            continue  # its ranking was already there, with its own comparisons
        for column, referenced in references.items():
            if values.get(column) is not None:
                values[column] = ids[referenced][values[column]]
        if table in _CANDIDATE_LISTS and values.get(_CANDIDATE_LISTS[table]) is not None:
            column = _CANDIDATE_LISTS[table]
            values[column] = json.dumps([ids["candidates"][c] for c in json.loads(values[column])])
        identity = tuple(values[c] for c in key) if key else None
        if identity is not None and identity in known:
            target_id = known[identity]
            if table == "candidates":
                if target.execute("SELECT text FROM candidates WHERE id = ?",
                                  [target_id]).fetchone()[0] != values["text"]:
                    summary.conflicts += 1
            if table != "rankings":  # a known ranking's comparisons are the target's
                ids[table][row["id"]] = target_id
            existing += 1
            continue
        if table == "rankings" and values.get("submission_key") is not None:
            values["submission_key"] = _submission_key(target, values, row, ids)
        cursor = target.execute(
            f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
            list(values.values()))
        ids[table][row["id"]] = cursor.lastrowid
        if identity is not None:
            known[identity] = cursor.lastrowid
        added += 1
    summary.added[table], summary.existing[table] = added, existing


def _submission_key(target, values: dict, row, ids: dict) -> str:
    """The vote's submission key in the target: the app's ``assignment:N`` names the target's
    assignment; another key already taken there gets the source ranking's id appended."""
    key = values["submission_key"]
    if key.startswith("assignment:") and values.get("assignment_id") is not None:
        return f"assignment:{values['assignment_id']}"
    if target.execute("SELECT 1 FROM rankings WHERE submission_key = ?", [key]).fetchone():
        return f"{key}#merged-{row['id']}"
    return key


def merge_databases(target_path: str, sources: list[str]) -> list[MergeSummary]:
    """Merges each source into ``target_path`` (created if missing), one transaction each."""
    for path in sources:
        _open_source(path)[0].close()  # every source readable before anything is written
    target = store.open_store(target_path)
    try:
        return [merge_database(target, path) for path in sources]
    finally:
        target.close()
