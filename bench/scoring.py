"""Scoring throughput: `rankloop score` in one process against N processes under
`accelerate launch`, on the same database and reward model.

    python3 bench/scoring.py [--model default] [--candidates 256] [--processes 2]
        [--batch-size 8] [--rounds 2]

The reward model is a one-label classifier on ``--model`` (a random head on SmolLM2-135M by
default: the speed of scoring does not depend on what the head learned). Each run starts from
a copy of the same database, is timed end to end (process start, model load, scoring, the one
write) and by the scoring time the command reports. ``--rounds`` alternates the two
(1, N, N, 1, ...) so load from other work on a shared machine hits both alike; the table shows
the best and the median round of each, then the ratio of the best rounds and a check that
both stored the same scores.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_reward_model(model: str, folder: Path) -> str:
    import torch
    from transformers import AutoModelForSequenceClassification

    from training.models import load_tokenizer, resolve_model

    path = resolve_model(model)
    tokenizer = load_tokenizer(path)
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1,
                                                            dtype=torch.float32)
    rm.config.pad_token_id = tokenizer.pad_token_id
    rm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def build_db(path: Path, n: int) -> None:
    """Bundled prompts with replies of varied length, 4 per prompt."""
    from data import store
    from data.prompts import load_prompts

    prompts = load_prompts(limit=max(1, n // 4)).prompts
    words = "the river runs past the stone bridge and on toward a quiet town".split()
    db = store.open_store(path)
    run = store.get_or_create_run(db, store.RunSettings("bench", "transformers", 4, 0.8, 0.9,
                                                        256, 0))
    made = 0
    for i, prompt in enumerate(prompts):
        [pid] = store.upsert_prompts(db, [(prompt.messages, "bundled", str(i))])
        k = min(4, n - made)
        store.add_candidates(db, pid, run, [
            store.CandidateIn(" ".join(words[(i + j + w) % len(words)]
                                       for w in range(8 + 24 * ((i + j) % 6))), 1, "stop")
            for j in range(k)])
        made += k
    db.close()


def run(command: list[str], threads: int) -> tuple[float, float, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    line = next(l for l in result.stdout.splitlines() if l.startswith("scored"))
    scoring = float(re.search(r" in ([0-9.]+) s", line).group(1))
    return wall, scoring, line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--candidates", type=int, default=256)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, alternating")
    args = parser.parse_args()

    import torch

    from data import store

    tmp = Path(tempfile.mkdtemp(prefix="rankloop-bench-score-"))
    try:
        rm = build_reward_model(args.model, tmp / "rm")
        build_db(tmp / "base.db", args.candidates)
        on_gpu = torch.cuda.is_available()
        cores = os.cpu_count() or 1
        device = f"{torch.cuda.device_count()} GPU(s)" if on_gpu else f"cpu ({cores} cores)"
        print(f"reward model on {args.model} | {args.candidates} candidates | batch "
              f"{args.batch_size} | {device}", flush=True)
        common = ["score", "--scorer", f"bt:{rm}", "--batch-size", str(args.batch_size),
                  "--no-progress"]
        runs: dict[int, list[tuple[float, float]]] = {1: [], args.processes: []}
        scores = {}
        order = [(1, args.processes) if r % 2 == 0 else (args.processes, 1)
                 for r in range(args.rounds)]
        for processes in (p for pair in order for p in pair):
            db = tmp / f"p{processes}.db"
            shutil.copy(tmp / "base.db", db)
            if processes == 1:
                command = [sys.executable, "-m", "launch.cli", *common, "--db", str(db)]
            else:
                command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
                           "--num_processes", str(processes), "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no",
                           "-m", "launch.cli", *common, "--db", str(db)]
            # On CPU the processes share the cores; on a GPU each has its own device.
            threads = cores if on_gpu or processes == 1 else max(1, cores // processes)
            wall, scoring, line = run(command, threads)
            print(f"  {processes} process(es): {line}", flush=True)
            runs[processes].append((wall, scoring))
            conn = store.open_store(db)
            texts = {r["id"]: r["text"] for r in conn["candidates"].rows}
            scores[processes] = sorted((texts[c], round(s.score, 4)) for c, s in
                                       store.model_scores(conn, f"bt:{rm}").items())
            conn.close()
        print()
        print(f"{'processes':<12}{'best wall s':>12}{'best scoring s':>16}{'median scoring s':>18}"
              f"{'best candidates/s':>19}")
        best = {}
        for processes, results in runs.items():
            walls, scorings = sorted(w for w, _ in results), sorted(s for _, s in results)
            best[processes] = (walls[0], scorings[0])
            print(f"{processes:<12}{walls[0]:>12.1f}{scorings[0]:>16.1f}"
                  f"{scorings[len(scorings) // 2]:>18.1f}{args.candidates / scorings[0]:>19.1f}")
        (wall1, s1), (wall2, s2) = best[1], best[args.processes]
        print(f"\n{args.processes} processes / 1 process (best rounds): {s1 / s2:.2f}x scoring "
              f"throughput, {wall1 / wall2:.2f}x end to end; same scores (4 decimals): "
              f"{scores[1] == scores[args.processes]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
