"""Labeling app under load: simulated annotators doing submit + fetch-next, closed and open loop.

    python3 bench/labeler_load.py [--mode both] [--annotators 10 50 100] [--rounds 4]
                                  [--open-annotators 100] [--interval 10] [--duration 60]

Each annotator logs in (gradio_client, the same HTTP API the page uses), then submits a ranking
for the task on screen and receives the next one. The app runs as a real `rankloop app`
process on localhost.

- Closed loop (``--annotators``, ``--rounds``): every annotator submits again as soon as the
  previous answer arrives, so the submissions/s is the most the app sustains.
- Open loop (``--open-annotators``, ``--interval``, ``--duration``): each annotator submits on
  its own schedule, once every ``--interval`` seconds (start times spread evenly), as people
  do; 100 annotators every 10 s is 10 submissions/s. Latency is reported as the service time
  (request sent to answer received) and from the scheduled time (a request that could only be
  sent late, because the previous one was still waiting, counts its wait).

Printed per run: client-observed latency p50/p95/p99, submissions/s, and acknowledged
submissions lost or duplicated in SQLite afterwards (must be 0). The peer, measured in the same
run, is the same work done by as many threads calling the data layer directly (no HTTP, no
Gradio): the floor the app adds to.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

K = 4
RANKS = ["1", "2", "3", "4"]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def _make_db(path: str, annotators: int, items: int) -> None:
    from data import labeling, store
    from labeler.auth import hash_password

    db = store.open_store(path)
    run_id = store.get_or_create_run(db, store.RunSettings("bench", "transformers", K, 0.8, 0.9,
                                                           64, 0))
    with store.transaction(db):
        for p in range(items):
            [prompt_id] = store.upsert_prompts(
                db, [([{"role": "user", "content": f"Benchmark prompt {p}"}], "bench", str(p))])
            store.add_candidates(db, prompt_id, run_id, [
                store.CandidateIn(f"Candidate {j} for prompt {p}. " * 20, 60, "stop")
                for j in range(K)])
    password = hash_password("bench-password")  # one hash: scrypt is slow on purpose
    for i in range(annotators):
        labeling.add_user(db, f"a{i}", "annotator", password)
    labeling.sync_items(db)
    db.close()


def _start_app(db_path: str, port: int) -> subprocess.Popen:
    app = subprocess.Popen(
        [sys.executable, "-m", "launch.cli", "app", "--db", db_path, "--port", str(port),
         "--no-autogenerate"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return app
        except OSError:
            time.sleep(0.3)
    app.kill()
    raise SystemExit("the app did not start")


def _load_task(client) -> dict:
    """The task on screen, as the page's API describes it (``status`` of ``/load_task``)."""
    _html, status, _timer = client.predict(api_name="/load_task")
    return status


def _submit(client, task: dict) -> tuple[int | None, dict]:
    """Ranks the task on screen as the page does (one event, one JSON payload); returns the
    assignment whose vote the app acknowledged (None if it did not) and the next task."""
    _html, status, _timer = client.predict(
        {"assignment_id": task["assignment_id"], "ranks": RANKS, "all_bad": False,
         "rationale": "", "demonstration": ""}, api_name="/submit")
    return (task["assignment_id"] if status["outcome"] == "saved" else None), status


