"""Prompt sources: the bundled set, local files, Hugging Face datasets.

Every source is read into ``Prompt`` records whose ``messages`` is a chat conversation that
ends with a user turn. A source's rows may hold a plain string (``prompt`` column by default)
or a chat ``messages`` list; in a chat list, trailing assistant turns are dropped so the
conversation asks for the next assistant reply.

Reading never touches the database or a model: all errors surface before anything is written.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

BUNDLED = "bundled"
BUNDLED_FILE = Path(__file__).parent / "prompts" / "bundled.jsonl"
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
ROLES = ("system", "user", "assistant", "tool")


class PromptSourceError(Exception):
    """A prompt source that cannot be read, with a message meant for the user."""


@dataclass(frozen=True)
class Prompt:
    messages: list[dict]
    """The conversation so far, ending with a user turn."""
    source: str
    """Where it was read from (file path, dataset id or ``bundled``)."""
    source_id: str | None = None
    """Its id in the source (an ``id`` column, else the row number)."""


@dataclass
class PromptLoad:
    prompts: list[Prompt]
    dropped_empty: int = 0
    """Rows whose prompt was empty or only whitespace."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Other drops by reason, filled by later filters (e.g. ``too_long``)."""


def load_prompts(
    source: str | None = None,
    prompt_column: str = "prompt",
    *,
    split: str = "train",
    limit: int | None = None,
) -> PromptLoad:
    """Reads prompts from ``source`` (default: the bundled set).

    ``source`` is ``bundled``, a ``.jsonl``/``.json``/``.csv``/``.parquet`` file, a folder
    written by ``datasets.save_to_disk``, or a Hugging Face Hub dataset id.
    """
    source = source or BUNDLED
    if source == BUNDLED:
        rows, label = _read_jsonl(BUNDLED_FILE), BUNDLED
    else:
        rows, label = read_rows(source, split)
    return _to_prompts(rows, label, prompt_column, limit)


def read_rows(source: str, split: str = "train", *, what: str = "prompt"
              ) -> tuple[list[dict], str]:
    """Dict rows and a label for messages, from a ``.jsonl``/``.json``/``.csv``/``.parquet``
    file, a ``save_to_disk`` folder (``split`` picks from a DatasetDict) or a Hub dataset id.
    Every other dataset reader in RankLoop goes through here; ``what`` names the kind of file
    in the error for a missing path."""
    path = Path(source).expanduser()
    if path.is_file():
        return _read_file(path), str(path)
    if path.is_dir():
        return _read_saved_dataset(path, split), str(path)
    if path.suffix.lower() in FILE_SUFFIXES or source.startswith((".", "/", "~")):
        raise PromptSourceError(f"{what} file {source} does not exist")
    return _read_hub_dataset(source, split), source


# --- readers: each yields dict rows -----------------------------------------------------------

def _decode_error(path: Path, exc: UnicodeDecodeError, data: bytes) -> PromptSourceError:
    line = data.count(b"\n", 0, exc.start) + 1
    return PromptSourceError(
        f"{path} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at line {line}); "
        "re-encode the file as UTF-8"
    )


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc, data) from None


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptSourceError(f"{path} line {number}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise PromptSourceError(f"{path} line {number}: expected a JSON object per line")
        rows.append(row)
    return rows


def _read_json(path: Path) -> list[dict]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise PromptSourceError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
    if isinstance(data, dict):
        # {"data": [...]} / {"prompts": [...]}: a single list-valued key holds the rows.
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise PromptSourceError(f"{path}: expected a JSON list of objects")
        data = lists[0]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise PromptSourceError(f"{path}: expected a JSON list of objects")
    return data


def _read_csv(path: Path) -> list[dict]:
    text = _read_text(path)
    try:
        return list(csv.DictReader(text.splitlines()))
    except csv.Error as exc:
        raise PromptSourceError(f"{path}: malformed CSV ({exc})") from None


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise PromptSourceError(f"{path}: not a readable parquet file ({exc})") from None


def _read_file(path: Path) -> list[dict]:
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv,
               ".parquet": _read_parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise PromptSourceError(
            f"{path}: unsupported file type {path.suffix or '(none)'}; "
            f"use one of {', '.join(FILE_SUFFIXES)}"
        )
    return reader(path)


def _pick_split(dataset, split: str, label: str):
    from datasets import DatasetDict

    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise PromptSourceError(
                f"{label} has no split {split!r}; available: {', '.join(dataset)}"
            )
        return dataset[split]
    return dataset


def _read_saved_dataset(path: Path, split: str) -> list[dict]:
    from datasets import load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise PromptSourceError(
            f"{path} is a folder but not a dataset saved with save_to_disk ({exc})"
        ) from None
    return _pick_split(dataset, split, str(path)).to_list()


def _read_hub_dataset(name: str, split: str) -> list[dict]:
    from datasets import load_dataset

    try:
        dataset = load_dataset(name, split=split)
    except Exception as exc:  # offline, unknown id, gated: all reach the user as one line
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PromptSourceError(
            f"cannot load Hugging Face dataset {name!r} (split {split!r}): {first_line}"
        ) from None
    return dataset.to_list()


# --- rows -> prompts --------------------------------------------------------------------------

def as_messages(value, where: str) -> list[dict] | None:
    """A row's prompt value as chat messages; None when it is empty."""
    if value is None:
        return None
    if isinstance(value, str):
        return [{"role": "user", "content": value}] if value.strip() else None
    if isinstance(value, list):
        messages = []
        for turn in value:
            if not (isinstance(turn, dict) and isinstance(turn.get("content"), str)
                    and turn.get("role") in ROLES):
                raise PromptSourceError(
                    f"{where}: a chat message must be {{'role': one of {ROLES}, 'content': str}}"
                )
            messages.append({"role": turn["role"], "content": turn["content"]})
        while messages and messages[-1]["role"] == "assistant":
            messages.pop()
        if not messages or not messages[-1]["content"].strip():
            return None
        if messages[-1]["role"] != "user":
            raise PromptSourceError(f"{where}: the conversation must end with a user turn")
        return messages
    raise PromptSourceError(
        f"{where}: the prompt must be a string or a list of chat messages, "
        f"not {type(value).__name__}"
    )


def _to_prompts(
    rows: Iterable[dict], label: str, prompt_column: str, limit: int | None
) -> PromptLoad:
    rows = list(rows)
    if not rows:
        raise PromptSourceError(f"{label} contains no rows")
    columns = list(rows[0])
    column = prompt_column
    if column not in columns:
        # Chat datasets carry the conversation in "messages"; accept it when "prompt" is absent.
        if column == "prompt" and "messages" in columns:
            column = "messages"
        else:
            raise PromptSourceError(
                f"{label} has no column {prompt_column!r} (columns: {', '.join(map(str, columns))});"
                " choose one with --prompt-column"
            )
    load = PromptLoad(prompts=[])
    for number, row in enumerate(rows):
        if limit is not None and len(load.prompts) >= limit:
            break
        messages = as_messages(row.get(column), f"{label} row {number + 1}")
        if messages is None:
            load.dropped_empty += 1
            continue
        source_id = row.get("id")
        load.prompts.append(
            Prompt(messages, label, str(source_id) if source_id is not None else str(number))
        )
    if not load.prompts:
        raise PromptSourceError(f"{label}: every prompt in column {column!r} is empty")
    return load
