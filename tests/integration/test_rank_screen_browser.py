"""The Rank screen in headless Chromium at desktop and phone sizes, on realistic items (long
explanations, code, tables, conversations): where a new task opens, the ranking bar under
long answers, layouts, expand, differences, badges, headings and chat bubbles. Screenshots go
to test-artifacts/."""

from __future__ import annotations

import json

import pytest

from data import labeling, settings, store
from tests.integration.conftest import serve_db
from tests.browser import ARTIFACTS
from tests.integration.test_app_browser import _login
from tests.labeling_fixtures import make_labeling_db

VIEWPORTS = {"desktop": (1440, 900), "laptop": (1280, 720), "phone": (390, 844)}

_PARAGRAPH = ("A hash table stores each key in a bucket chosen by its hash, so a lookup "
              "reads one bucket instead of the whole table. Collisions are kept in a short "
              "list per bucket, and the table doubles when it is three quarters full. ")
EXPLANATION = ("# How a hash table works\n\n" + "\n\n".join(
    f"{i + 1}. {_PARAGRAPH}" for i in range(22)) + "\n\n## Cost\n\n| operation | average |"
    " worst |\n|---|---|---|\n| lookup | O(1) | O(n) |\n| insert | O(1) | O(n) |\n")
NEAR_COPY = EXPLANATION.replace("doubles when", "grows when", 1).replace(
    "three quarters", "two thirds", 1)
CODE = ("Here is a small one:\n\n```python\nclass Table:\n    def __init__(self):\n"
        "        self.buckets = [[] for _ in range(8)]\n\n    def put(self, key, value):\n"
        "        self.buckets[hash(key) % 8].append((key, value))\n```\n\n"
        "| step | what happens |\n|---|---|\n| hash | pick a bucket |\n| append | store |\n\n"
        "And then the table")  # cut off by the token limit
CHAT = [{"role": "system", "content": "You are a careful maths tutor."},
        {"role": "user", "content": "What is a prime number?"},
        {"role": "assistant", "content": "A whole number above 1 with no divisors but 1 "
                                         "and itself."},
        {"role": "user", "content": "Is 91 prime?"}]


def make_rich_db(path) -> str:
    """Two realistic items (a long explanation, a conversation) and three short ones, k=4."""
    db_path = make_labeling_db(path, n_prompts=0)
    db = store.open_store(db_path)
    run = store.get_or_create_run(db, store.RunSettings("default", "transformers", 4, 0.8,
                                                        0.9, 256, 0))
    items = [
        ([{"role": "user", "content": "Explain how a hash table works, with code."}],
         [(EXPLANATION, "stop"), (NEAR_COPY, "stop"), (CODE, "length"),
          ("# Short\n\nBuckets and hashes.", "stop")]),
        (CHAT, [("No: 91 = 7 × 13.", "stop"), ("", "stop"), ("Yes, 91 is prime.", "stop"),
                ("91 is 7 times 13, so it is not prime.", "stop")]),
    ] + [([{"role": "user", "content": f"Short question {i}?"}],
          [(f"Answer {i}.{j}", "stop") for j in range(4)]) for i in range(3)]
    for n, (messages, candidates) in enumerate(items):
        [prompt] = store.upsert_prompts(db, [(messages, "rich", str(n))])
        store.add_candidates(db, prompt, run, [store.CandidateIn(t, 50, r)
                                               for t, r in candidates])
    labeling.sync_items(db)
    db.close()
    return db_path


@pytest.fixture
def rich_app(tmp_path):
    db_path = make_rich_db(tmp_path / "rich.db")
    served, svc, origin = serve_db(db_path)
    yield {"url": origin + "/", "db": db_path, "svc": svc}
    served.close()


def set_layout(db_path, user, layout):
    db = store.open_store(db_path)
    settings.set_user_setting(db, labeling.get_user(db, user).id, "layout", layout)


def wait_task(page, previous=None) -> int:
    """Waits for a task screen other than ``previous``; returns its assignment id."""
    page.wait_for_function(
        "(prev) => { const el = document.querySelector('#rl-screen .rl-task');"
        " return el && ['task', 'revise'].includes(el.dataset.mode) &&"
        " el.dataset.assignment !== prev; }", arg=str(previous))
    return int(page.evaluate("document.querySelector('#rl-screen .rl-task').dataset.assignment"))


IN_VIEW_JS = """(sel) => { const r = document.querySelector(sel).getBoundingClientRect();
  return r.width > 0 && r.height > 0 && r.top >= 0 && r.left >= 0 &&
         r.bottom <= window.innerHeight + 0.5 && r.right <= window.innerWidth + 0.5; }"""


def in_view(page, selector) -> bool:
    return page.evaluate(IN_VIEW_JS, selector)


