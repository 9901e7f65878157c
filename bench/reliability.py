"""Annotator reliability: how well each estimate recovers planted reliabilities, and the fit's cost.

    python3 bench/reliability.py [--seeds 10] [--items 300] [--overlap 3] [--gold 15] [--k 4]
        [--sizes 1000,10000,30000]

Simulated annotators rank items as Plackett-Luce draws (``data.simulate``'s noise model) at
planted temperatures 0 (ranks at random), 0.5, 1, 2, 4 and 8; each item has normal candidate
strengths and ``--overlap`` annotators; every annotator also ranks the ``--gold`` gold items.
For each seed the table compares three estimates of reliability, each against the planted
temperatures (Spearman's rank correlation) and by what it gives the random annotator:

- the joint model (``data.reliability``: temperature and weight),
- gold accuracy alone (share of gold pairs ordered as gold),
- agreement with the others (share of candidate pairs ordered as the other annotators of
  the same item order them), the figure the console showed before.

Mean ± standard error over seeds. The second table times one fit against the number of votes
(8 annotators, overlap 3, 5% gold): wall and CPU seconds (on a shared machine the CPU time is
the fit's own), with the ratio of CPU time to the smallest size.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.reliability import fit_reliability  # noqa: E402
from data.simulate import planted_rankings  # noqa: E402

PLANTED = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]


def sign(x):
    return (x > 0) - (x < 0)


def gold_accuracy(records):
    right, total = defaultdict(int), defaultdict(int)
    for r in records:
        if r.gold_ranks:
            for i, j in combinations(range(len(r.ranks)), 2):
                right[r.annotator] += sign(r.ranks[i] - r.ranks[j]) == sign(
                    r.gold_ranks[i] - r.gold_ranks[j])
                total[r.annotator] += 1
    return {a: right[a] / total[a] for a in total}


def agreement_with_others(records):
    by_item = defaultdict(list)
    for r in records:
        if not r.gold_ranks:
            by_item[r.item_id].append(r)
    same, total = defaultdict(int), defaultdict(int)
    for votes in by_item.values():
        for a, b in combinations(votes, 2):
            ra, rb = dict(zip(a.candidate_ids, a.ranks)), dict(zip(b.candidate_ids, b.ranks))
            for x, y in combinations(sorted(ra), 2):
                alike = sign(ra[x] - ra[y]) == sign(rb[x] - rb[y])
                for who in (a.annotator, b.annotator):
                    same[who] += alike
                    total[who] += 1
    return {a: same[a] / total[a] for a in total}


def mean_se(values):
    arr = np.asarray(values, dtype=float)
    se = arr.std(ddof=1) / np.sqrt(len(arr)) if len(arr) > 1 else 0.0
    return f"{arr.mean():.3f} ± {se:.3f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--items", type=int, default=300)
    parser.add_argument("--overlap", type=int, default=3)
    parser.add_argument("--gold", type=int, default=15)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--sizes", default="1000,10000,30000")
    args = parser.parse_args(argv)

    names = [f"annotator-{a}" for a in range(len(PLANTED))]
    rows = defaultdict(lambda: defaultdict(list))
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        records = planted_rankings(rng, PLANTED, items=args.items, k=args.k,
                                   overlap=args.overlap, gold_items=args.gold)
        fit = fit_reliability(records)
        estimates = {
            "joint model: temperature": {n: fit.annotators[n].temperature for n in names},
            "joint model: weight": {n: fit.annotators[n].weight for n in names},
            "gold accuracy": gold_accuracy(records),
            "agreement with others": agreement_with_others(records),
        }
        for label, values in estimates.items():
            got = [values[n] for n in names]
            rows[label]["spearman"].append(spearmanr(got, PLANTED)[0])
            rows[label]["random"].append(got[0])
            rows[label]["best"].append(got[-1])

    print(f"{args.seeds} seeds, {args.items} items (k={args.k}, overlap {args.overlap}), "
          f"{args.gold} gold items ranked by all; planted temperatures {PLANTED}")
    print(f"{'estimate':<28} {'Spearman vs planted':>22} {'random annotator':>18} "
          f"{'best annotator':>18}")
    for label, cols in rows.items():
        print(f"{label:<28} {mean_se(cols['spearman']):>22} {mean_se(cols['random']):>18} "
              f"{mean_se(cols['best']):>18}")

    print("\nfit time against votes (8 annotators, temperatures 0..8, overlap 3, 5% gold)")
    print(f"{'votes':>8} {'wall s':>9} {'CPU s':>9} {'CPU ratio to smallest':>22}")
    first = None
    temperatures = list(np.linspace(0, 8, 8))
    for size in (int(s) for s in args.sizes.split(",")):
        items = max(1, size // 3)
        records = planted_rankings(np.random.default_rng(0), temperatures, items=items,
                                   k=args.k, overlap=3, gold_items=max(1, items // 20))
        start, cpu = time.perf_counter(), time.process_time()
        fit_reliability(records)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        first = first or cpu
        print(f"{len(records):>8} {wall:>9.3f} {cpu:>9.3f} {cpu / first:>22.1f}")


if __name__ == "__main__":
    main()
