"""The Rank screen's rules in headless Chromium: which keys act where, an admin who lands on
the console takes no task, drafts survive a reload, the layout is remembered, a revision
replaces the vote that exports read, model suggestions are pre-filled and flagged, and a
screen with nothing to rank shows no control that cannot act."""

from __future__ import annotations

import pytest

from data import export, labeling, settings, store
from tests.integration.conftest import serve_db
from tests.integration.test_app_browser import _login
from tests.integration.test_rank_screen_browser import (VIEWPORTS, pressed, shot, stored,
                                                        wait_task)
from tests.integration.test_rank_screen_browser import rich_app  # noqa: F401 (a fixture)
from tests.labeling_fixtures import make_labeling_db


def _assignments(db_path, user):
    return stored(db_path, "SELECT a.id FROM assignments a JOIN users u ON u.id = a.user_id "
                           "WHERE u.name = ?", [user])


def _votes(db_path):
    return stored(db_path, "SELECT ranks, skipped FROM rankings ORDER BY id")


def test_keys_act_only_on_the_visible_rank_tab_and_never_in_controls(
        browser, rich_app):  # noqa: F811
    db_path = rich_app["db"]
    page, dialogs = _login(browser, rich_app["url"], "root", VIEWPORTS["desktop"])
    # An admin lands on the console, and nothing is taken from the queue for them.
    assert page.get_by_role("tab", name="Admin").get_attribute("aria-selected") == "true"
    page.wait_for_function("document.body.innerText.includes('pairwise comparisons')")
    page.wait_for_selector("#rl-screen .rl-task[data-mode=idle]", state="attached")
    page.locator("body").click(position={"x": 3, "y": 3})
    for key in ("1", "2", "s", "Enter", "x"):
        page.keyboard.press(key)
    page.wait_for_timeout(500)
    assert _assignments(db_path, "root") == [] and _votes(db_path) == []
    shot(page, "rank-admin-landing")

    # Opening the Rank tab takes the first task.
    page.get_by_role("tab", name="Rank").click()
    first = wait_task(page)
    assert _assignments(db_path, "root") == [(first,)]

    # Focus on the tab itself, a text field, a checkbox, a link or a button: keys do nothing.
    page.get_by_role("tab", name="Rank").focus()
    page.keyboard.press("1")
    page.locator("#rl-rationale").click()
    page.keyboard.type("1 s")
    page.keyboard.press("Enter")
    assert page.locator("#rl-rationale").input_value() == "1 s\n"
    page.locator("#rl-all-bad").focus()
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    page.locator("#rl-logout").focus()
    page.keyboard.press("3")
    page.keyboard.press("s")
    page.locator("#rl-skip").focus()
    page.keyboard.press("4")
    page.wait_for_timeout(300)
    assert pressed(page) == {} and _votes(db_path) == []
    assert not page.locator("#rl-all-bad").is_checked()

    # From the page itself the keys rank, move and mark.
    page.locator("body").click(position={"x": 3, "y": 3})
    for key in ("2", "1", "k", "3", "4"):
        page.keyboard.press(key)
    assert pressed(page) == {0: 2, 1: 3, 2: 4}
    page.keyboard.press("x")
    assert page.locator("#rl-all-bad").is_checked()
    page.keyboard.press("x")
    page.keyboard.press("r")
    assert page.evaluate("document.activeElement.id") == "rl-rationale"

    # Enter on a focused Skip skips (the button's own action) and does not submit the ranks.
    page.locator("#rl-rank-3 [data-rank='1']").click()
    page.locator("#rl-skip").focus()
    page.keyboard.press("Enter")
    second = wait_task(page, first)
    assert _votes(db_path) == [(None, 1)]

    # Back on the Admin tab, the Rank keys do nothing to the hidden task.
    page.get_by_role("tab", name="Admin").click()
    page.locator("body").click(position={"x": 3, "y": 3})
    for key in ("1", "2", "3", "4", "Enter", "s"):
        page.keyboard.press(key)
    page.wait_for_timeout(500)
    assert _votes(db_path) == [(None, 1)]
    page.get_by_role("tab", name="Rank").click()
    assert wait_task(page) == second and pressed(page) == {}
    assert dialogs == []