def pressed(page) -> dict[int, int]:
    """Rank shown pressed in the bar, per candidate position."""
    return {int(k): v for k, v in page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#rl-bar .rl-rank-btn"
        "[aria-pressed=true]')].map(b => [b.dataset.index, +b.dataset.rank]))").items()}


def stored(db_path, sql, args=()):
    return store.open_store(db_path).execute(sql, list(args)).fetchall()


def shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_a_long_item_keeps_its_ranks_in_reach_and_the_next_opens_at_the_top(
        browser, rich_app, size):  # noqa: F811
    set_layout(rich_app["db"], "ann", "stacked")  # every answer at full length, one under another
    page, dialogs = _login(browser, rich_app["url"], "ann", VIEWPORTS[size])
    first = wait_task(page)
    shot(page, f"rank-long-{size}-top")
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height > 4 * VIEWPORTS[size][1], "the item should be several screens long"

    # Far down, under the last answer: every candidate's rank is on screen and settable.
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    page.wait_for_function("window.scrollY > 2000")
    for i in range(4):
        assert in_view(page, f"#rl-rank-{i}"), (size, i)
    assert in_view(page, "#rl-submit") and in_view(page, "#rl-skip")
    for i, rank in enumerate((2, 1, 4, 3)):
        page.locator(f"#rl-rank-{i} [data-rank='{rank}']").click()
    assert pressed(page) == {0: 2, 1: 1, 2: 4, 3: 3}
    assert page.evaluate("window.scrollY") > 2000  # ranking did not move the page
    # The highlight follows the candidate being ranked, visibly.
    assert page.locator(".rl-candidate.rl-current").count() == 1
    outline = page.evaluate("getComputedStyle(document.querySelector('.rl-bar-item.rl-current'))"
                            ".outlineStyle")
    assert outline == "solid"
    shot(page, f"rank-long-{size}-bottom")

    page.locator("#rl-submit").click()
    second = wait_task(page, first)
    page.wait_for_function("document.querySelector('#rl-message').innerText"
                           ".startsWith('Saved — ranking of 4 candidates')")
    # The next task opens at its top: the message and the start of the prompt on screen.
    page.wait_for_function("Math.abs(document.querySelector('#rl-screen .rl-task')"
                           ".getBoundingClientRect().top) < 20")
    assert in_view(page, "#rl-message")
    top = page.evaluate("document.querySelector('#rl-prompt').getBoundingClientRect().top")
    assert 0 <= top < VIEWPORTS[size][1] / 2
    assert page.evaluate("getComputedStyle(document.querySelector('#rl-message'))"
                         ".backgroundColor") == "rgb(230, 244, 234)"  # the success green
    shot(page, f"rank-long-{size}-next")
    assert stored(rich_app["db"], "SELECT ranks FROM rankings") == [("[2, 1, 4, 3]",)]

    # Skipping from far down also opens the next task at the top.
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    page.locator("#rl-skip").click()
    wait_task(page, second)
    page.wait_for_function("Math.abs(document.querySelector('#rl-screen .rl-task')"
                           ".getBoundingClientRect().top) < 20")
    assert dialogs == []


