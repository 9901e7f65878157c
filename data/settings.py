"""Project settings (set by admins) and per-annotator preferences, stored as JSON values.

Every key is declared here with its default and its check, so a typo or a value of the wrong
type is refused with a clear error instead of being stored. Reading a key that was never set
gives its default.

Project keys (``project_settings`` table; ``data.queue_order`` keeps the queue order there
too):

- ``guidelines`` (str): markdown shown to annotators in a collapsible panel; at most
  ``MAX_GUIDELINES_CHARS`` characters. It is the admin's text: show it as markdown with raw
  HTML escaped, like every other text in the app.
- ``suggestions`` (bool): pre-fill rankings from reward-model scores (``data.suggestions``).
- ``suggestion_scorer`` (str or None): the scorer whose scores suggestions use; None takes,
  per item, the scorer that most recently scored all of its candidates.
- ``comparison_share`` (float in [0, 1]): how often the queue offers a blind comparison item
  (``rankloop arena``) before a ranking item; either kind is served when the other runs out.

Per-user keys (``user_settings`` table):

- ``layout`` (str): how candidates are laid out, one of ``LAYOUTS``.
- ``guidelines_read`` (str or None): the guidelines version (``guidelines_version``) the
  annotator last opened; the Rank screen marks the guidelines as changed until it matches.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlite_utils

from data import store
from data.errors import ConfigError

LAYOUTS = ("side-by-side", "two-up", "stacked")
MAX_GUIDELINES_CHARS = 100_000


class SettingsError(ConfigError):
    """A setting that does not exist or a value it cannot take, with a message for the user."""


def _text(limit: int) -> Callable[[str, object], object]:
    def check(key: str, value: object) -> object:
        if not isinstance(value, str):
            raise SettingsError(f"{key} must be text")
        if len(value) > limit:
            raise SettingsError(f"{key} is too long ({len(value)} characters; at most {limit})")
        return value
    return check


def _flag(key: str, value: object) -> object:
    if not isinstance(value, bool):
        raise SettingsError(f"{key} must be true or false, not {value!r}")
    return value


def _scorer(key: str, value: object) -> object:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or ":" not in value:
        raise SettingsError(f"{key} is a scorer like bt:FOLDER or armorm:FOLDER, or empty")
    return value.strip()


def _share(key: str, value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise SettingsError(f"{key} is a share between 0 and 1, not {value!r}")
    return float(value)


def _choice(options: tuple[str, ...]) -> Callable[[str, object], object]:
    def check(key: str, value: object) -> object:
        if value not in options:
            raise SettingsError(f"{key} must be one of {', '.join(options)}, not {value!r}")
        return value
    return check


@dataclass(frozen=True)
class Key:
    default: object
    check: Callable[[str, object], object]


def _overlap(key: str, value: object) -> object:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise SettingsError(f"{key} is a whole number of annotators from 1 to 100, not {value!r}")
    return value


PROJECT_KEYS: dict[str, Key] = {
    "guidelines": Key("", _text(MAX_GUIDELINES_CHARS)),
    "suggestions": Key(False, _flag),
    "suggestion_scorer": Key(None, _scorer),
    "comparison_share": Key(0.25, _share),
    # Annotators who rank each item, set in the console; None: the app's --overlap.
    "overlap": Key(None, _overlap),
}
def _version(key: str, value: object) -> object:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != VERSION_CHARS or not all(
            c in "0123456789abcdef" for c in value):
        raise SettingsError(f"{key} is a guidelines version ({VERSION_CHARS} hex digits)")
    return value


VERSION_CHARS = 12
USER_KEYS: dict[str, Key] = {
    "layout": Key(LAYOUTS[0], _choice(LAYOUTS)),
    "guidelines_read": Key(None, _version),
}


@dataclass(frozen=True)
class ProjectSettings:
    guidelines: str = ""
    suggestions: bool = False
    suggestion_scorer: str | None = None
    comparison_share: float = 0.25
    overlap: int | None = None
    """Annotators per item set in the console (None: the app's --overlap)."""


@dataclass(frozen=True)
class UserPreferences:
    layout: str = LAYOUTS[0]


def _key(keys: dict[str, Key], key: str) -> Key:
    if key not in keys:
        raise SettingsError(f"unknown setting {key!r}; known: {', '.join(sorted(keys))}")
    return keys[key]


def get_setting(db: sqlite_utils.Database, key: str) -> object:
    spec = _key(PROJECT_KEYS, key)
    row = db.execute("SELECT value FROM project_settings WHERE key = ?", [key]).fetchone()
    return spec.default if row is None else json.loads(row[0])


def set_setting(db: sqlite_utils.Database, key: str, value: object, *,
                by: str | None = None, now: float | None = None) -> object:
    """Checks and stores one project setting; returns the value as stored. ``by`` names who
    changed it (shown beside it in the admin console)."""
    value = _key(PROJECT_KEYS, key).check(key, value)
    with store.transaction(db):
        db.execute(
            "INSERT INTO project_settings (key, value, updated_at, updated_by) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            [key, json.dumps(value), time.time() if now is None else now, by])
    return value


def guidelines_version(text: str) -> str | None:
    """The version of a guidelines text: the first ``VERSION_CHARS`` hex digits of its SHA-256
    (the same text always has the same version); None for no guidelines."""
    if not (text or "").strip():
        return None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:VERSION_CHARS]


def current_guidelines(db: sqlite_utils.Database) -> tuple[str, str | None]:
    """The guidelines in force and their version."""
    text = get_setting(db, "guidelines")
    return text, guidelines_version(text)


def project_settings(db: sqlite_utils.Database) -> ProjectSettings:
    stored = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM project_settings")
              if k in PROJECT_KEYS}
    return ProjectSettings(**stored)


def setting_changes(db: sqlite_utils.Database) -> dict[str, tuple[float, str | None]]:
    """For each project setting ever set: (when, by whom) it last changed."""
    return {k: (t, by) for k, t, by in db.execute(
        "SELECT key, updated_at, updated_by FROM project_settings")}


def get_user_setting(db: sqlite_utils.Database, user_id: int, key: str) -> object:
    spec = _key(USER_KEYS, key)
    row = db.execute("SELECT value FROM user_settings WHERE user_id = ? AND key = ?",
                     [user_id, key]).fetchone()
    return spec.default if row is None else json.loads(row[0])


def set_user_setting(db: sqlite_utils.Database, user_id: int, key: str, value: object, *,
                     now: float | None = None) -> object:
    value = _key(USER_KEYS, key).check(key, value)
    with store.transaction(db):
        if not db.execute("SELECT 1 FROM users WHERE id = ?", [user_id]).fetchone():
            raise SettingsError(f"no user with id {user_id}")
        db.execute(
            "INSERT INTO user_settings (user_id, key, value, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (user_id, key) DO UPDATE SET value = excluded.value, "
            "updated_at = excluded.updated_at",
            [user_id, key, json.dumps(value), time.time() if now is None else now])
    return value


def user_preferences(db: sqlite_utils.Database, user_id: int) -> UserPreferences:
    stored = {k: json.loads(v) for k, v in db.execute(
        "SELECT key, value FROM user_settings WHERE user_id = ?", [user_id]) if k in USER_KEYS}
    return UserPreferences(**stored)