def _run_http(url: str, annotators: int, rounds: int) -> dict:
    from gradio_client import Client

    fetch, submit, acknowledged, errors = [], [], [], []
    spans: list[tuple[float, float]] = []  # each annotator's (first request, last response)
    lock = threading.Lock()
    barrier = threading.Barrier(annotators)  # logins first, then everyone starts together

    def annotator(i: int) -> None:
        try:
            client, _ = _login(Client, url, i)
            barrier.wait()
            began = start = time.perf_counter()
            task = _load_task(client)
            with lock:
                fetch.append(time.perf_counter() - start)
            for _ in range(rounds):
                start = time.perf_counter()
                saved, task = _submit(client, task)
                elapsed = time.perf_counter() - start
                with lock:
                    submit.append(elapsed)
                    if saved is not None:
                        acknowledged.append(saved)
            with lock:
                spans.append((began, time.perf_counter()))
        except Exception as exc:  # reported in the table, not hidden
            with lock:
                errors.append(repr(exc))
            barrier.abort()

    threads = [threading.Thread(target=annotator, args=(i,)) for i in range(annotators)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = max(end for _, end in spans) - min(start for start, _ in spans) if spans else 1.0
    return {"fetch": fetch, "submit": submit, "acknowledged": acknowledged, "errors": errors,
            "wall": wall}


def _schedule(i: int, annotators: int, interval: float) -> float:
    """Annotator i's first submission, offset so that the submissions are evenly spread."""
    return i * interval / annotators


_LOGINS = threading.Semaphore(4)  # logins are not measured: keep them from timing out


def _login(client_class, url: str, i: int, attempts: int = 3):
    """A logged-in client for annotator i and its first task, retrying a login that times
    out (each login checks a deliberately slow password hash)."""
    for attempt in range(attempts):
        try:
            with _LOGINS:
                client = client_class(url, auth=(f"a{i}", "bench-password"), verbose=False)
                return client, _load_task(client)
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)


def _run_http_open(url: str, annotators: int, interval: float, rounds: int) -> dict:
    from gradio_client import Client

    service, scheduled, acknowledged, errors = [], [], [], []
    lock = threading.Lock()
    start_at: list[float] = []
    # Everyone logged in with a task on screen; the clock starts as they are released.
    ready = threading.Barrier(annotators + 1,
                              action=lambda: start_at.append(time.perf_counter() + 0.5))

    def annotator(i: int) -> None:
        try:
            client, task = _login(Client, url, i)
        except Exception as exc:
            with lock:
                errors.append(repr(exc))
            ready.abort()
            return
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            return
        try:
            for n in range(rounds):
                due = start_at[0] + _schedule(i, annotators, interval) + n * interval
                time.sleep(max(0.0, due - time.perf_counter()))
                sent = time.perf_counter()
                saved, task = _submit(client, task)
                done = time.perf_counter()
                with lock:
                    service.append(done - sent)
                    scheduled.append(done - due)
                    if saved is not None:
                        acknowledged.append(saved)
        except Exception as exc:
            with lock:
                errors.append(repr(exc))

    threads = [threading.Thread(target=annotator, args=(i,)) for i in range(annotators)]
    for t in threads:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    began = start_at[0] if start_at else time.perf_counter()
    for t in threads:
        t.join()
    return {"service": service, "scheduled": scheduled, "acknowledged": acknowledged,
            "errors": errors, "wall": time.perf_counter() - began}


def _run_direct_open(db_path: str, annotators: int, interval: float, rounds: int) -> dict:
    from data import labeling, store
    from data.rankings import validate_submission

    service, scheduled, acknowledged, errors = [], [], [], []
    lock = threading.Lock()
    policy = labeling.QueuePolicy()
    start_at: list[float] = []
    # Everyone logged in with a task on screen; the clock starts as they are released.
    ready = threading.Barrier(annotators + 1,
                              action=lambda: start_at.append(time.perf_counter() + 0.5))

    def annotator(i: int) -> None:
        try:
            db = store.connect(db_path)
            user = labeling.get_user(db, f"a{i}")
            task = labeling.next_assignment(db, user.id, policy)
            ready.wait()
            for n in range(rounds):
                due = start_at[0] + _schedule(i, annotators, interval) + n * interval
                time.sleep(max(0.0, due - time.perf_counter()))
                sent = time.perf_counter()
                sub = validate_submission(task.candidate_ids, [int(r) for r in RANKS])
                stored = labeling.submit_assignment(db, task.id, user.id, sub)
                task = labeling.next_assignment(db, user.id, policy)
                done = time.perf_counter()
                with lock:
                    service.append(done - sent)
                    scheduled.append(done - due)
                    if stored.created:
                        acknowledged.append(stored.ranking_id)
        except Exception as exc:
            with lock:
                errors.append(repr(exc))
            ready.abort()

    threads = [threading.Thread(target=annotator, args=(i,)) for i in range(annotators)]
    for t in threads:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        pass
    began = start_at[0] if start_at else time.perf_counter()
    for t in threads:
        t.join()
    return {"service": service, "scheduled": scheduled, "acknowledged": acknowledged,
            "errors": errors, "wall": time.perf_counter() - began}


