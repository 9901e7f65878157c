"""Work an annotator can trigger stays bounded: "Show the differences" on long unrelated
candidates (served route), and "Show all" on a 300,000-character run without a space
(headless Chromium). The bounds here are loose on purpose (a slow shared machine passes
them); bench/diff_cost.py measures the cost."""

from __future__ import annotations

import random
import time

import httpx
import pytest

from data import labeling, store
from labeler.render import MAX_DIFF_CHARS, word_diff
from tests.integration.test_app_browser import _login
from tests.labeling_fixtures import PASSWORD, make_labeling_db
from tests.security.conftest import serve_db

LOOSE_S = 5.0
"""Far above what the work takes (a fraction of a second), far below what it took before
(35 s for the 1,000-word diff, 35 s and more for Show all)."""


def punctuated(words: int, letters: str, seed: int) -> str:
    """Words of a small vocabulary, each with a punctuation mark: two such texts share only
    spaces and marks, which cost difflib the cube of their length."""
    rng = random.Random(seed)
    return " ".join(rng.choice(letters) * 3 + rng.choice(".,;:!?") for _ in range(words))


THAI_RUN = "ภาษาไทยไม่มีช่องว่าง" * 15_000  # 300,000 characters, no space, broken by dictionary


def _db_with(path, texts: list[str]) -> str:
    db_path = make_labeling_db(path, n_prompts=0)
    db = store.open_store(db_path)
    run = store.get_or_create_run(db, store.RunSettings("default", "transformers", len(texts),
                                                        0.8, 0.9, 256, 0))
    [prompt] = store.upsert_prompts(db, [([{"role": "user", "content": "Write."}], "t", "0")])
    store.add_candidates(db, prompt, run, [store.CandidateIn(t, 5, "stop") for t in texts])
    labeling.sync_items(db)
    db.close()
    return db_path


def test_the_word_diff_of_long_unrelated_texts_is_bounded():
    a, b = punctuated(1000, "abcdefghij", 1), punctuated(1000, "klmnopqrst", 2)
    start = time.perf_counter()
    runs = word_diff(a, b)
    assert time.perf_counter() - start < LOOSE_S
    assert "".join(t for op, t in runs if op != "ins") == a
    assert "".join(t for op, t in runs if op != "del") == b
    # At the longest texts compared, a near copy still shows just its changes.
    words = (MAX_DIFF_CHARS // 7) * ["word"]
    words[len(words) // 2] = "changed"
    base = " ".join(words)
    near = base.replace("changed", "altered")
    start = time.perf_counter()
    runs = word_diff(base, near)
    assert time.perf_counter() - start < LOOSE_S
    assert [r for r in runs if r[0] != "same"] == [("del", "changed"), ("ins", "altered")]


def test_show_the_differences_answers_quickly_over_the_route(tmp_path):
    texts = [punctuated(1000, "abcdefghij", 1), punctuated(1000, "klmnopqrst", 2),
             "x " * (MAX_DIFF_CHARS // 2 + 1)]
    served, _, origin = serve_db(_db_with(tmp_path / "diff.db", texts))
    try:
        with httpx.Client(base_url=origin + "/", timeout=120) as ann:
            ann.post("login", data={"username": "ann", "password": PASSWORD}).raise_for_status()
            task = ann.post("rank/api/screen", json={}).json()["status"]["assignment_id"]
            # Every pair of the three: two hold the long text, one does not, whatever the
            # shuffled order the annotator sees.
            pairs = [(0, 1), (0, 2), (1, 2)]
            for a, b in pairs:  # warms the route up
                ann.post("rank/api/diff", json={"assignment_id": task, "a": a, "b": b})
            lengths, shown = {}, []
            for a, b in pairs:
                start = time.perf_counter()
                answer = ann.post("rank/api/diff", json={"assignment_id": task, "a": a, "b": b})
                lengths[(a, b)] = time.perf_counter() - start
                assert answer.status_code == 200, answer.text
                shown.append(answer.json()["html"])
        assert max(lengths.values()) < LOOSE_S, lengths
        long_pair = [h for h in shown if "Not compared" in h]
        compared = [h for h in shown if "Not compared" not in h]
        assert len(long_pair) == 2 and len(compared) == 1
        assert all('class="rl-diff-del"' in h for h in compared)
        for html in long_pair:
            assert f"up to {MAX_DIFF_CHARS:,}" in html
    finally:
        served.close()


@pytest.fixture
def long_run_app(tmp_path):
    db_path = _db_with(tmp_path / "long.db", [THAI_RUN, "A short answer."])
    served, _, origin = serve_db(db_path)
    yield origin + "/"
    served.close()


def test_show_all_on_a_300000_character_run_keeps_the_page_responsive(browser, long_run_app):
    page, _ = _login(browser, long_run_app, "ann", (1280, 800))
    page.wait_for_selector("#rl-screen .rl-task[data-mode=task]")
    page.set_default_timeout(300_000)  # a frozen page fails the bound below, not a timeout
    summary = page.locator(".rl-long summary")
    assert summary.inner_text().startswith("Show all (300,000 characters)")
    start = time.perf_counter()
    summary.click()
    shown = page.evaluate("document.querySelector('.rl-long details').open && "
                          "document.querySelector('.rl-long details').getBoundingClientRect()"
                          ".height")
    waited = time.perf_counter() - start
    assert shown > 1000 and waited < LOOSE_S, (shown, waited)
    # The whole text is on the page unchanged: what is copied is what the model wrote.
    text = page.evaluate("document.querySelector('.rl-long details > .rl-md, .rl-long details')"
                         ".innerText")
    assert THAI_RUN in text.replace("\n", "")
    # The page still answers at once, and the ranks still work.
    start = time.perf_counter()
    page.locator("#rl-rank-0 [data-rank='1']").click()
    assert page.evaluate("1 + 1") == 2 and time.perf_counter() - start < LOOSE_S
    # Expand shows the whole text too (not the preview), and the page still answers.
    summary.click()  # folded again
    start = time.perf_counter()
    page.locator(".rl-candidate:has(.rl-long) [data-rl-action=expand]").click()
    height = page.evaluate("document.querySelector('.rl-expanded .rl-long details').open && "
                           "document.querySelector('.rl-expanded .rl-long details')"
                           ".getBoundingClientRect().height")
    assert height > 1000 and time.perf_counter() - start < LOOSE_S, height
