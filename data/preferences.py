"""Preference pairs: TRL-format files and datasets, and the labeling app's comparisons.

A pair is a prompt and two responses, one preferred over the other. Files follow TRL's two
formats:

- conversational: ``chosen`` and ``rejected`` are chat message lists. The prompt is the
  ``prompt`` column (a message list, or a string meaning one user turn); without it, the
  messages that chosen and rejected share at the start are the prompt. When both responses
  repeat the prompt (UltraFeedback-style full conversations), the repetition is removed.
- standard: ``chosen`` and ``rejected`` are strings, with an optional ``prompt`` string
  prepended to both. These are raw text: no chat template is applied to them.

An optional ``margin`` column (a number) asks the reward of chosen to lead by that much.

Rows whose two responses are identical, or whose response is empty, teach nothing: they are
dropped and counted, and a source where nothing usable remains is an error. Reading never
touches a model.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from data.errors import ConfigError
from data.prompts import ROLES, PromptSourceError, read_rows
from data.votes import LABEL_COMPARISONS

DROP_IDENTICAL = "identical chosen/rejected"
DROP_EMPTY = "empty response"
DROP_DISAGREED = "annotators disagree or only one judged"

Messages = list[dict]


class PreferenceSourceError(ConfigError):
    """Preference data that cannot be used, with a message meant for the user."""


@dataclass(frozen=True)
class PreferencePair:
    prompt: Messages | str
    """The conversation before the responses (chat) or the text before them (raw; may be "")."""
    chosen: Messages | str
    """The preferred response: assistant message(s) for chat pairs, a string for raw text."""
    rejected: Messages | str
    margin: float | None = None
    """How far the chosen reward should lead; None means no margin."""
    tie: bool = False
    """Judged equally good: chosen/rejected is an arbitrary order."""
    source_id: str | None = None
    """Row number in the file, or ``comparison:<id>`` for the app's pairs."""
    chosen_candidate_id: int | None = None
    rejected_candidate_id: int | None = None

    @property
    def is_chat(self) -> bool:
        return isinstance(self.chosen, list)

    def chosen_conversation(self) -> Messages | str:
        """Prompt and chosen response together, as a reward model reads them."""
        return self.prompt + self.chosen

    def rejected_conversation(self) -> Messages | str:
        return self.prompt + self.rejected

    def prompt_key(self) -> str:
        """Identifies the prompt, so held-out splits keep every pair of a prompt together."""
        if self.is_chat:
            return json.dumps(self.prompt, sort_keys=True, ensure_ascii=False)
        if self.prompt:
            return self.prompt
        return _common_prefix(self.chosen, self.rejected)


@dataclass
class PreferenceLoad:
    pairs: list[PreferencePair]
    source: str
    dropped: dict[str, int] = field(default_factory=dict)
    """Rows left out, by reason."""
    weights: list[float] | None = None
    """Per-pair training weights (their annotators'), aligned with ``pairs``; None: all 1."""

    @property
    def ties(self) -> int:
        return sum(p.tie for p in self.pairs)

    def drop(self, reason: str, count: int = 1) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    def describe_drops(self) -> str:
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items())) or "none"


# --- files and datasets ------------------------------------------------------------------------

def load_preference_file(
    source: str, *, split: str = "train", limit: int | None = None
) -> PreferenceLoad:
    """Reads TRL-format preference pairs from a ``.jsonl``/``.json``/``.csv``/``.parquet`` file,
    a ``save_to_disk`` folder (``split`` picks from a DatasetDict) or a Hub dataset id."""
    try:
        rows, label = read_rows(source, split, what="preference")
    except PromptSourceError as exc:  # the shared readers speak of prompts; same message
        raise PreferenceSourceError(str(exc)) from None
    return rows_to_pairs(rows, label, limit=limit)


