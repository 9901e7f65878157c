"""The Admin tab in a real browser (headless Debian Chromium through Playwright) against the
served app, logged in as the fixture's admin "root"."""

import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from data import labeling, settings
from data.labeling import QueuePolicy
from data.queue_order import get_queue_order
from labeler import handlers
from labeler.jobs import workspace_dir
from tests.integration.conftest import free_port, serve_db
from tests.browser import ARTIFACTS
from tests.labeling_fixtures import PASSWORD, make_labeling_db

DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
ZONE = "Asia/Kolkata"  # +05:30 all year: never the machine's UTC, and no daylight saving
HIGHLIGHT = "rgb(253, 230, 138)"  # admin.DISPUTED_STYLE's background




@pytest.fixture
def app(tmp_path):
    """30 items of 3 candidates, overlap 2, served in this process."""
    db_path = make_labeling_db(tmp_path / "app.db", n_prompts=30, k=3)
    served, svc, origin = serve_db(db_path, policy=QueuePolicy(overlap=2))
    yield {"url": origin + "/", "svc": svc}
    svc.jobs.stop_all(grace_s=2)
    served.close()


def _rank(svc, user, ranks):
    """Ranks the user's next item; ``ranks`` per candidate in idx order (A, B, C)."""
    view = handlers.current_task(svc, user)
    assignment = labeling.get_assignment(svc.db(), view.assignment_id)
    by_idx = [c["id"] for c in labeling.item_candidates(svc.db(), assignment.item_id)]
    shown = [ranks[by_idx.index(cid)] for cid in assignment.candidate_ids]
    message, _ = handlers.submit_ranking(svc, user, view.assignment_id, shown,
                                         rationale=f"{user}'s <b>reason</b>")
    assert message.startswith("Saved"), message
    return assignment.item_id


def _login(browser, url, user, *, viewport=DESKTOP, password=PASSWORD):
    context = browser.new_context(viewport=viewport, timezone_id=ZONE)
    page = context.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(url)
    page.locator("input").nth(0).fill(user)
    page.locator("input").nth(1).fill(password)
    page.get_by_role("button", name="Login").click()
    page.get_by_role("tab", name="Rank").wait_for()
    return page, dialogs


def _admin(browser, url, **kw):
    page, dialogs = _login(browser, url, "root", **kw)
    page.get_by_role("tab", name="Admin").click()
    page.wait_for_function(
        "document.querySelector('#rl-admin-counts')?.innerText.includes('pairwise')")
    return page, dialogs


def _subtab(page, name):
    page.get_by_role("tab", name=name, exact=True).click()


def _value(page, elem_id):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first.input_value()


def _wait_value(page, elem_id, text, timeout=30_000):
    page.wait_for_function(
        "([id, text]) => { const e = document.querySelector(`#${id} textarea, #${id} input`);"
        " return e && e.value.includes(text); }", arg=[elem_id, text], timeout=timeout)
    return _value(page, elem_id)


def _fill(page, elem_id, text):
    page.locator(f"#{elem_id} textarea, #{elem_id} input").first.fill(text)


def _choose(page, elem_id, option):
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=True).click()


def _shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"admin-{name}.png"), full_page=True)


def _counts(page):
    return page.locator("#rl-admin-counts").inner_text()


