"""Metric logging for training recipes: one JSON object per logged step in ``metrics.jsonl``
(namespaced keys such as ``train/loss``, ``eval/accuracy``; floats at full precision), the
record that tests and tools read back, and the same values through accelerate's tracker API
(``log_with``) to TensorBoard (``output/tensorboard``) and/or Weights & Biases (project
``$WANDB_PROJECT``, else ``rankloop``; the run is named after the output folder and its files
go under ``output/wandb``; ``WANDB_MODE=offline`` keeps it local). Only the main process
writes."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from data.errors import ConfigError

TRACKERS = ("tensorboard", "wandb")
_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_report_to(report_to) -> tuple[str, ...]:
    """The tracker names as a tuple; unknown names are refused. ``none`` means none."""
    names = tuple(dict.fromkeys(n for n in (report_to or ()) if n != "none"))
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ConfigError(f"unknown tracker {unknown[0]!r}; choose from "
                         f"{', '.join(TRACKERS)} or none")
    return names


def make_trackers(report_to, output: Path) -> list:
    """Accelerate trackers for ``report_to``, writing under ``output``. A tracker whose
    package is missing is refused with the install line, before any model loads."""
    names = check_report_to(report_to)
    for name in names:
        if importlib.util.find_spec(_PACKAGES[name]) is None:
            raise ConfigError(f"--report-to {name} needs the {_PACKAGES[name]} package: "
                             f"pip install {_PACKAGES[name]}")
    from accelerate.tracking import TensorBoardTracker, WandBTracker

    output = Path(output)
    trackers = []
    if "tensorboard" in names:
        trackers.append(TensorBoardTracker("tensorboard", logging_dir=str(output)))
    if "wandb" in names:
        output.mkdir(parents=True, exist_ok=True)
        trackers.append(WandBTracker(os.environ.get("WANDB_PROJECT", "rankloop"),
                                     name=output.resolve().name, dir=str(output)))
    return trackers


def tracker_config(settings: dict) -> dict:
    """Run settings as trackers accept them (TensorBoard's hyper-parameters take only
    numbers, strings and booleans)."""
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v, default=str)
            for k, v in settings.items()}


class MetricsLog:
    def __init__(self, path: Path, *, enabled: bool = True, keep_up_to_step: int | None = None,
                 accelerator=None, settings: dict | None = None):
        """``keep_up_to_step``: when resuming, lines logged after that step by the interrupted
        run are removed, so each step appears once. ``accelerator``: values also go to its
        trackers (those it was made with, ``training.accel.make_accelerator(report_to=...)``),
        which start here with ``settings`` as the run's configuration; every process must
        pass it."""
        self.path = Path(path)
        self.enabled = enabled
        self._accelerator = accelerator if accelerator is not None and accelerator.log_with \
            else None
        if self._accelerator is not None:
            self._accelerator.init_trackers("rankloop", config=tracker_config(settings or {}))
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep_up_to_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= keep_up_to_step]
            self.path.write_text("".join(line + "\n" for line in kept))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self._accelerator is not None:  # on the main process only, inside accelerate
            self._accelerator.log({k: v for k, v in metrics.items()
                                   if isinstance(v, (int, float))}, step=step)
        if not self.enabled:
            return
        # Full precision: a learning rate of 3e-7 must not read back as 0.
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")

    def close(self) -> None:
        # The trackers only: accelerate's end_training would also tear down the process group,
        # which the caller of a recipe may still use.
        if self._accelerator is not None:
            for tracker in self._accelerator.trackers:
                tracker.finish()


def read_metrics(path: str | Path) -> list[dict]:
    """The logged lines of a ``metrics.jsonl``, in order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def saved_line(what: str, output: str, parts: list[str], *, dropped: dict[str, int] | None = None,
               resumed_from_step: int | None = None) -> str:
    """A recipe's closing line: ``<what> saved to <output>: part; part; ...``, then where a
    resumed run started and the examples dropped by reason, when given."""
    parts = list(parts)
    if resumed_from_step is not None:
        parts.append(f"resumed at step {resumed_from_step}")
    if dropped is not None:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(dropped.items()) if n)
        parts.append(f"dropped: {reasons or 'none'}")
    return f"{what} saved to {output}: " + "; ".join(parts)
