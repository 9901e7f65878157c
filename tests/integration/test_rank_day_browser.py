"""A day of labeling on the Rank screen, in headless Chromium at desktop and phone sizes: the
keyboard never traps or misleads, the state before submit is whole on the bar, the guidelines
are one key away and current, and the page works on a phone. One served app for the module;
each test logs in as its own annotator (every annotator sees every item: overlap 8).
Screenshots go to test-artifacts/."""

from __future__ import annotations

import json

import pytest

from data import export, labeling, settings, store
from data.export import ExportConfig
from data.labeling import QueuePolicy
from labeler.auth import hash_password
from tests.browser import ARTIFACTS
from tests.integration.conftest import serve_db
from tests.labeling_fixtures import PASSWORD, make_labeling_db

SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
END = "THE-END-OF-THE-LONG-ANSWER"
LONG = "\n\n".join(f"Paragraph {i}: a hash table keeps each key in a bucket chosen by its hash, "
                   "and a lookup reads that one bucket." for i in range(150)) + f"\n\n{END}"
CODE_LINE = "total = combine(" + ", ".join(f"argument_{i}" for i in range(30)) + ")"
CODE = f"Like this:\n\n```python\n{CODE_LINE}\nprint(total)\n```\n"
CHAT = [{"role": "system", "content": "You are a careful maths tutor."},
        {"role": "user", "content": "What is a prime number?"},
        {"role": "assistant", "content": "A whole number above 1 with no divisors but 1 and "
                                         "itself."},
        {"role": "user", "content": "Is 91 prime?"}]
USERS = [f"u{i}" for i in range(12)]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    path = make_labeling_db(tmp_path_factory.mktemp("day") / "day.db", n_prompts=0)
    db = store.open_store(path)
    run = store.get_or_create_run(db, store.RunSettings("r", "transformers", 4, 0.8, 0.9, 64, 0))
    items = [([{"role": "user", "content": "Explain hash tables, with code."}],
              [LONG, CODE, "Short answer.", "Buckets and hashes."]),
             (CHAT, ["No: 91 = 7 × 13.", "Yes.", "91 is 7 times 13.", "Prime."])]
    items += [([{"role": "user", "content": f"Question {n}?"}],
               [f"Answer {n}.{j}" for j in range(4)]) for n in range(6)]
    for n, (messages, texts) in enumerate(items):
        [prompt] = store.upsert_prompts(db, [(messages, "day", str(n))])
        store.add_candidates(db, prompt, run, [store.CandidateIn(t, 9, "stop") for t in texts])
    for name in USERS:
        labeling.add_user(db, name, "annotator", hash_password(PASSWORD))
    labeling.sync_items(db)
    db.close()
    served, svc, origin = serve_db(path, policy=QueuePolicy(overlap=len(USERS) + 2))
    yield {"url": origin + "/", "db": path}
    served.close()


_free = iter(USERS)


def login(browser, app, size):
    """A page of a fresh annotator on their first task (a phone is a touch screen)."""
    width, height = SIZES[size]
    phone = size == "phone"
    page = browser.new_page(viewport={"width": width, "height": height}, has_touch=phone,
                            is_mobile=phone)
    page.goto(app["url"])
    page.locator("input").nth(0).fill(next(_free))
    page.locator("input").nth(1).fill(PASSWORD)
    page.get_by_role("button", name="Login").click()
    wait_task(page)
    return page


def wait_task(page, previous=None) -> int:
    page.wait_for_function(
        "(prev) => { const el = document.querySelector('#rl-screen .rl-task');"
        " return el && ['task', 'revise'].includes(el.dataset.mode) &&"
        " el.dataset.assignment !== prev; }", arg=str(previous))
    return int(page.evaluate("document.querySelector('#rl-screen .rl-task').dataset.assignment"))


def shown(app, assignment_id) -> list[str]:
    db = store.open_store(app["db"])
    ids = json.loads(db.execute("SELECT candidate_ids FROM assignments WHERE id = ?",
                                [assignment_id]).fetchone()[0])
    texts = dict(db.execute("SELECT id, text FROM candidates"))
    return [texts[c] for c in ids]


def pressed(page) -> dict[int, int]:
    return {int(k): v for k, v in page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#rl-bar .rl-rank-btn"
        "[aria-pressed=true]')].map(b => [b.dataset.index, +b.dataset.rank]))").items()}


def text(page, selector) -> str:
    return page.locator(selector).inner_text()