def test_side_by_side_panes_expand_differences_badges_and_headings(
        browser, rich_app):  # noqa: F811
    page, _ = _login(browser, rich_app["url"], "ann", VIEWPORTS["laptop"])
    wait_task(page)
    ids = json.loads(stored(rich_app["db"], "SELECT candidate_ids FROM assignments")[0][0])
    texts = dict(stored(rich_app["db"], "SELECT id, text FROM candidates"))
    shown = [texts[c] for c in ids]
    cut, short = shown.index(CODE), next(i for i, t in enumerate(shown) if "# Short" in t)
    a, b = shown.index(EXPLANATION), shown.index(NEAR_COPY)

    # Side by side: answers scroll inside their own panes, the candidates sit in one row.
    tops = page.evaluate("[...document.querySelectorAll('.rl-candidate')]"
                         ".map(c => Math.round(c.getBoundingClientRect().top))")
    assert len(set(tops)) == 1
    assert page.evaluate(f"(() => {{ const b = document.querySelector('#rl-text-{a}');"
                         " return b.scrollHeight > b.clientHeight + 100; })()")
    # Badges: the answer cut off by the token limit, and only that one.
    assert page.locator(f"#rl-cand-{cut} .rl-badge-cut").inner_text() == \
        "Cut off at the token limit"
    assert page.locator(".rl-badge").count() == 1
    # Headings in answers sit below the candidate titles.
    assert page.locator(".rl-cand-body h1, .rl-cand-body h2, .rl-cand-body h3").count() == 0
    assert page.locator(f"#rl-text-{short} h4").inner_text() == "Short"
    title = page.evaluate("parseFloat(getComputedStyle(document.querySelector("
                          "'.rl-cand-title')).fontSize)")
    heading = page.evaluate(f"parseFloat(getComputedStyle(document.querySelector("
                            f"'#rl-text-{short} h4')).fontSize)")
    assert heading < title
    shot(page, "rank-side-by-side")

    # Expand: the candidate fills the window over the page; Escape closes it.
    page.locator(f"#rl-cand-{a} [data-rl-action=expand]").click()
    box = page.locator(f"#rl-cand-{a}").bounding_box()
    assert box["width"] > 0.9 * 1280 and box["height"] > 0.6 * 720
    shot(page, "rank-expanded")
    page.keyboard.press("Escape")
    assert page.locator(".rl-expanded").count() == 0
    page.locator("body").click(position={"x": 3, "y": 3})
    # The highlight stayed on the candidate just expanded; walk it to the first, then to `a`.
    for _ in range(len(shown)):
        page.keyboard.press("k")
    assert page.locator("#rl-cand-0.rl-current").count() == 1
    for _ in range(a):
        page.keyboard.press("j")
    page.keyboard.press("e")
    assert page.locator(f"#rl-cand-{a}.rl-expanded").count() == 1
    page.locator(f"#rl-cand-{a} [data-rl-action=expand]").click()  # its Close button
    assert page.locator(".rl-expanded").count() == 0

    # Differences between the two near-identical answers, word by word, computed on demand.
    page.select_option("#rl-diff-a", str(a))
    page.select_option("#rl-diff-b", str(b))
    page.locator("[data-rl-action=diff]").click()
    page.wait_for_selector("#rl-diff .rl-diff-overlay:not(.rl-closed)")
    deleted = page.locator("#rl-diff .rl-diff-text .rl-diff-del").all_inner_texts()
    inserted = page.locator("#rl-diff .rl-diff-text .rl-diff-ins").all_inner_texts()
    assert [d.strip() for d in deleted] == ["doubles", "three quarters"]
    assert [i.strip() for i in inserted] == ["grows", "two thirds"]
    shot(page, "rank-differences")
    page.locator("#rl-diff [data-rl-action=close-diff]").click()
    assert page.locator("#rl-diff .rl-diff-overlay:not(.rl-closed)").count() == 0


def test_a_conversation_shows_bubbles_and_folds_the_earlier_turns(
        browser, rich_app):  # noqa: F811
    page, _ = _login(browser, rich_app["url"], "ann", VIEWPORTS["phone"])
    first = wait_task(page)
    page.locator("#rl-skip").click()
    wait_task(page, first)
    earlier = page.locator("#rl-prompt details.rl-earlier")
    assert earlier.count() == 1 and earlier.get_attribute("open") is None
    # The system prompt stays in view above the fold; the other earlier turns fold away.
    assert "2 turns" in earlier.locator("summary").inner_text()
    assert page.locator(".rl-role-system").is_visible()
    outside = page.locator("#rl-prompt .rl-chat > .rl-bubble")
    assert outside.count() == 2 and "Is 91 prime?" in outside.last.inner_text()
    assert "rl-role-user" in outside.last.get_attribute("class")
    assert not page.locator(".rl-earlier .rl-role-assistant").is_visible()
    shot(page, "rank-chat-phone")
    earlier.locator("summary").click()
    assert page.locator(".rl-earlier .rl-role-assistant").is_visible()
    assert page.locator("#rl-prompt .rl-bubble").count() == 4
    # The empty answer is marked as such.
    assert page.locator(".rl-badge-empty").count() == 1
    shot(page, "rank-chat-phone-open")


@pytest.fixture
def many_app(tmp_path):
    db_path = make_labeling_db(tmp_path / "many.db", n_prompts=2, k=8)
    served, _, origin = serve_db(db_path)
    yield {"url": origin + "/", "db": db_path}
    served.close()


def test_eight_candidates_on_a_phone_keep_a_compact_bar(browser, many_app):  # noqa: F811
    page, _ = _login(browser, many_app["url"], "ann", VIEWPORTS["phone"])
    first = wait_task(page)
    bar = page.locator("#rl-bar").bounding_box()
    assert bar["height"] < 0.4 * VIEWPORTS["phone"][1]
    for i in range(8):
        assert in_view(page, f"#rl-rank-{i} .rl-bar-letter"), i
    # Tap a letter to move there, then its rank; every candidate, then submit.
    for i, rank in enumerate((8, 7, 6, 5, 4, 3, 2, 1)):
        page.locator(f"#rl-rank-{i} .rl-bar-letter").click()
        page.locator(f"#rl-rank-{i} [data-rank='{rank}']").click()
    assert pressed(page) == {i: 8 - i for i in range(8)}
    # The other candidates show only their chosen rank.
    assert page.locator("#rl-rank-0 .rl-rank-btn:visible").count() == 1
    shot(page, "rank-eight-phone")
    page.locator("#rl-submit").click()
    wait_task(page, first)
    assert stored(many_app["db"], "SELECT ranks FROM rankings") == [("[8, 7, 6, 5, 4, 3, 2, 1]",)]