def _run_direct(db_path: str, annotators: int, rounds: int) -> dict:
    from data import labeling, store
    from data.rankings import validate_submission

    submit, acknowledged, errors = [], [], []
    lock = threading.Lock()
    policy = labeling.QueuePolicy()

    def annotator(i: int) -> None:
        try:
            db = store.connect(db_path)
            user = labeling.get_user(db, f"a{i}")
            task = labeling.next_assignment(db, user.id, policy)
            for _ in range(rounds):
                start = time.perf_counter()
                sub = validate_submission(task.candidate_ids, [int(r) for r in RANKS])
                stored = labeling.submit_assignment(db, task.id, user.id, sub)
                task = labeling.next_assignment(db, user.id, policy)
                with lock:
                    submit.append(time.perf_counter() - start)
                    if stored.created:
                        acknowledged.append(stored.ranking_id)
        except Exception as exc:
            with lock:
                errors.append(repr(exc))

    threads = [threading.Thread(target=annotator, args=(i,)) for i in range(annotators)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"submit": submit, "acknowledged": acknowledged, "errors": errors,
            "wall": time.perf_counter() - start}


def _check_store(db_path: str, acknowledged: list[int], *, by: str = "assignment"
                 ) -> tuple[int, int]:
    """(acknowledged submissions missing from SQLite, assignments voted on more than once).

    ``acknowledged`` holds assignment ids (``by="assignment"``, what the page knows) or
    ranking ids (``by="ranking"``, what the data layer returns)."""
    from data import store

    db = store.connect(db_path)
    if by == "assignment":
        stored = {r[0] for r in db.execute("SELECT assignment_id FROM rankings")}
    else:
        stored = {r[0] for r in db.execute("SELECT id FROM rankings")}
    lost = sum(a not in stored for a in acknowledged)
    # One vote per assignment: a second row for an assignment is a duplicated vote.
    duplicated = db.execute("SELECT COUNT(*) - COUNT(DISTINCT assignment_id) FROM rankings"
                            ).fetchone()[0]
    db.close()
    return lost, duplicated


def _closed_loop(args) -> None:
    rows = []
    for n in args.annotators:
        with tempfile.TemporaryDirectory() as tmp:
            items = n * (args.rounds + 2)
            http_db, direct_db = f"{tmp}/http.db", f"{tmp}/direct.db"
            _make_db(http_db, n, items)
            _make_db(direct_db, n, items)
            app = _start_app(http_db, args.port)
            try:
                http = _run_http(f"http://127.0.0.1:{args.port}/", n, args.rounds)
            finally:
                app.terminate()
                app.wait()
            direct = _run_direct(direct_db, n, args.rounds)
            lost, duplicated = _check_store(http_db, http["acknowledged"])
            direct_lost, direct_dup = _check_store(direct_db, direct["acknowledged"], by="ranking")
            rows.append((n, http, direct, lost + direct_lost, duplicated + direct_dup))
            print(f"closed loop N={n}: {len(http['acknowledged'])} submissions over HTTP, "
                  f"{len(http['errors'])} client errors {http['errors'][:1]}; direct: "
                  f"{len(direct['errors'])} errors {direct['errors'][:1]}", flush=True)

    print("\nclosed loop (each annotator submits again as soon as the answer arrives)")
    print(f"{'N':>4} {'fetch p50':>10} {'p95':>7} {'p99':>7} {'submit p50':>11} {'p95':>7} "
          f"{'p99':>7} {'subs/s':>8} {'direct subs/s':>14} {'direct/app':>11} {'lost':>5} "
          f"{'dup':>4}")
    for n, http, direct, lost, duplicated in rows:
        ms = [1000 * _percentile(http[key], q) for key in ("fetch", "submit")
              for q in (50, 95, 99)]
        rate = len(http["acknowledged"]) / http["wall"] or float("nan")
        direct_rate = len(direct["acknowledged"]) / direct["wall"]
        print(f"{n:>4} {ms[0]:>8.0f}ms {ms[1]:>5.0f}ms {ms[2]:>5.0f}ms {ms[3]:>9.0f}ms "
              f"{ms[4]:>5.0f}ms {ms[5]:>5.0f}ms {rate:>8.1f} {direct_rate:>14.1f} "
              f"{direct_rate / rate:>10.1f}x {lost:>5} {duplicated:>4}")
    print("latency: as seen by the client, submit includes receiving the next task;"
          " direct: the same submissions through data/labeling.py from N threads, no server;"
          " lost/dup: app and direct together")
    print(f"median direct submit+next latency at N={rows[-1][0]}: "
          f"{1000 * statistics.median(rows[-1][2]['submit']):.1f} ms")