def in_view(page, selector) -> bool:
    return page.evaluate("""(sel) => { const r = document.querySelector(sel)
      .getBoundingClientRect(); return r.width > 0 && r.height > 0 && r.top >= 0 &&
      r.bottom <= window.innerHeight + 0.5; }""", selector)


def focus_in_task(page) -> bool:
    return page.evaluate("document.activeElement === document.querySelector('#rl-screen "
                         ".rl-task') || document.activeElement === document.body")


def shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def letters(page) -> list[str]:
    return page.locator("#rl-bar .rl-bar-letter").all_inner_texts()


@pytest.mark.parametrize("size", list(SIZES))
def test_the_keyboard_never_traps_or_misleads(browser, app, size):
    page = login(browser, app, size)
    first = wait_task(page)
    texts = shown(app, first)
    long_at = texts.index(LONG)

    # Expanded, moving moves the expanded view: the rank goes to the candidate on screen.
    page.keyboard.press("e")
    assert page.locator("#rl-cand-0.rl-expanded").count() == 1
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.locator(".rl-candidate.rl-expanded").count() == 1
    assert page.locator("#rl-cand-2.rl-expanded").count() == 1
    page.keyboard.press("4")
    assert pressed(page) == {2: 4}
    assert text(page, "#rl-cand-2 .rl-rank-pill").startswith("Rank 4")
    # A long candidate, expanded, shows whole: its last line is there to read.
    for _ in range(3):
        page.keyboard.press("ArrowLeft")
    for _ in range(long_at):
        page.keyboard.press("ArrowRight")
    assert page.locator(f"#rl-cand-{long_at}.rl-expanded").count() == 1
    end = page.locator(f"#rl-cand-{long_at} .rl-cand-body").get_by_text(END)
    assert end.count() >= 1 and end.last.is_visible()
    shot(page, f"rank-day-expanded-moves-{size}")
    page.keyboard.press("Escape")
    assert page.locator(".rl-expanded").count() == 0 and focus_in_task(page)

    # R, a rationale, Esc: the field is left, and the number keys rank again.
    for _ in range(4):
        page.keyboard.press("ArrowLeft")
    page.keyboard.press("r")
    page.keyboard.type("Clear and short.")
    assert page.evaluate("document.activeElement.id") == "rl-rationale"
    page.keyboard.press("Escape")
    assert focus_in_task(page)
    page.keyboard.press("1")
    assert pressed(page)[0] == 1
    assert page.locator("#rl-rationale").input_value() == "Clear and short."

    # After a click on a control (Show all, a checkbox, Compare; the guidelines toggle is
    # tested below), the keys still go to the task.
    opened = page.locator(f"#rl-cand-{long_at} .rl-long > details[open]")
    was_open = opened.count()  # Expand opened it above
    page.locator(f"#rl-cand-{long_at} .rl-long > details > summary").click()  # Show all
    assert opened.count() != was_open
    page.keyboard.press("ArrowLeft")
    assert pressed(page) == {0: 1, 2: 4}  # nothing ranked by the arrow, and no scroll trap
    assert focus_in_task(page)
    page.locator("#rl-rank-1 .rl-bar-letter").click()
    page.locator("#rl-all-bad").click()  # a checkbox takes focus when clicked
    page.locator("#rl-all-bad").click()
    page.keyboard.press("2")
    assert pressed(page)[1] == 2 and focus_in_task(page)
    page.locator("#rl-diff-a").select_option("1")
    page.locator("#rl-diff-b").select_option("3")
    page.locator("[data-rl-action=diff]").click()
    page.wait_for_selector("#rl-diff .rl-diff-overlay:not(.rl-closed)")
    page.keyboard.press("Escape")
    assert page.locator("#rl-diff .rl-diff-overlay:not(.rl-closed)").count() == 0
    assert focus_in_task(page)
    page.keyboard.press("3")  # the highlight moved on to C after "2" on B
    assert pressed(page)[2] == 3

    # Giving a rank another candidate holds is a tie, and says so; the bar shows the order.
    page.locator("#rl-rank-3 [data-rank='2']").click()
    assert letters(page) == ["A", "B", "C", "D"]
    assert text(page, "#rl-order") == "A > B = D > C"
    assert "B and D share rank 2 (a tie)" in text(page, "#rl-tie-note")
    assert "tie with D" in text(page, "#rl-cand-1 .rl-rank-pill")
    page.wait_for_function("document.querySelector('#rl-draft-state').innerText"
                           ".includes('draft saved')")
    assert in_view(page, "#rl-order") and in_view(page, "#rl-bar-all-bad")
    shot(page, f"rank-day-tie-{size}")

    # X in a stacked layout, far from the checkbox: the bar shows it.
    if size == "desktop":  # a phone stacks them anyway
        page.locator("[data-rl-action=layout][data-layout=stacked]").click()
    page.evaluate("window.scrollTo(0, 0)")
    page.keyboard.press("x")
    assert page.locator("#rl-bar-all-bad").get_attribute("aria-pressed") == "true"
    assert text(page, "#rl-order").startswith("All bad · A > B = D > C")
    assert in_view(page, "#rl-bar-all-bad")
    shot(page, f"rank-day-all-bad-{size}")
    page.keyboard.press("x")
    assert page.locator("#rl-bar-all-bad").get_attribute("aria-pressed") == "false"

    # The legend gives the real range, and where ranks are given, that 1 is best.
    assert "1 = best" in text(page, "#rl-bar")
    legend = page.locator("#rl-legend").text_content()
    assert "1–4" in legend and "1–9" not in legend and "skip" in legend

    # Ctrl+Enter submits from the text field.
    page.keyboard.press("r")
    page.keyboard.press("Control+Enter")
    second = wait_task(page, first)
    stored = store.open_store(app["db"]).execute(
        "SELECT ranks, rationale FROM rankings WHERE assignment_id = ?", [first]).fetchall()
    assert stored == [("[1, 2, 3, 2]", "Clear and short.")]

    # A revision has no skip, in the legend or on the bar.
    page.locator("#rl-message [data-rl-action=reopen]").click()
    page.wait_for_selector("#rl-screen .rl-task[data-mode=revise]")
    legend = page.locator("#rl-legend").text_content()
    assert "skip" not in legend and "1–4" in legend
    assert "skip" not in page.locator(".rl-bar-keys").text_content().lower()
    page.locator("#rl-cancel").click()
    wait_task(page, None)

    # Compare, Esc, Enter: Enter submits (not the differences again).
    page.locator("#rl-diff-a").select_option("0")
    page.locator("[data-rl-action=diff]").click()
    page.wait_for_selector("#rl-diff .rl-diff-overlay:not(.rl-closed)")
    page.keyboard.press("Escape")
    for rank in "1234":
        page.keyboard.press(rank)
    page.keyboard.press("Enter")
    wait_task(page, second)
    assert page.locator("#rl-diff .rl-diff-overlay:not(.rl-closed)").count() == 0


