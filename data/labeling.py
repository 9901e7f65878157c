"""Typed access to the labeling tables: users, the item queue, assignments and the vote log.

An *item* is one prompt with the k candidates of one generation run. An *assignment* hands an
item to an annotator with a shuffled candidate order; submitting it appends one ``rankings``
row and its derived ``comparisons`` in the same transaction. Every write that decides who gets
what runs under ``BEGIN IMMEDIATE``, so concurrent annotators never over-assign an item.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import sqlite_utils
from precis_i18n import get_profile

from data import queue_order, settings, store, votes
from data.errors import ConfigError
from data.rankings import Submission
from data.votes import Stored

ROLES = ("annotator", "admin")
HUMAN_BACKEND = store.HUMAN_BACKEND
MAX_CANDIDATES = 8
"""Candidates one item may have: the labeling page has this many slots, and generation
refuses a larger k up front."""


class LabelingError(Exception):
    """A labeling request that cannot be honoured, with a message meant for the user."""


# --- users ------------------------------------------------------------------------------------

MAX_NAME_LENGTH = 64
_USERNAME = get_profile("UsernameCasePreserved")


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    password_hash: str
    disabled: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def name_key(name: str) -> str:
    """What makes two user names the same account: NFKC, then case folded ("Ann", "ANN"
    and the full-width "Ａｎｎ" are one name)."""
    return unicodedata.normalize("NFKC", name).casefold()


def normalize_name(name: str) -> str:
    """The name as stored: checked by the PRECIS username profile of RFC 8265
    (``UsernameCasePreserved``, implemented by ``precis-i18n``), then NFKC. That profile
    allows letters, digits and ASCII punctuation and refuses spaces, control characters,
    symbols and every invisible (default-ignorable) code point, so no name can pass for
    another one."""
    if not isinstance(name, str):
        raise LabelingError("a user name is text")
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise LabelingError(f"a user name is 1-{MAX_NAME_LENGTH} characters")
    try:
        name = _USERNAME.enforce(name)
    except UnicodeError as exc:
        bad = name[exc.start] if isinstance(exc, UnicodeEncodeError) else ""
        found = f" (found U+{ord(bad):04X})" if bad else ""
        raise LabelingError("a user name is letters, digits and ASCII punctuation, without "
                            f"spaces, symbols, control or invisible characters{found}") from None
    name = unicodedata.normalize("NFKC", name)
    if not name or len(name) > MAX_NAME_LENGTH:
        raise LabelingError(f"a user name is 1-{MAX_NAME_LENGTH} characters")
    return name


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise LabelingError(f"role must be one of {', '.join(ROLES)}, not {role!r}")


def add_user(db: sqlite_utils.Database, name: str, role: str, password_hash: str) -> User:
    name = normalize_name(name)
    _check_role(role)
    with store.transaction(db):
        if db.execute("SELECT 1 FROM users WHERE name_key = ?", [name_key(name)]).fetchone():
            raise LabelingError(f"user {name!r} already exists (names ignore case and width)")
        cursor = db.execute(
            "INSERT INTO users (name, name_key, role, password_hash, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [name, name_key(name), role, password_hash, time.time()],
        )
    return User(cursor.lastrowid, name, role, password_hash)


_USER_COLUMNS = "id, name, role, password_hash, disabled_at IS NOT NULL"


def get_user(db: sqlite_utils.Database, name: str) -> User | None:
    """The account for ``name`` in any case or width, disabled or not."""
    if not isinstance(name, str) or not name.strip():
        return None
    key = name_key(name.strip())
    row = db.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE name_key = ? OR name = ? "
                     "ORDER BY name_key = ? DESC LIMIT 1", [key, name.strip(), key]).fetchone()
    return User(*row[:4], bool(row[4])) if row else None


def list_users(db: sqlite_utils.Database) -> list[User]:
    return [User(*r[:4], bool(r[4])) for r in db.execute(
        f"SELECT {_USER_COLUMNS} FROM users ORDER BY id")]


def user_count(db: sqlite_utils.Database) -> int:
    return db.execute("SELECT COUNT(*) FROM users").fetchone()[0]


def _existing_user(db: sqlite_utils.Database, name: str) -> User:
    user = get_user(db, name)
    if user is None:
        raise LabelingError(f"no user {name!r}")
    return user


def set_disabled(db: sqlite_utils.Database, name: str, disabled: bool) -> User:
    """Disables (or enables) an account; disabling ends its sessions in the same write."""
    with store.transaction(db):
        user = _existing_user(db, name)
        db.execute("UPDATE users SET disabled_at = ? WHERE id = ?",
                   [time.time() if disabled else None, user.id])
        if disabled:
            revoke_sessions(db, user.id)
    return _existing_user(db, user.name)


def set_role(db: sqlite_utils.Database, name: str, role: str) -> User:
    _check_role(role)
    with store.transaction(db):
        user = _existing_user(db, name)
        db.execute("UPDATE users SET role = ? WHERE id = ?", [role, user.id])
    return _existing_user(db, user.name)


def set_password_hash(db: sqlite_utils.Database, name: str, password_hash: str) -> User:
    """A new password; every session opened with the old one ends."""
    with store.transaction(db):
        user = _existing_user(db, name)
        db.execute("UPDATE users SET password_hash = ? WHERE id = ?", [password_hash, user.id])
        revoke_sessions(db, user.id)
    return _existing_user(db, user.name)


# --- login sessions -----------------------------------------------------------------------------

def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_session(db: sqlite_utils.Database, user_id: int, token: str, ttl_s: float,
                   client: str | None = None, *, now: float | None = None) -> None:
    now = time.time() if now is None else now
    with store.transaction(db):
        db.execute("INSERT INTO sessions (token_hash, user_id, created_at, expires_at, client) "
                   "VALUES (?, ?, ?, ?, ?)", [_token_hash(token), user_id, now, now + ttl_s,
                                              client])


def session_user(db: sqlite_utils.Database, token: str | None, *,
                 now: float | None = None) -> User | None:
    """The user of a live session: not expired, not revoked, account not disabled."""
    if not isinstance(token, str) or not token:
        return None
    now = time.time() if now is None else now
    row = db.execute(
        f"SELECT {', '.join('u.' + c for c in _USER_COLUMNS.split(', '))} FROM sessions s "
        "JOIN users u ON u.id = s.user_id WHERE s.token_hash = ? AND s.revoked_at IS NULL "
        "AND s.expires_at > ? AND u.disabled_at IS NULL", [_token_hash(token), now]).fetchone()
    return User(*row[:4], bool(row[4])) if row else None


def revoke_session(db: sqlite_utils.Database, token: str) -> None:
    with store.transaction(db):
        db.execute("UPDATE sessions SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS "
                   "NULL", [time.time(), _token_hash(token)])


def revoke_sessions(db: sqlite_utils.Database, user_id: int) -> int:
    """Ends every session of one user; returns how many were live."""
    with store.transaction(db):
        return db.execute("UPDATE sessions SET revoked_at = ? WHERE user_id = ? AND revoked_at "
                          "IS NULL", [time.time(), user_id]).rowcount


# --- items ------------------------------------------------------------------------------------

def sync_items(db: sqlite_utils.Database) -> int:
    """Creates an item for every (prompt, run) whose k candidates are all stored; returns how
    many were added. Storing candidates already does this (``store.add_candidates``); this is
    for stores written by other means (merges, bulk loads)."""
    return store.add_items(db)


def item_candidates(db: sqlite_utils.Database, item_id: int) -> list[dict]:
    """The item's generated candidates in idx order."""
    return list(db.query(
        "SELECT c.id, c.idx, c.text FROM candidates c JOIN items i "
        "ON c.prompt_id = i.prompt_id AND c.run_id = i.run_id WHERE i.id = ? ORDER BY c.idx",
        [item_id],
    ))