def _open_loop(args) -> None:
    n, interval = args.open_annotators, args.interval
    rounds = max(1, int(round(args.duration / interval)))
    with tempfile.TemporaryDirectory() as tmp:
        items = n * (rounds + 2)
        http_db, direct_db = f"{tmp}/http.db", f"{tmp}/direct.db"
        _make_db(http_db, n, items)
        _make_db(direct_db, n, items)
        app = _start_app(http_db, args.port)
        try:
            http = _run_http_open(f"http://127.0.0.1:{args.port}/", n, interval, rounds)
        finally:
            app.terminate()
            app.wait()
        direct = _run_direct_open(direct_db, n, interval, rounds)
        lost, duplicated = _check_store(http_db, http["acknowledged"])
        direct_lost, direct_dup = _check_store(direct_db, direct["acknowledged"], by="ranking")
    offered = n / interval
    print(f"\nopen loop: {n} annotators, one submission each every {interval:g} s "
          f"(offered {offered:.1f}/s) for {rounds} rounds")
    print(f"{'':8} {'service p50':>12} {'p95':>7} {'p99':>7} {'from schedule p95':>18} "
          f"{'p99':>7} {'max':>7} {'subs/s':>7} {'acked':>6} {'errors':>7} {'lost':>5} {'dup':>4}")
    for name, result, lost_n, dup_n in (("app", http, lost, duplicated),
                                        ("direct", direct, direct_lost, direct_dup)):
        ms = [1000 * _percentile(result["service"], q) for q in (50, 95, 99)]
        late = [1000 * _percentile(result["scheduled"], q) for q in (95, 99, 100)]
        rate = len(result["acknowledged"]) / result["wall"] if result["wall"] else float("nan")
        print(f"{name:8} {ms[0]:>10.0f}ms {ms[1]:>5.0f}ms {ms[2]:>5.0f}ms {late[0]:>16.0f}ms "
              f"{late[1]:>5.0f}ms {late[2]:>5.0f}ms {rate:>7.1f} {len(result['acknowledged']):>6} "
              f"{len(result['errors']):>7} {lost_n:>5} {dup_n:>4}")
        if result["errors"]:
            print(f"  first error ({name}): {result['errors'][0]}")
    app_p95 = _percentile(http["scheduled"], 95)
    direct_p95 = _percentile(direct["scheduled"], 95)
    print(f"submit-and-next p95 from schedule: app {1000 * app_p95:.0f} ms, data layer alone "
          f"{1000 * direct_p95:.1f} ms (app/direct {app_p95 / direct_p95:.0f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("closed", "open", "both"), default="both")
    parser.add_argument("--annotators", type=int, nargs="+", default=[10, 50, 100],
                        help="closed loop: concurrent annotators, one run per value")
    parser.add_argument("--rounds", type=int, default=4,
                        help="closed loop: submissions per annotator")
    parser.add_argument("--open-annotators", type=int, default=100,
                        help="open loop: annotators, each on its own schedule")
    parser.add_argument("--interval", type=float, default=10.0,
                        help="open loop: seconds between one annotator's submissions")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="open loop: seconds of submitting")
    parser.add_argument("--port", type=int, default=7931)
    args = parser.parse_args()
    if args.mode in ("closed", "both"):
        _closed_loop(args)
    if args.mode in ("open", "both"):
        _open_loop(args)


if __name__ == "__main__":
    main()
