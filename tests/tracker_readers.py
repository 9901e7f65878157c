"""Reading back what the trackers wrote: TensorBoard event files and W&B offline runs."""

from __future__ import annotations

import json
import time
from pathlib import Path


def tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """Every scalar in the event files under ``folder``: {tag: {step: value}}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[int, float]] = {}
    for events in sorted(Path(folder).rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            out.setdefault(tag, {}).update(
                {e.step: e.value for e in accumulator.Scalars(tag)})
    return out


def _wandb_records(path: Path) -> list[bytes]:
    """The records of a ``.wandb`` file: a 7-byte header, then a LevelDB-style log of 32 KiB
    blocks whose records carry a 7-byte header (checksum, length, type: full/first/middle/last)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, block, out, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            out.append(pending + chunk)
    return out


def _finished_wandb_records(folder: Path, timeout: float) -> list:
    """The parsed records of the one offline run under ``folder/wandb``, once they end with the
    run's ``exit`` record: W&B's service writes the file in its own process and may still be
    writing it after ``finish()`` returns, most of all on a busy machine."""
    from wandb.proto import wandb_internal_pb2

    deadline = time.monotonic() + timeout
    while True:
        runs = list(Path(folder).glob("wandb/offline-run-*/run-*.wandb"))
        records = []
        if len(runs) == 1 and runs[0].stat().st_size >= 7:
            for data in _wandb_records(runs[0]):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(data)
                records.append(record)
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            return records
        if time.monotonic() > deadline:
            kinds = [r.WhichOneof("record_type") for r in records]
            raise AssertionError(f"no finished W&B run under {folder} after {timeout:.0f} s: "
                                 f"run files {runs}, records so far {kinds}")
        time.sleep(0.2)


def wandb_run(folder: Path, timeout: float = 120.0
              ) -> tuple[dict[int, dict[str, float]], dict[str, object]]:
    """(history {step: {key: value}}, config) of the one offline run under ``folder/wandb``,
    read once W&B has finished writing it (waiting at most ``timeout`` seconds)."""
    history: dict[int, dict[str, float]] = {}
    config: dict[str, object] = {}
    for record in _finished_wandb_records(Path(folder), timeout):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                   for item in record.history.item}
            history[int(row.pop("_step"))] = {k: v for k, v in row.items()
                                             if not k.startswith("_")}
        elif kind == "config":
            config.update({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                           for item in record.config.update})
    return history, config
