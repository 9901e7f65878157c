"""A real browser (headless Debian Chromium through Playwright) against the served app."""

import json


from data import store
from tests.browser import ARTIFACTS
from tests.labeling_fixtures import PASSWORD





def _login(browser, url, user, viewport=(1400, 1000)):
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(url)
    page.locator("input").nth(0).fill(user)
    page.locator("input").nth(1).fill(PASSWORD)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#rl-user")  # the header: who is logged in
    if page.get_by_role("tab", name="Admin").count() == 0:  # annotators land on their task
        page.wait_for_selector("#rl-prompt")
        page.wait_for_function(
            "document.querySelector('#rl-progress')?.innerText.includes('done')")
    return page, dialogs


def _shown_ids(db_path, user):
    db = store.open_store(db_path)
    row = db.execute("SELECT a.candidate_ids FROM assignments a JOIN users u ON u.id = a.user_id "
                     "WHERE u.name = ? AND a.submitted_at IS NULL", [user]).fetchone()
    return json.loads(row[0])


def _rankings(db_path):
    return list(store.open_store(db_path).query("SELECT candidate_ids, ranks FROM rankings "
                                                "ORDER BY id"))


def _wait_message(page, text):
    page.wait_for_function(
        f"document.querySelector('#rl-message')?.innerText.includes({json.dumps(text)})")


def test_rank_with_the_mouse_then_with_the_keyboard(browser, served_app):
    page, dialogs = _login(browser, served_app["url"], "ann")
    db_path = served_app["db"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "rank-tab.png"), full_page=True)

    # Candidate HTML is shown as text and never runs.
    assert page.evaluate("window.__rl_xss") is None and dialogs == []
    texts = page.locator("#rl-cand-0, #rl-cand-1, #rl-cand-2").all_inner_texts()
    assert any("<script>window.__rl_xss = 1</script>" in t for t in texts)

    # Submitting with a missing rank is refused and nothing is stored.
    first_ids = _shown_ids(db_path, "ann")
    page.locator("#rl-rank-0").get_by_text("2", exact=True).click()
    page.locator("#rl-submit").click()
    _wait_message(page, "Not saved")
    assert _rankings(db_path) == []

    # Mouse: the rest of the ranking, then submit.
    page.locator("#rl-rank-1").get_by_text("1", exact=True).click()
    page.locator("#rl-rank-2").get_by_text("3", exact=True).click()
    page.locator("#rl-submit").click()
    _wait_message(page, "Saved — ranking of 3 candidates")
    assert _rankings(db_path) == [{"candidate_ids": json.dumps(first_ids), "ranks": "[2, 1, 3]"}]
    page.wait_for_function("document.querySelector('#rl-progress').innerText.startsWith('1')")

    # Keyboard: digits rank the highlighted candidate and move on; Enter submits.
    second_ids = _shown_ids(db_path, "ann")
    assert second_ids != first_ids
    page.locator("body").click(position={"x": 5, "y": 5})
    for key in ("3", "1", "1"):
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#rl-progress').innerText.startsWith('2')")
    assert _rankings(db_path)[1] == {"candidate_ids": json.dumps(second_ids),
                                     "ranks": "[3, 1, 1]"}

    # S skips.
    third_ids = _shown_ids(db_path, "ann")
    page.keyboard.press("s")
    _wait_message(page, "Skipped")
    db = store.open_store(db_path)
    assert db.execute("SELECT skipped, candidate_ids FROM rankings ORDER BY id DESC").fetchone() \
        == (1, json.dumps(third_ids))
    page.screenshot(path=str(ARTIFACTS / "after-keyboard.png"), full_page=True)
    assert page.get_by_role("tab", name="Admin").count() == 0


def test_only_admins_see_the_admin_tab(browser, served_app):
    annotator, _ = _login(browser, served_app["url"], "bob")
    assert annotator.get_by_role("tab", name="Admin").count() == 0
    admin, _ = _login(browser, served_app["url"], "root")
    assert admin.get_by_role("tab", name="Admin").get_attribute("aria-selected") == "true"
    admin.wait_for_function("document.body.innerText.includes('pairwise comparisons')")
    ARTIFACTS.mkdir(exist_ok=True)
    admin.screenshot(path=str(ARTIFACTS / "admin-tab.png"), full_page=True)


def test_the_page_talks_to_its_json_routes_not_the_gradio_queue(browser, served_app):
    from urllib.parse import urlsplit

    page, _ = _login(browser, served_app["url"], "ann")
    sent = []
    page.on("request", lambda r: sent.append((r.method, urlsplit(r.url).path)))
    page.locator("body").click(position={"x": 5, "y": 5})
    for key in ("1", "2", "3"):
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    _wait_message(page, "Saved")
    assert ("POST", "/rank/api/submit") in sent
    assert not [path for _, path in sent if "/queue/" in path], sent  # no Gradio event
    assert len(_rankings(served_app["db"])) == 1


