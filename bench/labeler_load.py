"""Labeling app under load: simulated annotators doing submit + fetch-next, closed and open loop.

    python3 bench/labeler_load.py [--mode both] [--transports page gradio]
                                  [--annotators 10 50 100] [--rounds 4]
                                  [--open-annotators 100] [--interval 10] [--duration 60]

Each annotator logs in, then submits a ranking for the task on screen and receives the next
one, against a real `rankloop app` process on localhost, through one of two transports:

- ``page``: the JSON routes the Rank tab's script calls (``labeler/rank_api.py``), one
  keep-alive HTTP client (httpx) per annotator, as a browser tab is;
- ``gradio``: the same actions as Gradio events (``/submit``, ``/load_task``), one gradio_client
  per annotator: what API clients use, and what the page itself sent before its routes.

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
Gradio): the floor the app adds to. Client and app share this machine's cores.
"""

from __future__ import annotations

import argparse
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
PASSWORD = "bench-password"


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
    password = hash_password(PASSWORD)  # one hash: scrypt is slow on purpose
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
            if app.poll() is not None:
                raise SystemExit(f"the app exited with {app.returncode}: is port {port} free?")
            time.sleep(0.3)
    app.kill()
    raise SystemExit("the app did not start")


# --- annotators: each transport logs in, loads its task, submits and gets the next ----------

def _ranking(task: dict) -> dict:
    return {"assignment_id": task["assignment_id"], "ranks": RANKS, "all_bad": False,
            "rationale": "", "demonstration": ""}


class PageAnnotator:
    """The page's JSON routes, with the login cookie of Gradio's login form."""

    def __init__(self, url: str, i: int):
        import httpx

        self.client = httpx.Client(base_url=url, timeout=60)
        response = self.client.post("login", data={"username": f"a{i}", "password": PASSWORD})
        response.raise_for_status()

    def _screen(self, action: str, payload: dict) -> dict:
        response = self.client.post(f"rank/api/{action}", json=payload)
        response.raise_for_status()
        return response.json()["status"]

    def load_task(self) -> dict:
        return self._screen("screen", {})

    def submit(self, task: dict) -> tuple[int | None, dict]:
        """The assignment whose vote the app acknowledged (None if it did not), the next task."""
        status = self._screen("submit", _ranking(task))
        return (task["assignment_id"] if status["outcome"] == "saved" else None), status

    def close(self) -> None:
        self.client.close()


class GradioAnnotator:
    """The Gradio events, through gradio_client."""

    def __init__(self, url: str, i: int):
        from gradio_client import Client

        self.client = Client(url, auth=(f"a{i}", PASSWORD), verbose=False)

    def load_task(self) -> dict:
        return self.client.predict(api_name="/load_task")[1]

    def submit(self, task: dict) -> tuple[int | None, dict]:
        status = self.client.predict(_ranking(task), api_name="/submit")[1]
        return (task["assignment_id"] if status["outcome"] == "saved" else None), status

    def close(self) -> None:
        self.client.close()


class DirectAnnotator:
    """The same work through data/labeling.py, no server: the floor the app adds to."""

    def __init__(self, db_path: str, i: int):
        from data import labeling, store

        self.db = store.connect(db_path)
        self.user = labeling.get_user(self.db, f"a{i}")
        self.policy = labeling.QueuePolicy()

    def load_task(self):
        from data import labeling

        return labeling.next_assignment(self.db, self.user.id, self.policy)

    def submit(self, task) -> tuple[int | None, object]:
        from data import labeling
        from data.rankings import validate_submission

        sub = validate_submission(task.candidate_ids, [int(r) for r in RANKS])
        stored = labeling.submit_assignment(self.db, task.id, self.user.id, sub)
        return (task.id if stored.created else None), self.load_task()

    def close(self) -> None:
        self.db.close()


TRANSPORTS = {"page": PageAnnotator, "gradio": GradioAnnotator}
_LOGINS = threading.Semaphore(4)  # logins are not measured: keep them from timing out


def _login(make, target: str, i: int, attempts: int = 3):
    """A logged-in annotator and its first task, retrying a login that times out (each login
    checks a deliberately slow password hash)."""
    for attempt in range(attempts):
        try:
            with _LOGINS:
                annotator = make(target, i)
                return annotator, annotator.load_task()
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)


def _run(make, target: str, annotators: int, rounds: int, interval: float | None) -> dict:
    """``annotators`` threads, each logged in with a task on screen before the clock starts,
    then submitting ``rounds`` times: at once after each answer (``interval`` None, closed
    loop) or once every ``interval`` seconds from its own start (open loop)."""
    service, scheduled, acknowledged, errors = [], [], [], []
    lock = threading.Lock()
    start_at: list[float] = []
    ready = threading.Barrier(annotators + 1,
                              action=lambda: start_at.append(time.perf_counter() + 0.5))

    def annotator(i: int) -> None:
        try:
            person, task = _login(make, target, i)
        except Exception as exc:  # reported in the table, not hidden
            with lock:
                errors.append(repr(exc))
            ready.abort()
            return
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            return
        try:
            due = start_at[0]
            if interval is not None:
                due += i * interval / annotators  # evenly spread first submissions
            for _ in range(rounds):
                time.sleep(max(0.0, due - time.perf_counter()))
                sent = time.perf_counter()
                saved, task = person.submit(task)
                done = time.perf_counter()
                with lock:
                    service.append(done - sent)
                    scheduled.append(done - due)
                    if saved is not None:
                        acknowledged.append(saved)
                due = due + interval if interval is not None else done
        except Exception as exc:
            with lock:
                errors.append(repr(exc))
        finally:
            person.close()

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