def add_gold_item(db: sqlite_utils.Database, messages: Sequence[dict], candidates: Sequence[str],
                  ranks: Sequence[int], source: str = "gold") -> int:
    """Stores a prompt with known candidates and their known ranking as a gold item."""
    if len(candidates) < 2 or len(ranks) != len(candidates):
        raise LabelingError("a gold item needs at least 2 candidates and one rank for each")
    if any(not 1 <= r <= len(candidates) for r in ranks):
        raise LabelingError(f"gold ranks must be between 1 and {len(candidates)}")
    with store.transaction(db):  # prompt, candidates and item appear together or not at all
        [prompt_id] = store.upsert_prompts(db, [(messages, source, None)])
        run_id = store.get_or_create_run(db, store.RunSettings(
            model="gold", backend="gold", k=len(candidates), temperature=0.0, top_p=1.0,
            max_new_tokens=0, seed=0))
        if db.execute("SELECT 1 FROM items WHERE prompt_id = ? AND is_gold = 1",
                      [prompt_id]).fetchone():
            raise LabelingError("this prompt already has a gold item")
        store.add_candidates(db, prompt_id, run_id,
                             [store.CandidateIn(text, 0, "stop") for text in candidates])
        cursor = db.execute(
            "INSERT INTO items (prompt_id, run_id, is_gold, gold_ranks, created_at) "
            "VALUES (?, ?, 1, ?, ?)", [prompt_id, run_id, json.dumps(list(ranks)), time.time()])
    return cursor.lastrowid


