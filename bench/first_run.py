"""A newcomer's first minute: `rankloop app` on an empty database, in a real browser.

    python3 bench/first_run.py [--runs 1] [--port 7951] [--budget 60]

Each run starts `rankloop app` on a new, empty database (it creates an admin and starts
generating candidates for the bundled prompts with the embedded model), opens the page in
headless Chromium as soon as the app says it is serving, logs in as that admin, opens the
Rank tab and waits until a candidate can be ranked. Printed per run: seconds from starting
the app to the page answering, from the first page load to the first rankable item, the
first-run progress text the page showed while waiting, and how many prompts were done then.

The peer, measured in the same run: the generation job's own time to store the first item
(from its start to the first candidates in SQLite), the floor the page adds to.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
RANKABLE = "#rl-cand-0 .rl-cand-body, #rl-bar .rl-rank-btn"


def _start_app(db_path: str, port: int) -> tuple[subprocess.Popen, str, float]:
    started = time.perf_counter()
    app = subprocess.Popen(
        [sys.executable, "-m", "launch.cli", "app", "--db", db_path, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    password = None
    while password is None:
        line = app.stdout.readline()
        if not line and app.poll() is not None:
            raise SystemExit("the app stopped before creating its admin")
        match = re.search(r"created user 'admin' with password (\S+)", line)
        password = match.group(1) if match else None
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return app, password, time.perf_counter() - started
        except OSError:
            time.sleep(0.1)
    app.kill()
    raise SystemExit("the app did not start")


def _first_item_seconds(db_path: str) -> float | None:
    """The generation job's time from its start to the first stored candidates."""
    from data import store

    db = store.connect(db_path)
    row = db.execute("SELECT MIN(c.created_at) - j.started_at FROM candidates c, jobs j "
                     "WHERE j.kind = 'generate'").fetchone()
    db.close()
    return row[0] if row else None


def one_run(browser, port: int, budget: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        db_path = f"{tmp}/new.db"
        app, password, serving = _start_app(db_path, port)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            loaded = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("input").nth(0).fill("admin")
            page.locator("input").nth(1).fill(password)
            page.get_by_role("button", name="Login").click()
            page.wait_for_selector("#rl-user")  # logged in: the header names the user
            page.get_by_role("tab", name="Rank").click()
            waiting_text = ""
            deadline = loaded + max(budget * 3, 180)
            while time.perf_counter() < deadline:
                if page.locator(RANKABLE).first.is_visible():
                    break
                text = page.locator("#rl-screen").inner_text(timeout=2000) \
                    if page.locator("#rl-screen").count() else ""
                if "prompt" in text.lower() and not waiting_text:
                    waiting_text = " ".join(text.split())[:160]
                time.sleep(0.2)
            rankable = time.perf_counter() - loaded
            ok = page.locator(RANKABLE).first.is_visible()
            page.close()
            first_item = _first_item_seconds(db_path)
        finally:
            app.terminate()
            app.wait()
    return {"serving": serving, "rankable": rankable if ok else None,
            "waiting_text": waiting_text, "first_item": first_item}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--port", type=int, default=7951)
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds a newcomer should wait at most (reported, not enforced)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for n in range(args.runs):
            rows.append(one_run(browser, args.port + n, args.budget))
            print(f"run {n + 1}: {rows[-1]}", flush=True)
        browser.close()
    print(f"\n{'run':>4} {'app serving':>12} {'page → rankable':>16} {'job → first item':>17} "
          f"{'within budget':>14}")
    for n, r in enumerate(rows, 1):
        rankable = "never" if r["rankable"] is None else f"{r['rankable']:.1f} s"
        first = "n/a" if r["first_item"] is None else f"{r['first_item']:.1f} s"
        within = r["rankable"] is not None and r["rankable"] <= args.budget
        print(f"{n:>4} {r['serving']:>10.1f} s {rankable:>16} {first:>17} "
              f"{'yes' if within else 'no':>14}")
    print(f"budget: the first item rankable within {args.budget:.0f} s of the first page load; "
          "the page showed while waiting: " + (rows[-1]["waiting_text"] or "(nothing captured)"))


if __name__ == "__main__":
    main()
