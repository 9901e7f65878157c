"""The held-out split, one rule for every consumer: reward training, REBEL/DPO/SFT evaluation,
the loop's report and the exported ``test`` split all hold out the same kind of prompts."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable


def held_out_groups(groups: Iterable[Hashable], fraction: float, seed: int) -> set:
    """Which groups (prompts) are held out: the distinct groups in a seeded hash order, the
    first round(n × fraction) of them, at least one when there are two or more groups and
    ``fraction`` > 0, and never all of them. Deterministic in ``seed``, independent of the
    order the groups come in."""
    if fraction <= 0:
        return set()
    ordered = sorted(set(groups), key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    n = min(len(ordered) - 1, max(1, round(len(ordered) * fraction)))
    return set(ordered[:n])
