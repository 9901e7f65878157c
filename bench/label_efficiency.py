"""Label efficiency: how much a reward model learns per ranking, by how the rankings are used.

    python3 bench/label_efficiency.py [--seeds 5] [--budgets 25,50,100,200,400,800]
        [--items 500] [--k 4] [--dims 16] [--held-out 500]

Simulated annotators of different reliability rank items through the app's own queue and
submission path (``data.labeling.next_assignment`` / ``submit_assignment``, overlap 2, into a
real SQLite store); the rankings are read back with the trainers' read model
(``data.scored_pairs.rankings_from_db``). Each candidate has a fixed feature vector x and a
known latent score s = w*·x (standard deviation 1); an annotator ranks an item's candidates by
s / noise + Gumbel noise (a Plackett-Luce draw, ``data.simulate.noisy_ranks``), or, the random
one, by a uniformly random order. Four annotators: noise 0.25, 0.5 and 1.0, and random.

A linear reward model r = w·x over the fixed features is fitted (full batch, L-BFGS, L2 1e-3)
on the first N rankings stored, five ways, each with the project's own losses:

- ``best/worst``: one Bradley-Terry pair per vote, its best against its worst candidate;
- ``all pairs``: Bradley-Terry on every strictly ordered pair of each vote (ties left out, as
  the reward recipe does by default);
- ``listwise``: Plackett-Luce with grouped ties on each vote's whole ranking
  (``reward.losses.plackett_luce_loss``);
- ``listwise + reliability``: the same, each vote weighted by its annotator's weight from the
  joint reliability model fitted on the same N rankings (``data.reliability``);
- ``all pairs + reliability``: all pairs, weighted the same way.

Held-out accuracy: the share of candidate pairs of fresh items (never ranked) that the model
orders as the latent score does. The table gives mean ± standard error over seeds (each seed
a new store, new features, new annotator draws); below it, for each method, how many
rankings it needs to reach the best/worst figure at the full budget (linear interpolation in
log N between budgets; "> N" when it never does).

Policy held-out success: the same five ways train a log-linear policy π(y|x) = softmax over an
item's candidates of θ·x with DPO's losses (``policy.losses.dpo_loss`` on the pairs,
``plackett_luce_dpo_loss`` on whole rankings, β 0.1, from and referenced to the uniform
policy, L2 1e-3 on θ); its success on a fresh item is its chance of answering with the item's
best candidate (the uniform start: 1/k). The policy chooses among fixed candidates rather than
generating text: the small setting that runs on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

ANNOTATORS = (("sim-1", 0.25), ("sim-2", 0.5), ("sim-3", 1.0), ("sim-4", None))
"""(name, noise); None ranks at random."""
METHODS = ("best/worst", "all pairs", "listwise", "listwise + reliability",
           "all pairs + reliability")
L2 = 1e-3
POLICY_BETA = 0.1


def build_store(path: str, features: torch.Tensor, k: int) -> tuple[object, dict[int, int]]:
    """A store with one prompt per item and k candidates each; candidate id → feature row."""
    from data import labeling, store

    db = store.open_store(path)
    run_id = store.get_or_create_run(db, store.RunSettings("sim", "transformers", k, 1.0, 1.0,
                                                           16, 0))
    row_of: dict[int, int] = {}
    for item in range(features.shape[0] // k):
        [prompt_id] = store.upsert_prompts(
            db, [([{"role": "user", "content": f"Item {item}"}], "bench", str(item))])
        store.add_candidates(db, prompt_id, run_id, [
            store.CandidateIn(f"item {item} candidate {j}", 4, "stop") for j in range(k)])
        ids = [r[0] for r in db.execute(
            "SELECT id FROM candidates WHERE prompt_id = ? AND run_id = ? ORDER BY idx",
            [prompt_id, run_id])]
        for j, cid in enumerate(ids):
            row_of[cid] = item * k + j
    labeling.sync_items(db)
    return db, row_of


def simulate(db, row_of: dict[int, int], scores: torch.Tensor, budget: int, seed: int) -> None:
    """The annotators take turns, in a new random order each round, through the queue until
    ``budget`` rankings are stored."""
    from data import labeling
    from data.rankings import validate_submission
    from data.simulate import noisy_ranks, simulated_users

    users = simulated_users(db, len(ANNOTATORS))
    noise = {u.id: n for u, (_, n) in zip(users, ANNOTATORS)}
    streams = {u.id: random.Random(f"{seed}:{u.name}") for u in users}
    policy = labeling.QueuePolicy(overlap=2)
    turns = random.Random(f"{seed}:turns")
    stored, now = 0, 1.0e9
    while stored < budget:
        progressed = False
        # People work at different times: a fixed turn order would pair the same two
        # annotators on every item, and who of a pair is the careless one could not be told.
        order = list(users)
        turns.shuffle(order)
        for user in order:
            if stored >= budget:
                break
            rng = streams[user.id]
            task = labeling.next_assignment(db, user.id, policy, now=now, rng=rng)
            if task is None:
                continue
            progressed = True
            s = [float(scores[row_of[c]]) for c in task.candidate_ids]
            if noise[user.id] is None:
                order = list(range(len(s)))
                rng.shuffle(order)
                ranks = tuple(order.index(i) + 1 for i in range(len(s)))
            else:
                ranks = noisy_ranks(s, noise[user.id], rng)
            submission = validate_submission(task.candidate_ids, ranks)
            labeling.submit_assignment(db, task.id, user.id, submission, now=now + 1)
            stored += 1
            now += 2
        if not progressed:
            raise SystemExit(f"the queue ran out after {stored} rankings: raise --items")


def fit(features: torch.Tensor, loss_of, dims: int) -> torch.Tensor:
    """w minimising loss_of(rewards of every candidate) + L2·|w|², by L-BFGS."""
    w = torch.zeros(dims, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], lr=1.0, max_iter=200, tolerance_grad=1e-9,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = loss_of(features @ w) + L2 * (w ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach()


def objectives(groups, row_of: dict[int, int], weights: dict[int, float] | None, *,
               policy_k: int | None = None):
    """method → loss_of(linear scores of all candidates) for these rankings: the reward
    model's losses, or (``policy_k``) DPO's on the log-linear policy softmax(scores) over each
    item's ``policy_k`` candidates, starting from (and referenced to) the uniform policy."""
    from policy.losses import dpo_loss, plackett_luce_dpo_loss
    from reward.losses import bradley_terry_loss, plackett_luce_loss
    from training.listwise import padded_ranks, ranking_layout, weighted_mean

    if policy_k is None:
        def values(x):
            return x

        def pairwise(a, b):
            return bradley_terry_loss(a, b)

        def whole(x, r, m):
            return plackett_luce_loss(x, r, m)
    else:
        reference = math.log(1 / policy_k)

        def values(x):  # log π(y|x) of every candidate
            return x.view(-1, policy_k).log_softmax(-1).reshape(-1)

        def pairwise(a, b):
            ref = torch.full_like(a, reference)
            return dpo_loss(a, b, ref, ref, beta=POLICY_BETA)

        def whole(x, r, m):
            return plackett_luce_dpo_loss(x, torch.full_like(x, reference), r, m,
                                          beta=POLICY_BETA)

    def vote_weight(g) -> float:
        return 1.0 if weights is None else float(weights.get(g.user_id, 1.0))

    def pair_loss(pairs):
        if not pairs:
            return lambda r: r.sum() * 0
        chosen = torch.tensor([p[0] for p in pairs])
        rejected = torch.tensor([p[1] for p in pairs])
        w = torch.tensor([p[2] for p in pairs], dtype=torch.float64)
        def loss(x):
            v = values(x)
            return weighted_mean(pairwise(v[chosen], v[rejected]), w)

        return loss

    best_worst, all_pairs = [], []
    for g in groups:
        rows = [row_of[c] for c in g.candidate_ids]
        best = min(range(len(rows)), key=lambda i: g.ranks[i])
        worst = max(range(len(rows)), key=lambda i: g.ranks[i])
        if g.ranks[best] != g.ranks[worst]:
            best_worst.append((rows[best], rows[worst], vote_weight(g)))
        all_pairs += [(rows[i], rows[j], vote_weight(g)) for i in range(len(rows))
                      for j in range(len(rows)) if g.ranks[i] < g.ranks[j]]
    index, mask = ranking_layout([len(g.candidate_ids) for g in groups])
    rows = torch.tensor([row_of[c] for g in groups for c in g.candidate_ids])
    ranks = padded_ranks([g.ranks for g in groups], index.shape[1])
    w = torch.tensor([vote_weight(g) for g in groups], dtype=torch.float64)

    def listwise(x):
        return weighted_mean(whole(values(x)[rows][index], ranks, mask), w)

    return {"best/worst": pair_loss(best_worst), "all pairs": pair_loss(all_pairs),
            "listwise": listwise}