@pytest.mark.parametrize("size", list(SIZES))
def test_guidelines_are_one_key_away_current_and_recorded(browser, app, size):
    db = store.open_store(app["db"])
    settings.set_setting(db, "guidelines", "# Rules\n\nPrefer <b>correct</b> answers.")
    page = login(browser, app, size)
    first = wait_task(page)
    assert text(page, "#rl-guide-btn").startswith("Guidelines · updated")
    top = page.evaluate("document.querySelector('#rl-prompt').getBoundingClientRect().top")
    page.keyboard.press("?")
    panel = page.locator("#rl-guidelines")
    assert panel.is_visible()
    assert "Prefer <b>correct</b> answers." in panel.inner_text()
    assert panel.locator("b").count() == 0  # the admin's text, escaped
    # The task did not move, and the keys still rank it.
    moved = page.evaluate("document.querySelector('#rl-prompt').getBoundingClientRect().top") - top
    assert abs(moved) <= 2  # (the "updated" mark leaves the line)
    shot(page, f"rank-day-guidelines-{size}")
    page.keyboard.press("Escape")
    assert not panel.is_visible()
    assert page.locator("#rl-guide-new").count() == 0
    # Read: not marked on the next screens; changed by an admin: marked on the next task,
    # with no reload.
    old_version = settings.current_guidelines(db)[1]
    for rank in "1234":
        page.keyboard.press(rank)
    page.keyboard.press("Enter")
    second = wait_task(page, first)
    assert page.locator("#rl-guide-new").count() == 0
    settings.set_setting(db, "guidelines", "# Rules\n\nPrefer correct answers; then short ones.")
    for rank in "432":
        page.keyboard.press(rank)
    page.locator("#rl-guide-btn").click()  # opened with the mouse: the keys stay on the task
    assert page.locator("#rl-guidelines").is_visible()
    page.keyboard.press("1")
    assert pressed(page) == {0: 4, 1: 3, 2: 2, 3: 1}
    assert page.locator("#rl-guide-new").count() == 0  # the screen predates the change
    page.keyboard.press("Escape")
    page.keyboard.press("Enter")
    wait_task(page, second)
    assert text(page, "#rl-guide-btn").startswith("Guidelines · updated")
    page.keyboard.press("?")
    assert "then short ones" in page.locator("#rl-guidelines").inner_text()
    # Each vote records the version it was made under (in force when stored); exports too.
    new_version = settings.current_guidelines(db)[1]
    versions = dict(db.execute("SELECT assignment_id, guidelines_version FROM rankings "
                               "WHERE assignment_id IN (?, ?)", [first, second]).fetchall())
    assert versions == {first: old_version, second: new_version} and old_version != new_version
    rows = export.build_export(db, ExportConfig()).rankings
    exported = {r["ranking_id"]: r["guidelines_version"] for split in rows.values() for r in split}
    assert set(exported.values()) >= {old_version, new_version}
    settings.set_setting(db, "guidelines", "")