def rows_to_pairs(rows: Sequence[dict], label: str, *, limit: int | None = None) -> PreferenceLoad:
    """Turns dict rows in either TRL format into pairs; see the module docstring."""
    rows = list(rows)
    if not rows:
        raise PreferenceSourceError(f"{label} contains no rows")
    columns = list(rows[0])
    missing = [c for c in ("chosen", "rejected") if c not in columns]
    if missing:
        raise PreferenceSourceError(
            f"{label} has no column {' or '.join(map(repr, missing))} "
            f"(columns: {', '.join(map(str, columns))}); preference data needs 'chosen' and "
            "'rejected', and optionally 'prompt' and 'margin'"
        )
    load = PreferenceLoad(pairs=[], source=label)
    for number, row in enumerate(rows, start=1):
        if limit is not None and len(load.pairs) >= limit:
            break
        where = f"{label} row {number}"
        pair_or_reason = _row_to_pair(row, where)
        if isinstance(pair_or_reason, str):
            load.drop(pair_or_reason)
        else:
            load.pairs.append(pair_or_reason)
    if not load.pairs:
        raise PreferenceSourceError(
            f"{label} has no usable preference pairs (dropped: {load.describe_drops()})"
        )
    return load


def _row_to_pair(row: dict, where: str) -> PreferencePair | str:
    """A pair, or the reason the row is dropped."""
    chosen, rejected, prompt = row.get("chosen"), row.get("rejected"), row.get("prompt")
    margin = _margin(row.get("margin"), where)
    source_id = str(row["id"]) if row.get("id") is not None else where.rsplit(" ", 1)[-1]
    if isinstance(chosen, list) or isinstance(rejected, list):
        chosen = _messages(chosen, f"{where} 'chosen'")
        rejected = _messages(rejected, f"{where} 'rejected'")
        if prompt is None or prompt == "":
            shared = _common_message_prefix(chosen, rejected)
            prompt_messages = chosen[:shared]
        elif isinstance(prompt, str):
            prompt_messages = [{"role": "user", "content": prompt}]
        else:
            prompt_messages = _messages(prompt, f"{where} 'prompt'")
        # Full conversations that repeat the prompt: keep only the responses.
        n = len(prompt_messages)
        if chosen[:n] == prompt_messages and rejected[:n] == prompt_messages:
            chosen, rejected = chosen[n:], rejected[n:]
        if not _has_text(chosen) or not _has_text(rejected):
            return DROP_EMPTY
        if chosen == rejected:
            return DROP_IDENTICAL
        return PreferencePair(prompt_messages, chosen, rejected, margin, source_id=source_id)
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise PreferenceSourceError(
            f"{where}: 'chosen' and 'rejected' must both be strings or both chat message lists"
        )
    if isinstance(prompt, list):  # chat prompt with plain-text answers: one assistant turn each
        prompt_messages = _messages(prompt, f"{where} 'prompt'")
        if not chosen.strip() or not rejected.strip():
            return DROP_EMPTY
        if chosen.strip() == rejected.strip():
            return DROP_IDENTICAL
        return PreferencePair(prompt_messages, [_assistant(chosen)], [_assistant(rejected)],
                              margin, source_id=source_id)
    if prompt is not None and not isinstance(prompt, str):
        raise PreferenceSourceError(f"{where}: 'prompt' must be a string or a chat message list")
    prompt = prompt or ""
    shared = len(_common_prefix(chosen, rejected)) if not prompt else 0
    if not chosen[shared:].strip() or not rejected[shared:].strip():
        return DROP_EMPTY
    if chosen == rejected:
        return DROP_IDENTICAL
    return PreferencePair(prompt, chosen, rejected, margin, source_id=source_id)


def _messages(value, where: str) -> Messages:
    if not isinstance(value, list):
        raise PreferenceSourceError(f"{where} must be a chat message list, like the other column")
    out = []
    for turn in value:
        if not (isinstance(turn, dict) and turn.get("role") in ROLES
                and isinstance(turn.get("content"), str)):
            raise PreferenceSourceError(
                f"{where}: a chat message must be {{'role': one of {ROLES}, 'content': str}}"
            )
        out.append({"role": turn["role"], "content": turn["content"]})
    return out


