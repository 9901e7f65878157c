"""Labels where they matter: reward-model held-out accuracy against the number of labels, when
the queue serves items in random order or uncertainty first (``--queue-order``).

    python3 bench/active_selection.py [--model default] [--prompts 96] [--k 4] [--from-db DB]
        [--seed-labels 8] [--batch 8] [--rounds 6] [--repeats 3]

Candidates: k replies per bundled prompt sampled from ``--model`` (or those of an existing
database, ``--from-db``, e.g. the learning-signal benchmark's ``rebel/loop.db``). A fifth of
the prompts is held out for testing. Simulated annotators (3, overlap 1, Gumbel noise 1.0)
rank by ``bench/learning_signal.py``'s ``opening_score`` through the app's queue and
submission path.

The reward model: an ensemble of 4 Bradley-Terry linear heads on frozen features of
``--model`` (mean of the last hidden state over the reply's tokens), each fit on a bootstrap
resample of the ranked pairs. Fitting takes milliseconds, so the comparison runs on a CPU;
RankLoop's full reward-model recipe (``rankloop train reward``) would change the absolute
accuracies, not how the orders are compared. After every round the ensemble's scores are
stored in ``model_scores``; the ``uncertain`` order reads them (``gap``: the ensemble mean's
smallest score gap between candidates; ``ensemble``: the members' disagreement) and the
``random`` order ignores them. Each order starts from the same ``--seed-labels`` random
rankings. Accuracy = share of held-out candidate pairs with different true scores that the
ensemble mean orders like the true score, averaged over ``--repeats`` seeds.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MEMBERS = 4


def reply_features(model_dir: str, conversations: list[tuple[list[dict], str]],
                   batch_size: int = 16):
    """[N, hidden] mean of the last hidden state over each reply's tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    from data.chat import format_chat
    from training.models import load_tokenizer

    tokenizer = load_tokenizer(model_dir, padding_side="right")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(conversations), batch_size):
            chunk = conversations[start:start + batch_size]
            prompt_ids = [tokenizer(format_chat(tokenizer, m), add_special_tokens=False)
                          ["input_ids"] for m, _ in chunk]
            reply_ids = [tokenizer(r or " ", add_special_tokens=False)["input_ids"][:64]
                         for _, r in chunk]
            width = max(len(p) + len(r) for p, r in zip(prompt_ids, reply_ids))
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            reply_mask = torch.zeros((len(chunk), width))
            for i, (p, r) in enumerate(zip(prompt_ids, reply_ids)):
                ids[i, :len(p) + len(r)] = torch.tensor(p + r)
                attention[i, :len(p) + len(r)] = 1
                reply_mask[i, len(p):len(p) + len(r)] = 1
            hidden = model(input_ids=ids, attention_mask=attention,
                           output_hidden_states=True).hidden_states[-1]
            pooled = (hidden * reply_mask[..., None]).sum(1) / reply_mask.sum(1, keepdim=True)
            out.append(pooled)
    return torch.cat(out)


