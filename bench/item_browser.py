"""The admin's item browser at 100k items: query times for every filter, with and without the
per-item stats that triggers keep.

    python3 bench/item_browser.py [--items 100000] [--k 4] [--annotators 20] [--repeat 5]

Builds a store in a temporary folder: ``--items`` items of k candidates (two generation runs),
about 60% of them labeled by 1-3 annotators (some disagreeing, some revised, some skipped),
5% tagged, a few held right now, reward-model scores on half of them. Votes go in as bulk
inserts through the real schema, so the triggers fill ``item_stats`` as the app would.

Printed per query: the median time of ``data.browser.browse_items`` (the total count plus one
page of 50), and the same filter computed on the fly from the latest votes without
``item_stats`` (the peer, measured in the same run, same database), with their ratio. The peer
returns item ids only, so where a filter needs no stats (all items, run, tag) the browser is
slower by the cost of building its rows (previews, annotators, tags). Also: one item's detail,
a deep page, and the annotator's next-task query on the same store.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NOW = 2_000_000_000.0


def build(path: str, items: int, k: int, annotators: int, seed: int = 0) -> dict:
    from data import labeling, store, votes
    from data.rankings import Submission

    rng = random.Random(seed)
    db = store.open_store(path)
    timings = {}
    start = time.perf_counter()
    runs = [store.get_or_create_run(db, store.RunSettings(f"bench-{r}", "vllm", k, 0.8, 0.9, 64,
                                                          r)) for r in range(2)]
    with store.transaction(db):
        db.conn.executemany(
            "INSERT INTO prompts (prompt_hash, messages, source, source_id, created_at) "
            "VALUES (?, ?, 'bench', ?, 0)",
            ((f"h{p}", json.dumps([{"role": "user", "content": f"Benchmark prompt {p}: " +
                                    "some words " * 10}]), str(p)) for p in range(items)))
        db.conn.executemany(
            "INSERT INTO candidates (prompt_id, run_id, idx, text, token_count, finish_reason, "
            "created_at) VALUES (?, ?, ?, ?, 40, 'stop', 0)",
            ((p + 1, runs[p % 2], j, f"Candidate {j} for prompt {p}. " * 8)
             for p in range(items) for j in range(k)))
    labeling.sync_items(db)
    timings["prompts, candidates, items"] = time.perf_counter() - start

    start = time.perf_counter()
    users = [labeling.add_user(db, f"a{i}", "annotator", "x").id for i in range(annotators)]
    item_rows = db.execute("SELECT i.id, i.prompt_id FROM items i ORDER BY i.id").fetchall()
    candidates = {}
    for prompt_id, cid in db.execute("SELECT prompt_id, id FROM candidates ORDER BY prompt_id, idx"):
        candidates.setdefault(prompt_id, []).append(cid)
    rankings = 0
    with store.transaction(db):
        for item_id, prompt_id in item_rows:
            ids = candidates[prompt_id]
            roll = rng.random()
            if roll < 0.4:
                continue
            if roll < 0.41:  # held right now
                db.execute("INSERT INTO assignments (item_id, user_id, candidate_ids, shown_at, "
                           "expires_at) VALUES (?, ?, ?, ?, ?)",
                           [item_id, rng.choice(users), json.dumps(ids), NOW - 5, NOW + 600])
                continue
            base = list(range(1, k + 1))
            rng.shuffle(base)
            for user in rng.sample(users, rng.choice((1, 2, 2, 3))):
                shown = ids[:]
                rng.shuffle(shown)
                ranks_by_id = dict(zip(ids, base))
                if rng.random() < 0.3:  # this annotator disagrees
                    a, b = rng.sample(ids, 2)
                    ranks_by_id[a], ranks_by_id[b] = ranks_by_id[b], ranks_by_id[a]
                skipped = rng.random() < 0.05
                ranks = None if skipped else [ranks_by_id[c] for c in shown]
                versions = 2 if rng.random() < 0.03 else 1  # a few revised
                assignment = db.execute(
                    "INSERT INTO assignments (item_id, user_id, candidate_ids, shown_at, "
                    "expires_at, submitted_at, skipped) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [item_id, user, json.dumps(shown), 0, 600, 1, int(skipped)]).lastrowid
                previous = None
                for v in range(versions):
                    # Through the vote log's one write path, as the app stores votes.
                    previous = votes.append_vote(db, votes.Vote(
                        submission_key=(f"assignment:{assignment}" if v == 0
                                        else f"revision:{previous}"),
                        user_id=user, prompt_id=prompt_id, item_id=item_id,
                        assignment_id=assignment,
                        submission=Submission(tuple(shown), None if ranks is None
                                              else tuple(ranks), skipped=skipped),
                        demonstration_id=None, shown_at=0,
                        submitted_at=1 + v + rng.random() * 1e6,
                        supersedes=previous)).ranking_id
                    rankings += 1
            if rng.random() < 0.05:
                db.execute("INSERT INTO item_tags (item_id, tag, created_at) VALUES (?, ?, 0)",
                           [item_id, rng.choice(("code", "tables", "chat", "long"))])
            if item_id % 2:
                db.conn.executemany(
                    "INSERT INTO model_scores (candidate_id, scorer, score, created_at) "
                    "VALUES (?, 'bt:/bench', ?, 0)", [(c, rng.gauss(0, 1)) for c in ids])
    timings["votes (triggers keep item_stats)"] = time.perf_counter() - start
    counts = {t: db[t].count for t in ("items", "rankings", "comparisons", "assignments")}
    db.close()
    return {"timings": timings, "counts": counts, "rankings": rankings}


# The peer: the same filters derived from the latest votes on every query, without item_stats.
_LABELS = ("(SELECT COUNT(*) FROM latest_rankings r WHERE r.item_id = i.id AND r.skipped = 0)")
_HELD = ("i.id IN (SELECT a.item_id FROM assignments a WHERE a.submitted_at IS NULL "
         "AND a.expires_at > ?)")
_DISPUTED = """EXISTS (SELECT 1 FROM latest_comparisons c JOIN rankings r ON r.id = c.ranking_id
    WHERE r.item_id = i.id GROUP BY MIN(c.chosen_id, c.rejected_id), MAX(c.chosen_id, c.rejected_id)
    HAVING COUNT(DISTINCT CASE WHEN c.tie THEN -1 ELSE c.chosen_id END) > 1)"""
PEER_WHERE = {
    "all items": ("", []),
    "unassigned": (f"{_LABELS} = 0 AND NOT {_HELD}", [NOW]),
    "in progress": (_HELD, [NOW]),
    "done": (f"{_LABELS} >= 1", []),
    "overlap reached (2)": (f"{_LABELS} >= 2", []),
    "disagreement": (_DISPUTED, []),
    "annotator a3": ("i.id IN (SELECT item_id FROM rankings WHERE user_id = 4)", []),
    "run 2": ("i.run_id = 2", []),
    "tag code": ("i.id IN (SELECT item_id FROM item_tags WHERE tag = 'code')", []),
    "tag code + disagreement": ("i.id IN (SELECT item_id FROM item_tags WHERE tag = 'code') AND "
                                + _DISPUTED, []),
}


def filters():
    from data.browser import ItemFilter

    return {
        "all items": ItemFilter(),
        "unassigned": ItemFilter(status="unassigned"),
        "in progress": ItemFilter(status="in_progress"),
        "done": ItemFilter(status="done"),
        "overlap reached (2)": ItemFilter(status="overlap_reached", overlap=2),
        "disagreement": ItemFilter(status="disagreement"),
        "annotator a3": ItemFilter(annotator="a3"),
        "run 2": ItemFilter(run_id=2),
        "tag code": ItemFilter(tag="code"),
        "tag code + disagreement": ItemFilter(tag="code", status="disagreement"),
    }


def _median_ms(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from data import browser, labeling, store

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/browser.db"
        built = build(path, args.items, args.k, args.annotators)
        print("built:", ", ".join(f"{n} {t}" for t, n in built["counts"].items()))
        for what, seconds in built["timings"].items():
            print(f"  {what}: {seconds:.1f} s")
        db = store.connect(path)
        print(f"\n{'query (count + page of 50)':28} {'browser':>10} {'on the fly':>11} "
              f"{'ratio':>7} {'matches':>8}")
        for name, item_filter in filters().items():
            ms, page = _median_ms(lambda: browser.browse_items(db, item_filter, now=NOW),
                                  args.repeat)
            where, params = PEER_WHERE[name]
            sql = "FROM items i" + (f" WHERE {where}" if where else "")

            def peer():
                total = db.execute(f"SELECT COUNT(*) {sql}", params).fetchone()[0]
                ids = [r[0] for r in db.execute(f"SELECT i.id {sql} ORDER BY i.id LIMIT 50",
                                                params)]
                return total, ids

            peer_ms, (peer_total, peer_ids) = _median_ms(peer, max(1, args.repeat // 2))
            same = page.total == peer_total and [r.item_id for r in page.rows] == peer_ids
            print(f"{name:28} {ms:>8.1f}ms {peer_ms:>9.1f}ms {peer_ms / ms:>6.1f}x "
                  f"{page.total:>8}{'' if same else '  (differs from the peer!)'}")

        deep_page = args.items // 50 // 2
        ms, _ = _median_ms(lambda: browser.browse_items(db, browser.ItemFilter(), page=deep_page,
                                                        now=NOW), args.repeat)
        print(f"\nall items, page {deep_page} of 50 rows (OFFSET {deep_page * 50}): {ms:.1f} ms")
        ms, _ = _median_ms(lambda: browser.browse_items(
            db, browser.ItemFilter(status="disagreement", order="disagreement"), now=NOW),
            args.repeat)
        print(f"disagreement, most disputed first: {ms:.1f} ms")
        sample = random.Random(1).sample(range(1, args.items + 1), 20)
        times = []
        for item_id in sample:
            start = time.perf_counter()
            browser.item_detail(db, item_id, now=NOW)
            times.append(time.perf_counter() - start)
        print(f"item detail (20 items): median {1000 * statistics.median(times):.1f} ms, "
              f"max {1000 * max(times):.1f} ms")
        ms, counts = _median_ms(lambda: browser.vote_counts(db), args.repeat)
        print(f"admin vote counts: {ms:.1f} ms ({counts})")
        policy = labeling.QueuePolicy(overlap=2, timeout_s=60)
        times = []
        for i in range(min(args.repeat, args.annotators)):  # a new task each: no open one
            user = labeling.get_user(db, f"a{i}")
            start = time.perf_counter()
            labeling.next_assignment(db, user.id, policy, now=NOW + i)
            times.append(time.perf_counter() - start)
        print(f"annotator's next task (data.labeling.next_assignment, overlap 2): median "
              f"{1000 * statistics.median(times):.1f} ms")
        db.close()


if __name__ == "__main__":
    main()