def _measure(name: str, tmp: str, port: int, annotators: int, rounds: int,
             interval: float | None) -> dict:
    """One run of transport ``name`` (or ``direct``) on a database of its own."""
    db_path = f"{tmp}/{name}-{annotators}.db"
    _make_db(db_path, annotators, annotators * (rounds + 2))
    if name == "direct":
        result = _run(DirectAnnotator, db_path, annotators, rounds, interval)
    else:
        app = _start_app(db_path, port)
        try:
            result = _run(TRANSPORTS[name], f"http://127.0.0.1:{port}/", annotators, rounds,
                          interval)
        finally:
            app.terminate()
            app.wait()
    result["lost"], result["duplicated"] = _check_store(db_path, result["acknowledged"])
    result["rate"] = len(result["acknowledged"]) / result["wall"] if result["wall"] else 0.0
    print(f"  {name:>6} N={annotators}: {len(result['acknowledged'])} acknowledged, "
          f"{len(result['errors'])} errors {result['errors'][:1]}", flush=True)
    return result


def _check_store(db_path: str, acknowledged: list[int]) -> tuple[int, int]:
    """(acknowledged submissions missing from SQLite, assignments voted on more than once);
    ``acknowledged`` holds the assignment ids whose votes the app said it saved."""
    from data import store

    db = store.connect(db_path)
    stored = {r[0] for r in db.execute("SELECT assignment_id FROM rankings")}
    lost = sum(a not in stored for a in acknowledged)
    # One vote per assignment: a second row for an assignment is a duplicated vote.
    duplicated = db.execute("SELECT COUNT(*) - COUNT(DISTINCT assignment_id) FROM rankings"
                            ).fetchone()[0]
    db.close()
    return lost, duplicated


def _ms(values: list[float], q: float) -> float:
    return 1000 * _percentile(values, q)


def _closed_loop(args) -> None:
    names = [*args.transports, "direct"]
    results: dict[tuple[int, str], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.annotators:
            for name in names:
                results[n, name] = _measure(name, tmp, args.port, n, args.rounds, None)
    print("\nclosed loop (each annotator submits again as soon as the answer arrives)")
    print(f"{'N':>4} {'transport':>9} {'submit p50':>11} {'p95':>7} {'p99':>7} {'subs/s':>8} "
          f"{'direct/this':>12} {'errors':>7} {'lost':>5} {'dup':>4}")
    for n in args.annotators:
        direct = results[n, "direct"]["rate"]
        for name in names:
            r = results[n, name]
            print(f"{n:>4} {name:>9} {_ms(r['service'], 50):>9.0f}ms "
                  f"{_ms(r['service'], 95):>5.0f}ms {_ms(r['service'], 99):>5.0f}ms "
                  f"{r['rate']:>8.1f} {direct / r['rate'] if r['rate'] else float('nan'):>11.1f}x"
                  f" {len(r['errors']):>7} {r['lost']:>5} {r['duplicated']:>4}")
    print("submit: sent to answered, the answer being the next task; direct: the same "
          "submissions through data/labeling.py from N threads, no server")


def _open_loop(args) -> None:
    n, interval = args.open_annotators, args.interval
    rounds = max(1, int(round(args.duration / interval)))
    names = [*args.transports, "direct"]
    with tempfile.TemporaryDirectory() as tmp:
        results = {name: _measure(name, tmp, args.port, n, rounds, interval) for name in names}
    print(f"\nopen loop: {n} annotators, one submission each every {interval:g} s "
          f"(offered {n / interval:.1f}/s) for {rounds} rounds")
    print(f"{'transport':>9} {'service p50':>12} {'p95':>7} {'p99':>7} {'from schedule p95':>18} "
          f"{'p99':>7} {'max':>7} {'subs/s':>7} {'acked':>6} {'errors':>7} {'lost':>5} "
          f"{'dup':>4}")
    for name in names:
        r = results[name]
        print(f"{name:>9} {_ms(r['service'], 50):>10.0f}ms {_ms(r['service'], 95):>5.0f}ms "
              f"{_ms(r['service'], 99):>5.0f}ms {_ms(r['scheduled'], 95):>16.0f}ms "
              f"{_ms(r['scheduled'], 99):>5.0f}ms {_ms(r['scheduled'], 100):>5.0f}ms "
              f"{r['rate']:>7.1f} {len(r['acknowledged']):>6} {len(r['errors']):>7} "
              f"{r['lost']:>5} {r['duplicated']:>4}")
        if r["errors"]:
            print(f"  first error ({name}): {r['errors'][0]}")
    direct_p95 = _percentile(results["direct"]["scheduled"], 95)
    for name in args.transports:
        p95 = _percentile(results[name]["scheduled"], 95)
        print(f"submit-and-next p95 from schedule, {name}: {1000 * p95:.0f} ms "
              f"(data layer alone {1000 * direct_p95:.1f} ms, {p95 / direct_p95:.0f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("closed", "open", "both"), default="both")
    parser.add_argument("--transports", nargs="+", choices=sorted(TRANSPORTS),
                        default=["page", "gradio"], help="how the annotators reach the app")
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