def accuracy(w: torch.Tensor, features: torch.Tensor, scores: torch.Tensor, k: int) -> float:
    """Share of held-out candidate pairs (within an item) ordered as the latent score does."""
    predicted = (features @ w).view(-1, k)
    truth = scores.view(-1, k)
    i, j = torch.triu_indices(k, k, 1)
    agree = torch.sign(predicted[:, i] - predicted[:, j]) == torch.sign(truth[:, i] - truth[:, j])
    return float(agree.double().mean())


def success(theta: torch.Tensor, features: torch.Tensor, scores: torch.Tensor, k: int) -> float:
    """The log-linear policy's chance of answering a held-out item with its best candidate."""
    probabilities = (features @ theta).view(-1, k).softmax(-1)
    best = scores.view(-1, k).argmax(-1, keepdim=True)
    return float(probabilities.gather(1, best).mean())


def run_seed(seed: int, args, budgets: list[int]) -> dict[str, dict[int, float]]:
    from data.reliability import fit_reliability
    from data.scored_pairs import rankings_from_db
    from data.votes import read_rankings

    gen = torch.Generator().manual_seed(seed)
    w_true = torch.randn(args.dims, generator=gen, dtype=torch.float64)
    w_true /= w_true.norm()  # features are N(0, I): latent scores have standard deviation 1
    features = torch.randn(args.items * args.k, args.dims, generator=gen, dtype=torch.float64)
    held_features = torch.randn(args.held_out * args.k, args.dims, generator=gen,
                                dtype=torch.float64)
    scores, held_scores = features @ w_true, held_features @ w_true
    out: dict[str, dict[int, float]] = {m: {} for m in METHODS}
    out.update({f"policy {m}": {} for m in METHODS})
    with tempfile.TemporaryDirectory() as folder:
        db, row_of = build_store(str(Path(folder) / "bench.db"), features, args.k)
        simulate(db, row_of, scores, max(budgets), seed)
        groups = sorted(rankings_from_db(db).groups, key=lambda g: g.ranking_id)
        records = read_rankings(db)
        names = dict(db.execute("SELECT id, name FROM users"))
        db.close()
    for n in budgets:
        first = groups[:n]
        kept = {g.ranking_id for g in first}
        weights = fit_reliability([r for r in records if r.ranking_id in kept]).weights_by_user()
        plain = objectives(first, row_of, None)
        weighted = objectives(first, row_of, weights)
        losses = {**plain, "listwise + reliability": weighted["listwise"],
                  "all pairs + reliability": weighted["all pairs"]}
        policy_plain = objectives(first, row_of, None, policy_k=args.k)
        policy_weighted = objectives(first, row_of, weights, policy_k=args.k)
        policy_losses = {**policy_plain, "listwise + reliability": policy_weighted["listwise"],
                         "all pairs + reliability": policy_weighted["all pairs"]}
        for method in METHODS:
            w = fit(features, losses[method], args.dims)
            out[method][n] = accuracy(w, held_features, held_scores, args.k)
            theta = fit(features, policy_losses[method], args.dims)
            out[f"policy {method}"][n] = success(theta, held_features, held_scores, args.k)
        if n == max(budgets):
            out["_weights"] = {names[uid]: weight for uid, weight in weights.items()}
    return out


