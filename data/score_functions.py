"""Scores written in Python, named ``MODULE:FUNCTION``: the simulated annotators' preference
(``rankloop simulate``, ``--feedback simulated:...``) and PPO's rule-based rewards
(``--reward-fn``) load them the same way. The function is called as
``FUNCTION(prompts, responses)`` with the prompt conversations and the response texts and must
return one finite number per response; ``MODULE`` is imported from the working directory."""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Callable, Sequence

ScoreFn = Callable[[Sequence[list[dict]], Sequence[str]], list[float]]


def load_score_function(spec: str, *, what: str = "scoring function", noun: str = "scores",
                        error: type[Exception] = ValueError) -> ScoreFn:
    """The function ``spec`` names, wrapped to check each call's answer. Problems raise
    ``error`` with a sentence that names ``what`` the function is for."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise error(f"{what} {spec!r} must look like MODULE:FUNCTION")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise error(f"cannot load {what} {spec!r}: {exc}") from None
    if not callable(function):
        raise error(f"{what} {spec!r} is not callable")

    def score(prompts: Sequence[list[dict]], responses: Sequence[str]) -> list[float]:
        values = [float(x) for x in function(list(prompts), list(responses))]
        if len(values) != len(responses):
            raise error(f"{what} {spec!r} returned {len(values)} {noun} for "
                        f"{len(responses)} responses")
        if not all(math.isfinite(v) for v in values):
            raise error(f"{what} {spec!r} returned a non-finite value")
        return values

    score.spec = spec  # type: ignore[attr-defined]
    return score