def test_drafts_survive_a_reload_and_the_layout_is_remembered(browser, rich_app):  # noqa: F811
    db_path = rich_app["db"]
    page, _ = _login(browser, rich_app["url"], "ann", VIEWPORTS["laptop"])
    task = wait_task(page)
    page.locator("#rl-rank-0 [data-rank='3']").click()
    page.locator("#rl-rank-2 [data-rank='1']").click()
    page.locator("#rl-rationale").fill("C explains the cost")
    page.locator("[data-layout=stacked]").click()
    page.wait_for_function("document.querySelector('#rl-screen .rl-task')"
                           ".classList.contains('rl-layout-stacked')")
    deadline = 100
    while deadline and not stored(db_path, "SELECT 1 FROM drafts WHERE rationale = ?",
                                  ["C explains the cost"]):
        page.wait_for_timeout(100)
        deadline -= 1
    assert stored(db_path, "SELECT ranks, rationale FROM drafts") == [
        ("[3, null, 1, null]", "C explains the cost")]
    ann = labeling.get_user(store.open_store(db_path), "ann").id
    assert settings.get_user_setting(store.open_store(db_path), ann, "layout") == "stacked"

    page.reload()
    assert wait_task(page) == task
    assert pressed(page) == {0: 3, 2: 1}
    assert page.locator("#rl-rationale").input_value() == "C explains the cost"
    assert page.locator("#rl-draft-state").inner_text() == "· draft restored"
    assert page.locator("[data-layout=stacked]").get_attribute("aria-pressed") == "true"
    lefts = page.evaluate("[...document.querySelectorAll('.rl-candidate')]"
                          ".map(c => Math.round(c.getBoundingClientRect().left))")
    assert len(set(lefts)) == 1  # stacked: one under another
    shot(page, "rank-draft-restored-stacked")

    # Submitting clears the draft; the next task starts empty, still stacked.
    page.locator("#rl-rank-1 [data-rank='2']").click()
    page.locator("#rl-rank-3 [data-rank='4']").click()
    page.locator("#rl-submit").click()
    wait_task(page, task)
    assert stored(db_path, "SELECT COUNT(*) FROM drafts") == [(0,)]
    assert pressed(page) == {} and page.locator("#rl-rationale").input_value() == ""
    assert page.locator(".rl-task.rl-layout-stacked").count() == 1


def test_a_revision_replaces_the_vote_in_the_export(browser, rich_app):  # noqa: F811
    db_path = rich_app["db"]
    page, _ = _login(browser, rich_app["url"], "ann", VIEWPORTS["desktop"])
    first = wait_task(page)
    for i, rank in enumerate((1, 2, 3, 4)):
        page.locator(f"#rl-rank-{i} [data-rank='{rank}']").click()
    page.locator("#rl-submit").click()
    second = wait_task(page, first)
    # "Change it" beside the success message reopens the vote with its ranks.
    page.locator("#rl-message [data-rl-action=reopen]").click()
    page.wait_for_selector("#rl-screen .rl-task[data-mode=revise]")
    assert pressed(page) == {0: 1, 1: 2, 2: 3, 3: 4}
    assert page.locator("#rl-skip").count() == 0
    shot(page, "rank-revision")
    for i, rank in enumerate((4, 3, 2, 1)):
        page.locator(f"#rl-rank-{i} [data-rank='{rank}']").click()
    page.locator("#rl-submit").click()
    page.wait_for_function("document.querySelector('#rl-message')?.innerText"
                           ".startsWith('Changed')")
    assert wait_task(page) == second  # back to the task that was open
    db = store.open_store(db_path)
    records = export.read_rankings(db)
    assert [r.ranks for r in records] == [[1, 2, 3, 4], [4, 3, 2, 1]]
    [latest] = export.latest(records)
    assert latest.ranks == [4, 3, 2, 1] and latest.supersedes == records[0].ranking_id
    assert [r[0] for r in db.execute("SELECT ranks FROM latest_rankings")] == ["[4, 3, 2, 1]"]

    # The list of recent submissions reopens it too, and Back returns to the open task.
    page.locator("[data-rl-action=recent]").click()
    page.wait_for_selector("#rl-recent")
    assert page.locator("#rl-recent [data-rl-action=reopen]").count() == 1
    page.locator("#rl-back").click()
    assert wait_task(page) == second