def fit_ensemble(features, pairs: list[tuple[int, int]], seed: int, l2: float = 1e-2):
    """MEMBERS linear heads w, each minimising the Bradley-Terry loss
    −log σ(w·(f_chosen − f_rejected)) + l2·|w|² on a bootstrap resample of ``pairs``."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    mean, std = features.mean(0), features.std(0) + 1e-6
    x = (features - mean) / std
    heads = []
    for _ in range(MEMBERS):
        pick = torch.randint(len(pairs), (len(pairs),), generator=generator)
        chosen = torch.tensor([pairs[i][0] for i in pick])
        rejected = torch.tensor([pairs[i][1] for i in pick])
        diff = x[chosen] - x[rejected]
        w = torch.zeros(x.shape[1], requires_grad=True)
        optimizer = torch.optim.LBFGS([w], max_iter=100)

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.softplus(-(diff @ w)).mean() + l2 * (w * w).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        heads.append(w.detach())
    return torch.stack(heads), mean, std


def member_scores(heads, mean, std, features):
    return ((features - mean) / std) @ heads.T  # [N, MEMBERS]


def pair_accuracy(scores, truth, groups: list[list[int]]) -> float:
    right = total = 0
    for group in groups:
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                a, b = group[i], group[j]
                if truth[a] == truth[b]:
                    continue
                total += 1
                right += (scores[a] > scores[b]) == (truth[a] > truth[b])
    return right / max(total, 1)


def labeled_pairs(db, row_of: dict[int, int]) -> list[tuple[int, int]]:
    """(chosen row, rejected row) of every non-tie comparison in the store."""
    return [(row_of[c], row_of[r]) for c, r in db.execute(
        "SELECT chosen_id, rejected_id FROM comparisons WHERE tie = 0")
        if c in row_of and r in row_of]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--from-db", default=None, help="take prompts and candidates from here")
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seed-labels", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="rankings per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import hashlib

    from bench.learning_signal import opening_score
    from data import labeling, queue_order, store
    from data.simulate import SimulationConfig, simulate_queue
    from training.models import resolve_model

    started = time.perf_counter()
    model = resolve_model(args.model)
    work = Path(tempfile.mkdtemp(prefix="rankloop-active-"))
    pool_db = work / "pool.db"

    # 1. Candidates: sampled here, or copied from an existing store.
    if args.from_db:
        groups = _candidate_sets(store.open_store(args.from_db))
    else:
        from data.chat import format_chat
        from data.prompts import load_prompts
        from training.models import load_tokenizer
        from policy.sampling import SamplingConfig, TransformersSampler

        prompts = [p.messages for p in load_prompts(None, limit=args.prompts).prompts]
        tokenizer = load_tokenizer(model)
        sampler = TransformersSampler(model, seed=args.seed, batch_size=16)
        samples = sampler.generate([format_chat(tokenizer, m) for m in prompts], SamplingConfig(
            k=args.k, temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens,
            seed=args.seed))
        sampler.close()
        groups = [(m, [s.text for s in group], 0) for m, group in zip(prompts, samples)]
    is_test = [int(hashlib.sha256(store.canonical_json(m).encode()).hexdigest(), 16) % 5 == 0
               for m, _, _ in groups]
    print(f"{len(groups)} candidate sets ({sum(is_test)} held out), "
          f"{sum(len(t) for _, t, _ in groups)} candidates", flush=True)

    # 2. The pool's store: its items are the queue; held-out sets stay out of it.
    db = store.open_store(pool_db)
    conversations, truth, row_of, test_groups = [], [], {}, []
    for (messages, texts, run_key), test in zip(groups, is_test):
        rows = list(range(len(conversations), len(conversations) + len(texts)))
        conversations += [(messages, t) for t in texts]
        truth += opening_score([messages] * len(texts), texts)
        if test:
            test_groups.append(rows)
            continue
        run_id = store.get_or_create_run(db, store.RunSettings(
            model, "transformers", len(texts), 1.0, 1.0, args.max_new_tokens, run_key))
        [prompt_id] = store.upsert_prompts(db, [(messages, "bench", None)])
        ids = store.add_candidates(db, prompt_id, run_id,
                                   [store.CandidateIn(t, 0, "stop") for t in texts])
        row_of.update(zip(ids, rows))
    labeling.sync_items(db)
    db.close()
    features = reply_features(model, conversations)
    print(f"features {tuple(features.shape)} in {time.perf_counter() - started:.0f} s",
          flush=True)

    # 3. Each order, each repeat: the same seed rankings, then rounds of ranking + refitting.
    orders = ("random", "uncertain-gap", "uncertain-ensemble")
    curves = {o: [] for o in orders}
    for repeat in range(args.repeats):
        seed = args.seed + repeat
        base = work / f"seeded-{repeat}.db"
        shutil.copy(pool_db, base)
        db = store.open_store(base)
        queue_order.set_queue_order(db, queue_order.QueueOrder("random", seed=seed + 100))
        simulate_queue(db, opening_score, SimulationConfig(
            annotators=3, overlap=1, noise=args.noise, limit=args.seed_labels, seed=seed))
        db.close()
        for order in orders:
            path = work / f"{order}-{repeat}.db"
            shutil.copy(base, path)
            db = store.open_store(path)
            curve = []
            for round_ in range(args.rounds + 1):
                pairs = labeled_pairs(db, row_of)
                heads, mean, std = fit_ensemble(features, pairs, seed)
                scores = member_scores(heads, mean, std, features)
                labels = db.execute("SELECT COUNT(*) FROM rankings").fetchone()[0]
                curve.append((labels, pair_accuracy(scores.mean(1).tolist(), truth,
                                                    test_groups)))
                if round_ == args.rounds:
                    break
                names = [f"linear:member-{m}" for m in range(MEMBERS)]
                rows = [store.ModelScore(cid, names[m], float(scores[row, m]))
                        for cid, row in row_of.items() for m in range(MEMBERS)]
                rows += [store.ModelScore(cid, "linear:mean", float(scores[row].mean()))
                         for cid, row in row_of.items()]
                store.put_model_scores(db, rows)
                if order == "random":
                    choice = queue_order.QueueOrder("random", seed=seed + 100)
                elif order == "uncertain-gap":
                    choice = queue_order.QueueOrder("uncertain", ("linear:mean",))
                else:
                    choice = queue_order.QueueOrder("uncertain", tuple(names))
                queue_order.set_queue_order(db, choice)
                simulate_queue(db, opening_score, SimulationConfig(
                    annotators=3, overlap=1, noise=args.noise, limit=args.batch,
                    seed=seed * 1000 + round_))
            curves[order].append(curve)
            db.close()

    # 4. The table: mean accuracy per number of labels.
    print(f"\nheld-out pairwise accuracy of the reward model ({len(test_groups)} held-out "
          f"sets; mean of {args.repeats} repeats; simulated noise {args.noise:g})")
    print("| rankings | " + " | ".join(orders) + " | uncertain-ensemble − random |")
    print("|---|" + "---|" * (len(orders) + 1))
    for i in range(args.rounds + 1):
        labels = curves["random"][0][i][0]
        means = [sum(c[i][1] for c in curves[o]) / len(curves[o]) for o in orders]
        print(f"| {labels} | " + " | ".join(f"{m:.3f}" for m in means) +
              f" | {100 * (means[2] - means[0]):+.1f} points |")
    print(f"\ntotal {(time.perf_counter() - started) / 60:.1f} min")


def _candidate_sets(db) -> list[tuple[list[dict], list[str], int]]:
    """(prompt messages, candidate texts, run id) of every generated candidate set."""
    from data import store

    out: dict[tuple[int, int], list[str]] = {}
    for prompt_id, run_id, text in db.execute(
            "SELECT c.prompt_id, c.run_id, c.text FROM candidates c "
            "JOIN generation_runs r ON r.id = c.run_id "
            "WHERE r.backend NOT IN ('human', 'gold') ORDER BY c.prompt_id, c.run_id, c.idx"):
        out.setdefault((prompt_id, run_id), []).append(text)
    return [(store.prompt_messages(db, p), texts, r) for (p, r), texts in out.items()]


if __name__ == "__main__":
    main()