def test_counts_and_plot_refresh_by_themselves_with_times_in_utc(browser, app):
    svc = app["svc"]
    _rank(svc, "ann", ["1", "2", "3"])
    page, _ = _admin(browser, app["url"])
    assert "1 rankings" in _counts(page)
    axis = page.locator("#rl-admin-labels-plot svg").first
    first_shown = svc.db().execute("SELECT MIN(submitted_at) FROM rankings").fetchone()[0]
    # The browser is in +05:30; the plot, like every table of the console, is in UTC.
    utc = datetime.fromtimestamp(first_shown, ZoneInfo("UTC")).strftime("%Y-%m-%d %H:00")
    local = datetime.fromtimestamp(first_shown, ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:")
    page.wait_for_function(
        "(label) => (document.querySelector('#rl-admin-labels-plot svg')?.textContent || '')"
        ".includes(label)", arg=utc)
    text = axis.text_content()
    assert utc in text and local not in text and "(UTC" in text
    marks = page.locator("#rl-admin-labels-plot svg").first.inner_html()

    # New rankings land in the database from elsewhere: the page shows them without a click.
    _rank(svc, "bob", ["3", "2", "1"])
    _rank(svc, "bob", ["1", "2", "3"])
    page.wait_for_function(
        "document.querySelector('#rl-admin-counts').innerText.includes('3 rankings')")
    page.wait_for_function(
        "(before) => document.querySelector('#rl-admin-labels-plot svg').innerHTML !== before",
        arg=marks, timeout=60_000)
    _shot(page, "overview")


def test_each_form_has_its_own_message_and_a_missing_model_is_refused(browser, app):
    page, _ = _admin(browser, app["url"])
    _subtab(page, "Jobs")
    _fill(page, "rl-admin-gen-model", "/no/such/model")
    page.locator("#rl-admin-gen-start").click()
    assert "Not started: model folder /no/such/model does not exist" in _wait_value(
        page, "rl-admin-gen-message", "Not started")
    _fill(page, "rl-admin-gen-model", "someone/never-downloaded")
    page.locator("#rl-admin-gen-start").click()
    assert "neither a folder here nor a model cached" in _wait_value(
        page, "rl-admin-gen-message", "never-downloaded")
    page.locator("#rl-admin-train-start").click()
    assert _wait_value(page, "rl-admin-train-message", "Not started") == \
        "Not started: give an output folder for the reward model."
    page.locator("#rl-admin-score-start").click()
    _wait_value(page, "rl-admin-score-message", "bt:FOLDER")
    # Each message stays beside its own form.
    assert "never-downloaded" in _value(page, "rl-admin-gen-message")
    assert _value(page, "rl-admin-stop-message") == ""
    assert app["svc"].db()["jobs"].count == 0
    _shot(page, "jobs-refused")


def test_a_running_job_is_stopped_from_the_page_and_its_log_is_clean(browser, app):
    svc = app["svc"]
    # A finished job whose log is full of progress-bar redraws and colours.
    log = Path(svc.db_path).parent / "noisy.log"
    log.write_text("".join(f"\r\x1b[32m{p:3d}%\x1b[0m|{'#' * (p // 10)}" for p in range(0, 101, 5))
                   + "\n\x1b]0;title\x07generated 12 candidates\n")
    svc.db().execute("INSERT INTO jobs (kind, argv, status, returncode, started_by, started_at, "
                     "finished_at, log_path) VALUES ('generate', ?, 'succeeded', 0, 'root', 0, "
                     "1, ?)", [json.dumps(["generate"]), str(log)])
    # A real long job: `rankloop app` serving another port until it is stopped.
    job = svc.jobs.start("serve", ["app", "--port", str(free_port()), "--no-autogenerate"],
                         started_by="root")
    page, _ = _admin(browser, app["url"])
    _subtab(page, "Jobs")
    page.wait_for_function(
        "document.querySelector('#rl-admin-jobs')?.innerText.includes('running')")
    _fill(page, "rl-admin-job-id", "1")
    text = _wait_value(page, "rl-admin-log", "generated 12 candidates")
    assert "100%|##########\ngenerated 12 candidates" in text
    assert "\x1b" not in text and "title" not in text and " 95%" not in text
    _fill(page, "rl-admin-job-id", str(job.id))
    page.locator("#rl-admin-stop").click()
    assert _wait_value(page, "rl-admin-stop-message", "Stopped") == \
        f"Stopped job {job.id} (serve); its status is stopped."
    assert svc.jobs.get(job.id).status == "stopped"
    page.wait_for_function(
        "document.querySelector('#rl-admin-jobs').innerText.includes('stopped')")
    _shot(page, "job-stopped")


def test_the_data_browser_filters_pages_and_opens_an_item(browser, app):
    svc = app["svc"]
    disputed = _rank(svc, "ann", ["1", "2", "3"])
    assert _rank(svc, "bob", ["3", "2", "1"]) == disputed
    page, dialogs = _admin(browser, app["url"])
    _subtab(page, "Data")
    _wait_value(page, "rl-admin-page-caption", "30 items match")
    _choose(page, "rl-admin-page-size", "25")
    assert _wait_value(page, "rl-admin-page-caption", "Page 1 of 2") == \
        "Page 1 of 2 · 30 items match"
    page.locator("#rl-admin-next").click()
    _wait_value(page, "rl-admin-page-caption", "Page 2 of 2")
    cells = page.locator("#rl-admin-items [role=gridcell]")
    assert cells.first.inner_text().strip() == "26"
    page.locator("#rl-admin-prev").click()
    _wait_value(page, "rl-admin-page-caption", "Page 1 of 2")

    _choose(page, "rl-admin-filter-status", "disagreement")
    assert _wait_value(page, "rl-admin-page-caption", "1 items match") == \
        "Page 1 of 1 · 1 items match"
    _choose(page, "rl-admin-filter-annotator", "bob")
    _wait_value(page, "rl-admin-page-caption", "1 items match")
    assert cells.first.inner_text().strip() == str(disputed)
    cells.nth(2).click()  # selecting the row opens the item
    summary = _wait_value(page, "rl-admin-item-summary", f"Item {disputed}")
    assert "disagreement 1.00" in summary and "disputed pairs: A–B, A–C, B–C" in summary
    table = page.locator("#rl-admin-item-candidates")
    first = table.locator("[role=gridcell]").first
    assert first.evaluate("e => getComputedStyle(e).backgroundColor") == HIGHLIGHT
    text = table.inner_text()
    assert "rank by ann" in text and "rank by bob" in text
    assert "<script>window.__rl_xss = 1</script>" in text  # shown as text, never run
    rankings = page.locator("#rl-admin-item-rankings").inner_text()
    # Each vote reads in the letters its annotator saw, with what those are here.
    assert "ann's <b>reason</b>" in rankings and "their letters = here" in rankings
    assert len([line for line in rankings.splitlines() if " > " in line]) >= 2
    assert page.evaluate("window.__rl_xss") is None and dialogs == []
    _shot(page, "data-browser")

    # An item that everyone agrees on (or nobody ranked) is not highlighted.
    _fill(page, "rl-admin-item-id", "7")
    page.locator("#rl-admin-open-item").click()
    _wait_value(page, "rl-admin-item-summary", "Item 7 ")
    assert table.locator("[role=gridcell]").first.evaluate(
        "e => getComputedStyle(e).backgroundColor") != HIGHLIGHT


def test_the_filter_lists_follow_what_appears_while_the_console_is_open(browser, app):
    from data import browser as item_browser

    svc = app["svc"]
    page, _ = _admin(browser, app["url"])
    _subtab(page, "Data")
    _wait_value(page, "rl-admin-page-caption", "30 items match")
    # A tag and an annotator that did not exist when the page loaded.
    item_browser.tag_items(svc.db(), [3, 4], "needs-review")
    labeling.add_user(svc.db(), "dora", "annotator", "x")
    _choose(page, "rl-admin-filter-tag", "needs-review")
    assert _wait_value(page, "rl-admin-page-caption", "2 items match") == \
        "Page 1 of 1 · 2 items match"
    _choose(page, "rl-admin-filter-annotator", "dora")
    _wait_value(page, "rl-admin-page-caption", "0 items match")


def test_an_admin_creates_a_user_who_then_logs_in(browser, app):
    page, dialogs = _admin(browser, app["url"])
    _subtab(page, "Users")
    _fill(page, "rl-admin-new-name", "ann")
    _fill(page, "rl-admin-new-password", "long-enough-1")
    page.locator("#rl-admin-create-user").click()
    assert "already exists" in _wait_value(page, "rl-admin-create-message", "Not created")
    _fill(page, "rl-admin-new-name", "carol")
    _fill(page, "rl-admin-new-password", "short")
    page.locator("#rl-admin-create-user").click()
    assert "at least 8 characters" in _wait_value(page, "rl-admin-create-message", "8")
    _fill(page, "rl-admin-new-password", "carols-pass-1")
    page.locator("#rl-admin-create-user").click()
    assert _wait_value(page, "rl-admin-create-message", "Created") == \
        "Created annotator 'carol'; they can log in now."
    page.wait_for_function("document.querySelector('#rl-admin-users').innerText.includes('carol')")
    # A user name is untrusted text: shown as the characters typed, never as markup.
    hostile = "<img/src=x/onerror=window.__rl_xss=1>"
    assert _value(page, "rl-admin-new-password") == ""  # cleared once the user exists
    _fill(page, "rl-admin-new-name", hostile)
    _fill(page, "rl-admin-new-password", "hostile-pass-1")
    page.locator("#rl-admin-create-user").click()
    assert _wait_value(page, "rl-admin-create-message", "Created annotator '<img") == \
        f"Created annotator {hostile!r}; they can log in now."
    page.wait_for_function("(name) => document.querySelector('#rl-admin-users').innerText"
                           ".includes(name)", arg=hostile)
    assert page.locator("#rl-admin-users img").count() == 0
    assert page.evaluate("window.__rl_xss") is None and dialogs == []
    # The last admin cannot lock themselves out.
    page.locator("#rl-admin-who input").fill("root")
    page.locator("#rl-admin-disable").click()
    assert "last active admin" in _wait_value(page, "rl-admin-user-message", "Not disabled")
    _shot(page, "users")

    carol, _ = _login(browser, app["url"], "carol", password="carols-pass-1")
    carol.wait_for_timeout(500)
    assert carol.get_by_role("tab", name="Admin").count() == 0


def test_export_guidelines_suggestions_and_queue_order_from_the_page(browser, app):
    svc = app["svc"]
    _rank(svc, "ann", ["1", "2", "3"])
    page, dialogs = _admin(browser, app["url"])
    _subtab(page, "Export")
    _fill(page, "rl-admin-export-to", "exports/from-the-page")
    page.locator("#rl-admin-export").click()
    target = workspace_dir(svc.db_path) / "exports" / "from-the-page"
    assert _wait_value(page, "rl-admin-export-message", "xported", timeout=120_000).startswith(
        f"Exported to {target}: ")
    assert (target / "README.md").is_file()
    assert (target / "jsonl" / "rankings" / "train.jsonl").is_file()
    _fill(page, "rl-admin-export-to", "../outside")
    page.locator("#rl-admin-export").click()
    assert "'..'" in _wait_value(page, "rl-admin-export-message", "Not exported")

    _subtab(page, "Project")
    guidelines = "# Be kind\n\nRank **helpful** answers first. <img src=x onerror=alert(1)>"
    _fill(page, "rl-admin-guidelines", guidelines)
    preview = page.locator("#rl-admin-guidelines-preview")
    preview.locator("h1", has_text="Be kind").wait_for()
    assert preview.locator("img").count() == 0 and "<img src=x" in preview.inner_text()
    page.locator("#rl-admin-save-guidelines").click()
    _wait_value(page, "rl-admin-guidelines-message", "Guidelines saved")
    assert settings.get_setting(svc.db(), "guidelines") == guidelines

    page.locator("#rl-admin-suggestions input").check()
    page.locator("#rl-admin-save-suggestions").click()
    _wait_value(page, "rl-admin-suggestions-message", "Suggestions are on")
    assert settings.get_setting(svc.db(), "suggestions") is True

    assert _value(page, "rl-admin-queue-current") == "fifo"
    page.locator("#rl-admin-queue-order").get_by_text("random", exact=True).click()
    _fill(page, "rl-admin-queue-seed", "5")
    page.locator("#rl-admin-apply-order").click()
    assert _wait_value(page, "rl-admin-queue-message", "now") == \
        "The queue order is now random (seed 5)."
    assert _value(page, "rl-admin-queue-current") == "random (seed 5)"
    assert get_queue_order(svc.db()).order == "random" and get_queue_order(svc.db()).seed == 5
    page.locator("#rl-admin-queue-order").get_by_text("uncertain", exact=True).click()
    page.locator("#rl-admin-apply-order").click()
    assert "reward model" in _wait_value(page, "rl-admin-queue-message", "Not changed")
    assert dialogs == []
    _shot(page, "project")


def test_the_console_on_a_phone(browser, app):
    page, _ = _admin(browser, app["url"], viewport=PHONE)
    assert "0 rankings" in _counts(page)
    _shot(page, "phone")