# --- assignments ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Assignment:
    id: int
    item_id: int
    prompt_id: int
    messages: list[dict]
    candidate_ids: list[int]
    """In the shuffled order shown to this annotator."""
    texts: list[str]
    """Aligned with candidate_ids."""
    shown_at: float
    is_gold: bool
    finish_reasons: tuple[str | None, ...] = ()
    """Aligned with candidate_ids: "stop", or "length" for a text cut off by the token limit."""


@dataclass(frozen=True)
class QueuePolicy:
    overlap: int = 1
    """Distinct annotators who rank each item (skips do not count)."""
    timeout_s: float = 30 * 60
    """An assignment not submitted within this time returns its item to the queue."""
    gold_rate: float = 0.0
    """Probability that the next item is a gold item, when one is left for the annotator."""

    def __post_init__(self):
        if self.overlap < 1:
            raise ConfigError(f"overlap must be at least 1, got {self.overlap}")
        if self.timeout_s <= 0:
            raise ConfigError("the assignment timeout must be positive")
        if not 0 <= self.gold_rate <= 1:
            raise ConfigError(f"gold rate must be in [0, 1], got {self.gold_rate}")


_OPEN_FOR_USER = """
    SELECT a.id FROM assignments a
    WHERE a.user_id = ? AND a.submitted_at IS NULL AND a.expires_at > ?
    ORDER BY a.shown_at DESC LIMIT 1
"""

# Items this user has not finished, with room left under the overlap: labels already given
# (skips excluded) plus live assignments held by others.
# Parameters: is_gold, user_id, user_id, now, overlap.
_AVAILABLE_WHERE = """
    i.is_gold = ? AND i.set_aside_at IS NULL
    AND NOT EXISTS (SELECT 1 FROM assignments mine WHERE mine.item_id = i.id
                    AND mine.user_id = ? AND mine.submitted_at IS NOT NULL)
    AND (SELECT COUNT(*) FROM assignments a WHERE a.item_id = i.id AND a.user_id != ?
         AND ((a.submitted_at IS NOT NULL AND a.skipped = 0)
              OR (a.submitted_at IS NULL AND a.expires_at > ?))) < ?
"""
# The next item: in the project's queue order (data/queue_order.py), which finishes items
# already started by others before opening new ones.
_COUNT_AVAILABLE = f"SELECT COUNT(*) FROM items i WHERE {_AVAILABLE_WHERE}"


def _kinds_in_order(db: sqlite_utils.Database, rng: random.Random) -> tuple:
    """Which kind of item to look for first: a blind comparison item (1) with the project's
    ``comparison_share``, else a ranking item (0); the other kind when the first has none
    left. (None,): the store has no comparison items, any item will do."""
    if not db.execute("SELECT 1 FROM items WHERE comparison = 1 AND is_gold = 0 "
                      "LIMIT 1").fetchone():
        return (None,)
    share = settings.get_setting(db, "comparison_share")
    return (1, 0) if rng.random() < share else (0, 1)