def test_the_phone_and_the_page(browser, app):
    page = login(browser, app, "phone")
    first = wait_task(page)
    # Rank buttons a finger can hit; a one-line title; no Esc offered on a touch screen.
    sizes = page.evaluate("[...document.querySelectorAll('#rl-bar .rl-rank-btn')]"
                          ".map(b => { const r = b.getBoundingClientRect();"
                          " return [r.width, r.height]; })")
    assert sizes and all(w >= 44 and h >= 44 for w, h in sizes), sizes
    title = page.locator("#rl-title")
    line = page.evaluate("parseFloat(getComputedStyle(document.querySelector('#rl-title'))"
                         ".lineHeight) || 30")
    assert title.bounding_box()["height"] <= 1.6 * line
    page.locator("[data-rl-action=diff]").click()
    page.wait_for_selector("#rl-diff .rl-diff-overlay:not(.rl-closed)")
    close = page.locator("#rl-diff [data-rl-action=close-diff]")
    assert close.inner_text().strip() == "Close"
    shot(page, "rank-day-phone-diff")
    close.click()
    assert page.locator(".rl-legend:visible, .rl-bar-keys:visible").count() == 0
    shot(page, "rank-day-phone")
    # The next item is a conversation: its system prompt is in view, not folded away.
    page.locator("#rl-skip").click()
    wait_task(page, first)
    system = page.locator("#rl-prompt .rl-role-system")
    assert system.is_visible() and "careful maths tutor" in system.inner_text()
    assert "(2 turns)" in page.locator("#rl-prompt details.rl-earlier summary").inner_text()
    shot(page, "rank-day-phone-system")


def test_code_keeps_its_lines_whole_side_by_side(browser, app):
    page = login(browser, app, "desktop")
    first = wait_task(page)
    at = shown(app, first).index(CODE)
    pre = f"#rl-text-{at} pre"
    sizes = page.evaluate(f"(() => {{ const p = document.querySelector('{pre}');"
                          " return [p.scrollWidth, p.clientWidth, p.getBoundingClientRect().height,"
                          " parseFloat(getComputedStyle(p).lineHeight)]; })()")
    scroll_width, width, height, line = sizes
    assert scroll_width > width  # scrolls sideways
    assert height < 3.5 * line  # two lines of code (and padding), none wrapped
    page.evaluate(f"document.querySelector('{pre}').scrollLeft = 400")
    shot(page, "rank-day-code-side-by-side")


HIDE_JS = """(hidden) => {
  Object.defineProperty(document, 'visibilityState', {configurable: true,
                                                     get: () => hidden ? 'hidden' : 'visible'});
  document.dispatchEvent(new Event('visibilitychange')); }"""


def test_active_time_goes_with_each_submit_and_leaves_out_the_background(browser, app):
    page = login(browser, app, "desktop")
    first = wait_task(page)
    page.keyboard.press("1")
    page.wait_for_timeout(1500)
    page.keyboard.press("2")
    page.evaluate(HIDE_JS, True)  # another tab in front: not counted
    page.wait_for_timeout(3000)
    page.evaluate(HIDE_JS, False)
    page.keyboard.press("3")
    page.keyboard.press("4")
    page.keyboard.press("Enter")
    wait_task(page, first)
    active, shown_at, submitted_at = store.open_store(app["db"]).execute(
        "SELECT active_seconds, shown_at, submitted_at FROM rankings WHERE assignment_id = ?",
        [first]).fetchone()
    wall = submitted_at - shown_at
    assert 1.0 <= active <= wall - 2.5, (active, wall)