def test_suggestions_are_prefilled_marked_and_flagged(browser, rich_app):  # noqa: F811
    db_path = rich_app["db"]
    db = store.open_store(db_path)
    settings.set_setting(db, "suggestions", True)
    store.put_model_scores(db, [store.ModelScore(c, "bt:/rm", float(c))
                                for (c,) in db.execute("SELECT id FROM candidates")])
    page, _ = _login(browser, rich_app["url"], "ann", VIEWPORTS["laptop"])
    first = wait_task(page)
    suggested = pressed(page)
    assert len(suggested) == 4 and sorted(suggested.values()) == [1, 2, 3, 4]
    assert "suggestion from the model scores" in page.locator("#rl-suggestion").inner_text()
    shot(page, "rank-suggestion")
    page.locator("#rl-submit").click()  # accepted as suggested
    wait_task(page, first)
    changed = {i: 5 - r for i, r in pressed(page).items()}
    for i, rank in changed.items():
        page.locator(f"#rl-rank-{i} [data-rank='{rank}']").click()
    assert "You changed" in page.locator("#rl-suggestion").inner_text()
    page.locator("#rl-submit").click()
    page.wait_for_function("document.querySelector('#rl-message')?.innerText"
                           ".startsWith('Saved')")
    rows = stored(db_path, "SELECT suggestion_accepted, suggested_ranks, ranks FROM rankings "
                           "ORDER BY id")
    assert [r[0] for r in rows] == [1, 0]
    assert rows[0][1] == rows[0][2] and rows[1][1] != rows[1][2]


@pytest.fixture
def empty_app(tmp_path):
    db_path = make_labeling_db(tmp_path / "empty.db", n_prompts=0)
    served, _, origin = serve_db(db_path)
    yield {"url": origin + "/", "db": db_path}
    served.close()


def test_a_screen_with_nothing_to_rank_says_so_without_controls(browser, empty_app):  # noqa: F811
    db = store.open_store(empty_app["db"])
    settings.set_setting(db, "guidelines", "# Be fair\n\nRank <b>helpfulness</b> first.")
    page, _ = _login(browser, empty_app["url"], "ann", VIEWPORTS["phone"])
    page.wait_for_selector("#rl-screen .rl-task[data-mode=waiting]")
    assert "Nothing left to rank" in page.locator("#rl-prompt").inner_text()
    for control in ("#rl-submit", "#rl-skip", "#rl-bar", "#rl-rationale", "#rl-all-bad"):
        assert page.locator(control).count() == 0, control
    # Who is logged in, the way out, and the guidelines (escaped markdown, in a closed panel).
    assert page.locator("#rl-user").inner_text() == "ann"
    assert page.locator("#rl-logout").get_attribute("href") == "/logout"
    guidelines = page.locator("#rl-guidelines")
    assert not guidelines.is_visible()
    page.locator("#rl-guide-btn").click()
    assert "Rank <b>helpfulness</b> first." in guidelines.inner_text()
    assert guidelines.locator("b").count() == 0
    shot(page, "rank-nothing-to-rank-phone")
    # Items that arrive while waiting show up by themselves.
    _add_item(empty_app["db"])
    page.wait_for_selector("#rl-screen .rl-task[data-mode=task]", timeout=20_000)


def _add_item(db_path):
    db = store.open_store(db_path)
    run = store.get_or_create_run(db, store.RunSettings("late", "transformers", 2, 0.8, 0.9,
                                                        8, 0))
    [prompt] = store.upsert_prompts(db, [([{"role": "user", "content": "Late?"}], "t", "l")])
    store.add_candidates(db, prompt, run, [store.CandidateIn("yes", 1, "stop"),
                                           store.CandidateIn("no", 1, "stop")])
    db.close()