def next_assignment(
    db: sqlite_utils.Database, user_id: int, policy: QueuePolicy, *,
    now: float | None = None, rng: random.Random | None = None,
) -> Assignment | None:
    """The annotator's open assignment if any (a refresh resumes it), else a new one from the
    queue, else None when nothing is left for them."""
    now = time.time() if now is None else now
    rng = rng or random.Random()
    with store.transaction(db):
        row = db.execute(_OPEN_FOR_USER, [user_id, now]).fetchone()
        if row:
            return _load_assignment(db, row[0])
        want_gold = policy.gold_rate > 0 and rng.random() < policy.gold_rate
        kinds = _kinds_in_order(db, rng)
        item = None
        for gold in ((1, 0) if want_gold else (0,)):
            # Gold items are checks, not labels: any number of annotators may see one.
            overlap = 1 << 30 if gold else policy.overlap
            for comparison in ((None,) if gold else kinds):
                where, params = _AVAILABLE_WHERE, [gold, user_id, user_id, now, overlap]
                if comparison is not None:
                    where, params = where + " AND i.comparison = ?", params + [comparison]
                item = db.execute(queue_order.next_item_sql(db, where), params).fetchone()
                if item:
                    break
            if item:
                break
        if not item:
            return None
        item_id = item[0]
        candidate_ids = [c["id"] for c in item_candidates(db, item_id)]
        rng.shuffle(candidate_ids)
        expires = now + policy.timeout_s
        existing = db.execute("SELECT id FROM assignments WHERE item_id = ? AND user_id = ?",
                              [item_id, user_id]).fetchone()
        if existing:  # the user's own expired assignment: renew it, same order as before
            db.execute("UPDATE assignments SET expires_at = ? WHERE id = ?",
                       [expires, existing[0]])
            assignment_id = existing[0]
        else:
            assignment_id = db.execute(
                "INSERT INTO assignments (item_id, user_id, candidate_ids, shown_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [item_id, user_id, json.dumps(candidate_ids), now, expires],
            ).lastrowid
        return _load_assignment(db, assignment_id)


def set_aside(db: sqlite_utils.Database, assignment_id: int, reason: str, *,
              now: float | None = None) -> None:
    """Takes an assignment's item out of the queue for everyone (it cannot be shown) and
    releases the assignment, in one transaction; the item stays stored for an admin."""
    now = time.time() if now is None else now
    with store.transaction(db):
        row = db.execute("SELECT item_id FROM assignments WHERE id = ?",
                         [assignment_id]).fetchone()
        if row is None:
            return
        db.execute("UPDATE items SET set_aside_at = ?, set_aside_reason = ? WHERE id = ? AND "
                   "set_aside_at IS NULL", [now, reason[:500], row[0]])
        db.execute("UPDATE assignments SET expires_at = ? WHERE id = ? AND submitted_at IS NULL",
                   [now, assignment_id])


def set_aside_items(db: sqlite_utils.Database) -> list[dict]:
    """Items taken out of the queue, with why, for the admin."""
    return list(db.query("SELECT id, prompt_id, run_id, set_aside_at, set_aside_reason "
                         "FROM items WHERE set_aside_at IS NOT NULL ORDER BY id"))


def get_assignment(db: sqlite_utils.Database, assignment_id: int) -> Assignment | None:
    if not db.execute("SELECT 1 FROM assignments WHERE id = ?", [assignment_id]).fetchone():
        return None
    return _load_assignment(db, assignment_id)


def _load_assignment(db: sqlite_utils.Database, assignment_id: int) -> Assignment:
    a = db.execute(
        "SELECT a.item_id, i.prompt_id, a.candidate_ids, a.shown_at, i.is_gold "
        "FROM assignments a JOIN items i ON i.id = a.item_id WHERE a.id = ?", [assignment_id],
    ).fetchone()
    item_id, prompt_id, ids_json, shown_at, is_gold = a
    candidate_ids = json.loads(ids_json)
    rows = {r[0]: r[1:] for r in db.execute(
        "SELECT id, text, finish_reason FROM candidates "
        f"WHERE id IN ({','.join('?' * len(candidate_ids))})", candidate_ids,
    ).fetchall()}
    return Assignment(
        id=assignment_id, item_id=item_id, prompt_id=prompt_id,
        messages=store.prompt_messages(db, prompt_id), candidate_ids=candidate_ids,
        texts=[rows[c][0] for c in candidate_ids], shown_at=shown_at, is_gold=bool(is_gold),
        finish_reasons=tuple(rows[c][1] for c in candidate_ids),
    )


class AssignmentExpired(LabelingError):
    """A late submission that would give its item more rankings than the overlap allows."""


def active_time(seconds: float | None, shown_at: float | None, now: float) -> float | None:
    """What the page measured as active time on a task, at most the wall time since the task
    was shown: a larger figure is the browser's clock, not effort, so it is cut to the wall
    time rather than refused (refusing would lose the vote). None stays None (not measured)."""
    if seconds is None:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        raise LabelingError("the active time must be a number of seconds, 0 or more")
    return seconds if shown_at is None else min(float(seconds), max(0.0, now - shown_at))


