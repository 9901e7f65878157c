"""Resumable checkpoints shared by the training recipes.

A checkpoint is ``output/checkpoints/step-NNNNNNN``: accelerate's state (model, optimizer,
registered objects such as the scheduler, RNG; DeepSpeed shards under ZeRO-3) plus
``trainer_state.json``, written last by the main process once every rank has saved, so a
checkpoint without it is incomplete and ignored. The trainer state carries the run's *plan*
(what must match for a resume to be exact) and whatever else the recipe needs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from data.errors import ConfigError

CHECKPOINTS = "checkpoints"
TRAINER_STATE = "trainer_state.json"


def latest_checkpoint(output: Path) -> tuple[Path, dict] | None:
    """The newest complete checkpoint: its trainer state is written last, after every rank."""
    found = []
    for path in (Path(output) / CHECKPOINTS).glob("step-*"):
        state_file = path / TRAINER_STATE
        if state_file.is_file():
            try:
                state = json.loads(state_file.read_text())
                step = int(state["step"])
            except (ValueError, KeyError, TypeError):
                raise ConfigError(f"checkpoint {path} is corrupt ({TRAINER_STATE} cannot be "
                                 "read); delete it or pass --no-resume") from None
            found.append((step, path, state))
    if not found:
        return None
    _, path, state = max(found)
    return path, state


def resume_checkpoint(accelerator, output: Path, fingerprint: dict, *, resume: bool,
                      say=print) -> dict | None:
    """Loads the newest checkpoint in ``output`` into the prepared objects and returns its
    trainer state, when ``resume`` and its plan equals ``fingerprint``; otherwise removes old
    checkpoints (a later resume must not mix two runs) and returns None. Every process calls
    it."""
    output = Path(output)
    found = latest_checkpoint(output) if resume else None
    state = None
    if found is not None:
        path, state = found
        if state.get("plan") != fingerprint:
            raise ConfigError(f"the checkpoint in {path} was made with other data or settings "
                             f"({state.get('plan')}); use a new --output or --no-resume")
        try:
            accelerator.load_state(str(path))
        except Exception as exc:  # any unreadable file: the message must name the checkpoint
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ConfigError(f"checkpoint {path} cannot be loaded ({type(exc).__name__}: "
                             f"{first}); delete it or pass --no-resume") from None
        say(f"rankloop: resuming from {path} (step {state['step']})")
    elif accelerator.is_main_process and (output / CHECKPOINTS).exists():
        shutil.rmtree(output / CHECKPOINTS)
    accelerator.wait_for_everyone()
    return state


def save_checkpoint(accelerator, output: Path, step: int, state: dict, keep: int) -> None:
    """Writes checkpoint ``step`` (every process calls it) and keeps the ``keep`` newest
    complete ones."""
    output = Path(output)
    path = output / CHECKPOINTS / f"step-{step:07d}"
    accelerator.save_state(str(path))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (path / TRAINER_STATE).write_text(json.dumps({**state, "step": step}, indent=2) + "\n")
        # Older checkpoints go only once this one is complete; incomplete ones go too.
        existing = sorted((output / CHECKPOINTS).glob("step-*"))
        complete = [p for p in existing if (p / TRAINER_STATE).is_file()]
        for old in existing:
            if old not in complete[-keep:]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