def rankings_to_reach(curve: dict[int, float], target: float) -> str:
    """The budget where ``curve`` first reaches ``target``, interpolated linearly in log N."""
    points = sorted(curve.items())
    for (n0, a0), (n1, a1) in zip([(None, None)] + points[:-1], points):
        if a1 >= target:
            if n0 is None or a1 == a0:
                return f"{n1}" if n0 is not None else f"<= {n1}"
            t = (target - a0) / (a1 - a0)
            return f"{math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0))):.0f}"
    return f"> {points[-1][0]}"


def table(runs, budgets: list[int], prefix: str, what: str) -> None:
    header = f"{'rankings':>8} | " + " | ".join(f"{m:>23}" for m in METHODS)
    print(header)
    print("-" * len(header))
    for n in budgets:
        cells = []
        for m in METHODS:
            values = [r[prefix + m][n] for r in runs]
            se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {se:.3f}".rjust(23))
        print(f"{n:>8} | " + " | ".join(cells))
    means = {m: {n: statistics.mean(r[prefix + m][n] for r in runs) for n in budgets}
             for m in METHODS}
    target = means["best/worst"][max(budgets)]
    print(f"Rankings needed to reach best/worst's {what} at {max(budgets)} rankings "
          f"({target:.3f}), on the mean curve:")
    for m in METHODS:
        print(f"  {m:<24} {rankings_to_reach(means[m], target)}")
    print()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budgets", default="25,50,100,200,400,800")
    parser.add_argument("--items", type=int, default=500,
                        help="items in the queue (overlap 2: twice as many rankings possible)")
    parser.add_argument("--k", type=int, default=4, help="candidates per item")
    parser.add_argument("--dims", type=int, default=16, help="feature dimensions")
    parser.add_argument("--held-out", type=int, default=500, help="held-out items")
    args = parser.parse_args(argv)
    budgets = sorted(int(b) for b in args.budgets.split(","))
    if max(budgets) > 2 * args.items:
        parser.error("the largest budget needs at most 2 × --items rankings (overlap 2)")
    torch.set_num_threads(2)
    started = time.perf_counter()
    runs = [run_seed(seed, args, budgets) for seed in range(args.seeds)]
    seconds = time.perf_counter() - started

    print(f"Label efficiency: linear models over {args.dims} fixed features, "
          f"{args.k} candidates per item, latent score sd 1; annotators "
          + ", ".join(f"{n} noise {x}" if x is not None else f"{n} random"
                      for n, x in ANNOTATORS)
          + f"; queue overlap 2, no gold; held-out pairs of {args.held_out} fresh items; "
          f"{args.seeds} seeds; {seconds:.0f} s on {torch.get_num_threads()} threads.")
    print()
    print("Reward model: held-out pairwise accuracy (mean ± standard error over seeds)")
    table(runs, budgets, "", "accuracy")
    print(f"Policy: DPO (β {POLICY_BETA}) on a log-linear policy over each item's {args.k} "
          f"candidates, from the uniform policy (success {1 / args.k:.3f}); held-out success = "
          "its chance of answering with the item's best candidate")
    table(runs, budgets, "policy ", "success")
    print("Reliability weights at the full budget (mean over seeds): " + ", ".join(
        f"{name} {statistics.mean(r['_weights'][name] for r in runs):.2f}"
        for name, _ in ANNOTATORS))


if __name__ == "__main__":
    main()