def submit_assignment(
    db: sqlite_utils.Database, assignment_id: int, user_id: int, submission: Submission,
    *, overlap: int | None = None, now: float | None = None,
    active_seconds: float | None = None,
) -> Stored:
    """Appends the vote and its pairs in one transaction. Idempotent per assignment.

    An expired assignment is still accepted while its item has room under ``overlap``
    (rankings by others plus their live assignments); otherwise it raises AssignmentExpired
    and stores nothing. Skips never count against the overlap, so a late skip is kept.
    ``overlap=None`` accepts late submissions unconditionally (imports, tests).
    ``active_seconds``: the time the page saw the task visible and in use (``active_time``).
    """
    now = time.time() if now is None else now
    key = f"assignment:{assignment_id}"
    with store.transaction(db):
        row = db.execute(
            "SELECT a.user_id, a.item_id, a.candidate_ids, a.shown_at, i.prompt_id, "
            "a.expires_at, i.is_gold FROM assignments a JOIN items i ON i.id = a.item_id "
            "WHERE a.id = ?", [assignment_id],
        ).fetchone()
        if row is None or row[0] != user_id:
            raise LabelingError("this task is not assigned to you; reload the page")
        _, item_id, ids_json, shown_at, prompt_id, expires_at, is_gold = row
        done = votes.stored_vote(db, key)
        if done:
            return done
        if list(submission.candidate_ids) != json.loads(ids_json):
            raise LabelingError("the candidates changed since this task was shown; reload")
        if (overlap is not None and expires_at <= now and not submission.skipped
                and not is_gold):
            taken = db.execute(
                "SELECT COUNT(*) FROM assignments a WHERE a.item_id = ? AND a.user_id != ? "
                "AND ((a.submitted_at IS NOT NULL AND a.skipped = 0) "
                "OR (a.submitted_at IS NULL AND a.expires_at > ?))",
                [item_id, user_id, now]).fetchone()[0]
            if taken >= overlap:
                raise AssignmentExpired(
                    "this task expired and went to another annotator, who has the rankings "
                    "it needs")

        demonstration_id = None
        if submission.demonstration:
            demonstration_id = _add_demonstration(db, prompt_id, user_id,
                                                  submission.demonstration, now)
        # The model suggestion pinned when the task was shown, if any (data.suggestions).
        pinned = db.execute("SELECT suggestion FROM assignments WHERE id = ?",
                            [assignment_id]).fetchone()[0]
        suggested = json.loads(pinned) if pinned else None
        return votes.append_vote(db, votes.Vote(
            submission_key=key, user_id=user_id, prompt_id=prompt_id, item_id=item_id,
            assignment_id=assignment_id, submission=submission,
            demonstration_id=demonstration_id, shown_at=shown_at, submitted_at=now,
            suggested_ranks=suggested and suggested["ranks"],
            suggestion_scorer=suggested and suggested["scorer"],
            active_seconds=active_time(active_seconds, shown_at, now)))


def _add_demonstration(db, prompt_id: int, user_id: int, text: str, now: float) -> int:
    run_id = store.get_or_create_run(db, _HUMAN_RUN)
    idx = db.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM candidates WHERE prompt_id = ? "
                     "AND run_id = ?", [prompt_id, run_id]).fetchone()[0]
    return db.execute(
        "INSERT INTO candidates (prompt_id, run_id, idx, text, token_count, finish_reason, "
        "created_at, author_id) VALUES (?, ?, ?, ?, NULL, 'human', ?, ?)",
        [prompt_id, run_id, idx, text, now, user_id],
    ).lastrowid


# Demonstrations live in one run of their own, so they never form an item to be ranked.
_HUMAN_RUN = store.RunSettings(model="human", backend=HUMAN_BACKEND, k=1, temperature=0.0,
                               top_p=1.0, max_new_tokens=0, seed=0)


# --- progress and status ------------------------------------------------------------------------

def progress(db: sqlite_utils.Database, user_id: int, policy: QueuePolicy,
             now: float | None = None) -> tuple[int, int]:
    """(items this user has submitted, non-gold items still open to them)."""
    now = time.time() if now is None else now
    done = db.execute("SELECT COUNT(*) FROM assignments WHERE user_id = ? AND submitted_at "
                      "IS NOT NULL", [user_id]).fetchone()[0]
    left = db.execute(_COUNT_AVAILABLE, [0, user_id, user_id, now, policy.overlap]).fetchone()[0]
    return done, left