def _margin(value, where: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise PreferenceSourceError(f"{where}: 'margin' must be a number, not {value!r}") from None


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _has_text(messages: Messages) -> bool:
    return bool(messages) and any(m["content"].strip() for m in messages)


def _common_message_prefix(a: Messages, b: Messages) -> int:
    n = 0
    while n < min(len(a), len(b)) - 1 and a[n] == b[n]:  # keep at least one response turn
        n += 1
    return n


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


# --- the app's database -----------------------------------------------------------------------

def load_db_pairs(db, *, agreed_only: bool = False) -> PreferenceLoad:
    """Pairs from the app's ``comparisons``, each with its prompt and the two candidates' texts.

    Every comparison of each label vote is one pair (ties flagged; the rules of what counts,
    such as latest versions only and no gold items, are ``data.votes``'), so a pair several
    annotators judged counts once per judgment. ``agreed_only`` keeps instead one pair per candidate pair that at least
    two annotators judged, all in the same direction and none as a tie; the rest are counted
    as dropped.
    """
    label = f"database {_db_file(db)}"
    if "comparisons" not in db.table_names():
        raise PreferenceSourceError(f"{label} has no comparisons table; it is not a RankLoop store")
    rows = db.execute(
        "SELECT c.id, c.chosen_id, c.rejected_id, c.tie, r.user_id, p.messages, "
        f"ch.text, rj.text FROM {LABEL_COMPARISONS} c "
        "JOIN rankings r ON r.id = c.ranking_id "
        "JOIN prompts p ON p.id = c.prompt_id "
        "JOIN candidates ch ON ch.id = c.chosen_id "
        "JOIN candidates rj ON rj.id = c.rejected_id "
        "ORDER BY c.id"
    ).fetchall()
    if not rows:
        raise PreferenceSourceError(
            f"{label} has no ranked pairs yet; rank candidates in the app first, or train on "
            "a preference file with --data"
        )
    load = PreferenceLoad(pairs=[], source=label)
    if agreed_only:
        rows = _agreed_rows(rows, load)
    for comparison_id, chosen_id, rejected_id, tie, _user, messages, chosen, rejected in rows:
        if not chosen.strip() or not rejected.strip():
            load.drop(DROP_EMPTY)
            continue
        if chosen.strip() == rejected.strip():
            load.drop(DROP_IDENTICAL)
            continue
        load.pairs.append(PreferencePair(
            json.loads(messages), [_assistant(chosen)], [_assistant(rejected)],
            tie=bool(tie), source_id=f"comparison:{comparison_id}",
            chosen_candidate_id=chosen_id, rejected_candidate_id=rejected_id,
        ))
    if not load.pairs:
        raise PreferenceSourceError(
            f"{label} has no usable preference pairs (dropped: {load.describe_drops()})"
        )
    return load


def _db_file(db) -> str:
    row = db.execute("PRAGMA database_list").fetchone()
    return (row[2] if row else "") or ":memory:"


def _agreed_rows(rows: list[tuple], load: PreferenceLoad) -> list[tuple]:
    """One row per candidate pair judged by ≥ 2 annotators who all chose the same side."""
    by_pair: dict[tuple[int, int], list[tuple]] = defaultdict(list)
    for row in rows:
        chosen_id, rejected_id = row[1], row[2]
        by_pair[(min(chosen_id, rejected_id), max(chosen_id, rejected_id))].append(row)
    kept = []
    for judgments in by_pair.values():
        winners = {None if row[3] else row[1] for row in judgments}
        annotators = {row[4] for row in judgments}
        if len(annotators) >= 2 and len(winners) == 1 and None not in winners:
            kept.append(judgments[0])
        else:
            load.drop(DROP_DISAGREED, len(judgments))
    return sorted(kept)
