"""Ratings speed: the fit and the bootstrap of data/ratings.py against refitting per resample.

    python3 bench/ratings.py [--sizes 1000,10000,100000] [--resamples 1000] [--policies 8]
        [--peer-resamples 5] [--seed 0]

Votes are simulated between ``--policies`` policies with known strengths, 10% ties and token
counts from 50 to 800. For each size the table shows the plain fit alone, the fit with
``--resamples`` bootstrap intervals, and the same two for the length-controlled fit (every
time from the list of vote dicts, reading included). The peer is the bootstrap as it is
usually written (Arena's notebook does this with scikit-learn): resample the votes with
replacement and refit a per-vote logistic regression, here scipy's L-BFGS with an analytic
gradient on a sparse design (scipy comes with the test extra's choix). It runs
``--peer-resamples`` resamples and is extrapolated to ``--resamples``; the ratio is its time
over ours for the plain bootstrap. The last column is how far the peer's fit on all votes
lands from ours (logits), a check that both fit the same model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.optimize import minimize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.ratings import PRIOR, SCALE, fit_ratings  # noqa: E402


def simulate(n: int, k: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    names = [f"policy{i}" for i in range(k)]
    strength = rng.normal(0, 0.5, k)
    a = rng.integers(0, k, n)
    b = (a + rng.integers(1, k, n)) % k
    p = 1 / (1 + np.exp(-(strength[a] - strength[b])))
    u = rng.random(n)
    winner = np.where(u < 0.1, "tie", np.where(u < 0.1 + 0.9 * p, "model_a", "model_b"))
    ta, tb = rng.integers(50, 800, n), rng.integers(50, 800, n)
    return [{"model_a": names[i], "model_b": names[j], "winner": str(w),
             "tokens_a": int(x), "tokens_b": int(y)}
            for i, j, w, x, y in zip(a, b, winner, ta, tb)]


def peer_fit(design, y, weight, k: int) -> np.ndarray:
    """Per-vote penalised logistic regression by L-BFGS (the same likelihood and ridge)."""

    def f(theta):
        eta = design @ theta
        p = 1 / (1 + np.exp(-eta))
        value = (weight * (np.logaddexp(0, eta) - y * eta)).sum() + PRIOR / 2 * theta @ theta
        return value, design.T @ (weight * (p - y)) + PRIOR * theta

    res = minimize(f, np.zeros(k), jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-10, "ftol": 1e-15, "maxiter": 1000})
    return res.x - res.x.mean()


def peer(votes: list[dict], resamples: int, seed: int):
    """Seconds per resample, and the fit on all votes (mean-zero logits, sorted names)."""
    names = sorted({v["model_a"] for v in votes} | {v["model_b"] for v in votes})
    index = {name: i for i, name in enumerate(names)}
    n, k = len(votes), len(names)
    rows = np.repeat(np.arange(n), 2)
    cols = np.array([(index[v["model_a"]], index[v["model_b"]]) for v in votes]).ravel()
    design = sparse.csr_matrix((np.tile([1.0, -1.0], n), (rows, cols)), shape=(n, k))
    y = np.array([{"model_a": 1.0, "model_b": 0.0}.get(v["winner"], 0.5) for v in votes])
    full = peer_fit(design, y, np.ones(n), k)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for _ in range(resamples):
        pick = rng.integers(0, n, n)
        peer_fit(design[pick], y[pick], np.ones(n), k)
    return (time.perf_counter() - start) / resamples, full


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--policies", type=int, default=8)
    parser.add_argument("--peer-resamples", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    b = args.resamples
    head = (f"{'votes':>8} {'fit':>7} {f'fit+{b} boot':>14} {'LC fit':>7} "
            f"{f'LC fit+{b} boot':>16} {f'peer {b} boot':>14} {'ratio':>7} {'peer diff':>10}")
    print(f"{args.policies} policies; seconds; the peer is extrapolated from "
          f"{args.peer_resamples} resamples")
    print(head)
    print("-" * len(head))
    for n in (int(s) for s in args.sizes.split(",")):
        votes = simulate(n, args.policies, args.seed)
        fit_s, point = timed(lambda: fit_ratings(votes, resamples=0))
        boot_s, _ = timed(lambda: fit_ratings(votes, resamples=b, seed=args.seed))
        lc_fit_s, _ = timed(lambda: fit_ratings(votes, resamples=0, length_control=True))
        lc_boot_s, _ = timed(lambda: fit_ratings(votes, resamples=b, seed=args.seed,
                                                 length_control=True))
        per, full = peer(votes, args.peer_resamples, args.seed)
        ours = np.array([point.rating[name] for name in sorted(point.policies)]) / SCALE
        diff = np.abs(ours - ours.mean() - full).max()
        print(f"{n:>8} {fit_s:>7.3f} {boot_s:>14.3f} {lc_fit_s:>7.3f} {lc_boot_s:>16.3f} "
              f"{per * b:>14.1f} {per * b / boot_s:>6.0f}x {diff:>10.1e}")


if __name__ == "__main__":
    main()