def overview(db: sqlite_utils.Database, now: float | None = None) -> dict[str, int]:
    """What the labeling side holds, read only (``rankloop status``): items ready to rank
    (every prompt whose run has all k candidates, whether or not a page has asked for it
    yet), gold items, items ranked by at least one annotator, items held by a live
    assignment, items set aside; users by role and disabled; votes by kind."""
    now = time.time() if now is None else now

    def one(sql: str, params=()) -> int:
        return db.execute(sql, params).fetchone()[0] or 0

    return {
        "items_ready": one(
            "SELECT COUNT(*) FROM (SELECT 1 FROM candidates c JOIN generation_runs r "
            "ON r.id = c.run_id WHERE r.backend NOT IN (?, 'gold') "
            "GROUP BY c.prompt_id, c.run_id HAVING COUNT(*) >= MAX(r.k))", [HUMAN_BACKEND]),
        "gold_items": one("SELECT COUNT(*) FROM items WHERE is_gold = 1"),
        "items_ranked": one(f"SELECT COUNT(DISTINCT item_id) FROM {store.LATEST_RANKINGS} "
                            "WHERE skipped = 0 AND item_id IS NOT NULL"),
        "items_in_progress": one("SELECT COUNT(DISTINCT item_id) FROM assignments "
                                 "WHERE submitted_at IS NULL AND expires_at > ?", [now]),
        "items_set_aside": one("SELECT COUNT(*) FROM items WHERE set_aside_at IS NOT NULL"),
        "users": one("SELECT COUNT(*) FROM users"),
        "admins": one("SELECT COUNT(*) FROM users WHERE role = 'admin'"),
        "disabled_users": one("SELECT COUNT(*) FROM users WHERE disabled_at IS NOT NULL"),
        "rankings": one(f"SELECT COUNT(*) FROM {store.LATEST_RANKINGS} WHERE skipped = 0"),
        "skips": one(f"SELECT COUNT(*) FROM {store.LATEST_RANKINGS} WHERE skipped = 1"),
    }


def rankings_for_agreement(db: sqlite_utils.Database) -> list[dict]:
    """Non-skipped ranked submissions (latest versions): item, annotator, candidate ids, ranks,
    times (shown, submitted, active seconds) and the candidates' characters."""
    rows = db.query(
        "SELECT r.item_id, u.name AS annotator, r.candidate_ids, r.ranks, i.is_gold, "
        "i.gold_ranks, r.submitted_at, r.shown_at, r.active_seconds, (SELECT SUM(LENGTH(c.text)) "
        "FROM candidates c WHERE c.id IN (SELECT value FROM json_each(r.candidate_ids))) AS chars "
        "FROM latest_rankings r JOIN users u ON u.id = r.user_id "
        "JOIN items i ON i.id = r.item_id WHERE r.skipped = 0 AND r.ranks IS NOT NULL "
        "ORDER BY r.id")
    out = []
    for row in rows:
        gold = json.loads(row["gold_ranks"]) if row["gold_ranks"] else None
        out.append({
            **row, "candidate_ids": json.loads(row["candidate_ids"]),
            "ranks": json.loads(row["ranks"]), "gold_ranks": gold,
            "gold_order": [c["id"] for c in item_candidates(db, row["item_id"])] if gold else None,
        })
    return out


def per_annotator_counts(db: sqlite_utils.Database) -> list[dict]:
    """Per user, over the latest version of each vote."""
    return list(db.query(
        "SELECT u.name AS annotator, u.role, "
        "SUM(r.skipped = 0) AS ranked, SUM(r.skipped) AS skipped, "
        "SUM(r.all_bad) AS all_bad, SUM(r.demonstration_id IS NOT NULL) AS demonstrations "
        "FROM users u LEFT JOIN latest_rankings r ON r.user_id = u.id GROUP BY u.id "
        "ORDER BY u.id"))


def submission_times(db: sqlite_utils.Database) -> list[float]:
    """When each vote was first submitted (a revision does not add a vote)."""
    return [r[0] for r in db.execute(
        "SELECT submitted_at FROM rankings WHERE supersedes IS NULL ORDER BY submitted_at")]