def test_a_refused_action_reads_as_an_error_and_keeps_what_was_entered(browser, served_app):
    from data import labeling

    page, _ = _login(browser, served_app["url"], "ann")
    page.locator("body").click(position={"x": 5, "y": 5})
    for key in ("2", "1", "3"):
        page.keyboard.press(key)
    labeling.set_disabled(store.open_store(served_app["db"]), "ann", True)  # the session ends
    page.keyboard.press("Enter")
    page.wait_for_selector("#rl-message.rl-msg-error[role=alert]")
    assert "session has ended" in page.locator("#rl-message").inner_text()
    assert _rankings(served_app["db"]) == []
    # The ranks stay on screen and the submit button works again.
    for index, rank in enumerate(["2", "1", "3"]):
        assert page.locator(f"#rl-rank-{index} .rl-rank-btn[aria-pressed=true]").inner_text() \
            == rank
    assert page.locator("#rl-submit").is_enabled()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "refused-session-ended.png"), full_page=True)


def test_a_redrawn_tab_gets_back_the_screen_with_what_was_entered(browser, served_app):
    page, _ = _login(browser, served_app["url"], "ann")
    page.locator("#rl-rank-0").get_by_text("2", exact=True).click()
    page.locator("#rl-rationale").fill("B reads better")
    # What the page does when it re-creates a tab's elements: a new, empty host.
    page.evaluate("""() => {
        const old = document.getElementById('rl-screen-body');
        const fresh = old.cloneNode(false);
        fresh.innerHTML = '<p class="rl-loading">Loading your task…</p>';
        old.replaceWith(fresh);
    }""")
    page.wait_for_selector("#rl-screen-body .rl-task")
    assert page.locator("#rl-rationale").input_value() == "B reads better"
    assert page.locator("#rl-rank-0 .rl-rank-btn[aria-pressed=true]").inner_text() == "2"
    page.locator("#rl-rank-1").get_by_text("1", exact=True).click()
    page.locator("#rl-rank-2").get_by_text("3", exact=True).click()
    page.locator("#rl-submit").click()
    _wait_message(page, "Saved")
    assert _rankings(served_app["db"])[0]["ranks"] == "[2, 1, 3]"


def _restartable(db_path):
    """start() serves the database on one port, again after each close()."""
    from tests.integration.conftest import free_port, serve_db

    port = free_port()
    return (lambda: serve_db(db_path, port=port)[0]), f"http://127.0.0.1:{port}/"


def test_a_submit_while_the_app_restarts_is_tried_again_and_stored_once(browser, tmp_path):
    from tests.labeling_fixtures import make_labeling_db

    db_path = make_labeling_db(tmp_path / "restart.db", n_prompts=3, k=3)
    start, url = _restartable(db_path)
    app = start()
    try:
        page, _ = _login(browser, url, "ann")
        page.locator("body").click(position={"x": 5, "y": 5})
        for key in ("1", "2", "3"):
            page.keyboard.press(key)
        app.close()  # the app goes away with the task on screen
        page.keyboard.press("Enter")
        page.wait_for_selector("#rl-message.rl-msg-error[role=alert]")
        assert "could not be reached" in page.locator("#rl-message").inner_text()
        assert _rankings(db_path) == []
        app = start()  # back on the same port; the login session is still valid
        page.keyboard.press("Enter")
        _wait_message(page, "Saved")
        assert [r["ranks"] for r in _rankings(db_path)] == ["[1, 2, 3]"]
    finally:
        app.close()


def test_the_waiting_screen_updates_by_itself_through_an_app_restart(browser, tmp_path):
    from data import labeling
    from tests.labeling_fixtures import make_labeling_db

    db_path = make_labeling_db(tmp_path / "empty.db", n_prompts=0, k=3)
    start, url = _restartable(db_path)
    app = start()
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        page.goto(url)
        page.locator("input").nth(0).fill("ann")
        page.locator("input").nth(1).fill(PASSWORD)
        page.get_by_role("button", name="Login").click()
        page.wait_for_selector("#rl-screen .rl-task[data-mode=waiting]")
        app.close()
        page.wait_for_selector("#rl-message.rl-msg-error")  # a poll found no app
        db = store.open_store(db_path)
        run = store.get_or_create_run(db, store.RunSettings("default", "transformers", 3, 0.8,
                                                            0.9, 32, 0))
        [prompt] = store.upsert_prompts(db, [([{"role": "user", "content": "Late?"}], "t", "0")])
        store.add_candidates(db, prompt, run, [store.CandidateIn(f"late {j}", 2, "stop")
                                               for j in range(3)])
        labeling.sync_items(db)
        app = start()
        page.wait_for_selector("#rl-screen .rl-task[data-mode=task]", timeout=20_000)
        assert "Late?" in page.locator("#rl-prompt").inner_text()
    finally:
        app.close()
