"""Review an admin can trust and jobs an admin can watch, in headless Chromium against one
served app (desktop, and a phone for the tables): the console starts empty (charts say so,
Vega draws nothing and warns of nothing), then fills as annotators rank."""

import json
import os
import time

import pytest

from data import browser as item_browser
from data import labeling, settings, store
from data.labeling import QueuePolicy
from labeler import admin, handlers
from labeler.jobs import workspace_dir
from tests.integration.conftest import serve_db
from tests.integration.test_admin_browser import (DESKTOP, PHONE, _fill, _login, _shot,
                                                  _subtab, _value, _wait_value)
from tests.labeling_fixtures import make_labeling_db

SCORER_DIR = "/srv/rankloop/app.db.workspace/models/reward-1"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """12 items of 4 candidates, overlap 2, nobody has ranked yet."""
    db_path = make_labeling_db(tmp_path_factory.mktemp("review") / "app.db", n_prompts=12, k=4)
    served, svc, origin = serve_db(db_path, policy=QueuePolicy(overlap=2))
    yield {"url": origin + "/", "svc": svc}
    svc.jobs.stop_all(grace_s=2)
    served.close()


@pytest.fixture(scope="module")
def browser():
    from tests.browser import chromium

    with chromium() as b:
        yield b


def _admin_page(browser, url, viewport=DESKTOP):
    page, dialogs = _login(browser, url, "root", viewport=viewport)
    warnings = []
    page.on("console", lambda m: warnings.append(m.text))
    page.get_by_role("tab", name="Admin").click()
    page.wait_for_function(
        "document.querySelector('#rl-admin-counts')?.innerText.includes('pairwise')")
    return page, warnings


def _rank_shown(svc, user, shown_ranks, **kw):
    """Ranks the user's next item with ranks in the order the page showed the candidates."""
    view = handlers.current_task(svc, user)
    message, _ = handlers.submit_ranking(svc, user, view.assignment_id, shown_ranks, **kw)
    assert message.startswith("Saved"), message
    return labeling.get_assignment(svc.db(), view.assignment_id)


def _letters_here(svc, assignment):
    """Candidate id → its letter in the Data tab (generation order)."""
    ids = [c["id"] for c in labeling.item_candidates(svc.db(), assignment.item_id)]
    return {cid: "ABCD"[i] for i, cid in enumerate(ids)}


def test_an_empty_console_says_so_and_vega_warns_of_nothing(browser, app):
    page, warnings = _admin_page(browser, app["url"])
    page.wait_for_function(
        "document.querySelector('#rl-admin-labels-empty')?.innerText.includes('no rankings')")
    assert "no data yet" in page.locator("#rl-admin-agreement-empty").inner_text()
    assert not page.locator("#rl-admin-labels-plot").is_visible()
    assert "— no item has two rankings yet" in page.locator("#rl-admin-alpha").inner_text()
    page.wait_for_timeout(1500)
    assert not [w for w in warnings if "Infinite extent" in w], warnings
    _shot(page, "review-empty")
    page.context.close()


def test_votes_in_the_annotators_letters_with_current_counts_and_short_model_names(
        browser, app):
    svc = app["svc"]
    db = svc.db()
    page, warnings = _admin_page(browser, app["url"])
    # Annotators rank after the console was opened: the Data tab opens with today's counts.
    first = _rank_shown(svc, "ann", ["1", "2", "4", "4"],
                        rationale="A is concrete, C and D trail off")
    _rank_shown(svc, "bob", ["4", "3", "2", "1"])
    other = _rank_shown(svc, "bob", ["1", "2", "3", "4"])
    if other.item_id == first.item_id:  # bob's second item is ann's too: fine either way
        pass
    # A skip is not a ranking.
    handlers.skip(svc, "ann", {"assignment_id": handlers.current_task(svc, "ann").assignment_id})
    here = _letters_here(svc, first)
    ids = list(here)
    db.execute("UPDATE candidates SET duplicate_of = ? WHERE id = ?", [ids[0], ids[3]])
    store.put_model_scores(db, [store.ModelScore(c, f"bt:{SCORER_DIR}", float(i))
                                for i, c in enumerate(ids)])

    _subtab(page, "Data")
    page.wait_for_function(
        "document.querySelector('#rl-admin-items')?.innerText.includes('ann')")
    _fill(page, "rl-admin-item-id", str(first.item_id))
    page.locator("#rl-admin-open-item").click()
    _wait_value(page, "rl-admin-item-summary", f"Item {first.item_id} ")
    rankings = page.locator("#rl-admin-item-rankings").inner_text()
    # ann saw A B C D in her shuffled order: the vote reads in her letters, as her rationale.
    assert "A > B > C = D" in rankings and "A is concrete, C and D trail off" in rankings
    mapping = ", ".join(f"{'ABCD'[i]}={here[cid]}" for i, cid in enumerate(first.candidate_ids))
    assert mapping in rankings
    candidates = page.locator("#rl-admin-item-candidates").inner_text()
    assert f"duplicate of A" in candidates
    assert "reward-1 (bt) score (rank)" in candidates and SCORER_DIR not in candidates
    # Headers are whole words, not a letter per line.
    heights = page.evaluate(
        "() => [...document.querySelectorAll('#rl-admin-item-rankings th, "
        "#rl-admin-item-candidates th')].map(th => th.getBoundingClientRect().height)")
    assert heights and max(heights) < 60, heights
    _shot(page, "review-item")

    # Overview, refreshed: rankings per UTC hour without the skip, agreement drawn.
    _subtab(page, "Overview")
    page.get_by_role("button", name="Refresh now").click()
    page.wait_for_function(
        "document.querySelector('#rl-admin-agreement-plot svg')?.textContent.includes('ann')")
    hour = time.strftime("%Y-%m-%d %H:00", time.gmtime())
    plot = page.locator("#rl-admin-labels-plot svg").first.text_content()
    assert hour in plot or time.strftime("%Y-%m-%d %H:00", time.gmtime(time.time() - 60)) in plot
    assert page.locator("#rl-admin-labels-empty").inner_text() == ""
    assert admin.labels_per_period(admin.dataset_status(svc, "root").labels_over_time)[-1][1] == 3
    assert "0.8 and above is the usual bar" in page.locator("#rl-admin-alpha").inner_text()
    assert "gold accuracy" in page.locator("#rl-admin-note").inner_text()
    page.wait_for_timeout(1000)
    assert not [w for w in warnings if "Infinite extent" in w], warnings
    _shot(page, "review-overview")
    page.context.close()


def test_an_annotators_recent_submissions_show_ties(browser, app):
    page, _ = _login(browser, app["url"], "ann", viewport=PHONE)
    page.locator("[data-rl-action=recent]").first.click()
    page.wait_for_selector("#rl-recent")
    summaries = page.locator(".rl-recent-summary").all_inner_texts()
    assert "ranked A > B > C = D" in summaries, summaries  # her vote of 1, 2, 4, 4
    _shot(page, "recent-ties-phone")
    page.context.close()


def test_messages_look_like_what_happened_and_export_downloads(browser, app, tmp_path):
    svc = app["svc"]
    page, _ = _admin_page(browser, app["url"])
    _subtab(page, "Users")
    _fill(page, "rl-admin-new-name", "carol")
    _fill(page, "rl-admin-new-password", "short")
    page.locator("#rl-admin-create-user").click()
    _wait_value(page, "rl-admin-create-message", "Not created")
    assert "rl-admin-error" in page.locator("#rl-admin-create-message").get_attribute("class")
    _fill(page, "rl-admin-new-password", "carols-pass-1")
    page.locator("#rl-admin-create-user").click()
    _wait_value(page, "rl-admin-create-message", "Created")
    assert "rl-admin-ok" in page.locator("#rl-admin-create-message").get_attribute("class")

    _subtab(page, "Export")
    folder = workspace_dir(svc.db_path) / "exports" / "taken"
    folder.mkdir(parents=True)
    (folder / "x").write_text("x")
    _fill(page, "rl-admin-export-to", "exports/taken")
    page.locator("#rl-admin-export").click()
    said = _wait_value(page, "rl-admin-export-message", "Not exported")
    assert 'tick "Replace a non-empty folder"' in said and "--overwrite" not in said
    _fill(page, "rl-admin-export-to", "exports/one")
    page.locator("#rl-admin-export").click()
    _wait_value(page, "rl-admin-export-message", "Exported to")
    link = page.locator("#rl-admin-export-download a").first
    link.wait_for()
    with page.expect_download() as got:
        link.click()
    saved = tmp_path / "export.zip"
    got.value.save_as(saved)
    import zipfile

    names = zipfile.ZipFile(saved).namelist()
    assert any(n.endswith(".parquet") or n.endswith(".json") for n in names), names
    _shot(page, "review-export")
    page.context.close()


def test_overlap_in_the_console_and_a_disabled_users_items_go_back(browser, app):
    from labeler.auth import hash_password

    svc = app["svc"]
    if labeling.get_user(svc.db(), "carol") is None:  # made in the console by an earlier test
        labeling.add_user(svc.db(), "carol", "annotator", hash_password("carols-pass-1"))
    held = handlers.current_task(svc, "carol")  # carol holds an item
    assert item_browser.item_detail(svc.db(), labeling.get_assignment(
        svc.db(), held.assignment_id).item_id).holders == ["carol"]
    page, _ = _admin_page(browser, app["url"])
    _subtab(page, "Project")
    assert _value(page, "rl-admin-overlap") == "2"
    _fill(page, "rl-admin-overlap", "3")
    page.locator("#rl-admin-save-overlap").click()
    _wait_value(page, "rl-admin-overlap-message", "ranked by 3 annotators")
    assert svc.policy.overlap == 3 and settings.get_setting(svc.db(), "overlap") == 3

    _subtab(page, "Users")
    page.locator("#rl-admin-who input").first.fill("carol")
    page.locator("#rl-admin-disable").click()
    said = _wait_value(page, "rl-admin-user-message", "Disabled")
    assert "the 1 item they held is back in the queue" in said
    item = labeling.get_assignment(svc.db(), held.assignment_id).item_id
    assert item_browser.item_detail(svc.db(), item).holders == []
    page.context.close()


def test_jobs_show_their_progress_and_the_form_its_work(browser, app):
    svc = app["svc"]
    out = workspace_dir(svc.db_path) / "models" / "reward-2"
    out.mkdir(parents=True)
    (out / "metrics.jsonl").write_text(json.dumps(
        {"step": 10, "train/loss": 0.25, "train/epoch": 10 / 15}) + "\n")
    svc.db().execute(
        "INSERT INTO jobs (kind, argv, status, started_by, started_at, pid) VALUES "
        "('train-reward', ?, 'running', 'root', ?, ?)",
        [json.dumps(["train", "reward", "--output", str(out), "--epochs", "1"]),
         time.time() - 60, os.getpid()])
    try:
        page, warnings = _admin_page(browser, app["url"])
        # Votes were there before the page loaded: the agreement chart shows what its table
        # shows from the first paint, without a click.
        page.wait_for_function(
            "document.querySelector('#rl-admin-agreement-plot svg')?.textContent"
            ".includes('ann / bob')", timeout=20_000)
        assert not [w for w in warnings if "Infinite extent" in w], warnings
        running = page.locator("#rl-admin-running").inner_text()
        assert "Running now: job" in running and "step 10 of 15, loss 0.2500" in running
        _subtab(page, "Jobs")
        page.wait_for_function(
            "document.querySelector('#rl-admin-jobs')?.innerText.includes('step 10 of 15')")
        estimate = page.locator("#rl-admin-gen-estimate").inner_text()
        assert "prompts × 4 candidates × up to 256 new tokens" in estimate
        _fill(page, "rl-admin-gen-model", "default")
        page.locator("#rl-admin-gen-estimate").wait_for()
        # The parallel-engine fields are offered only on a machine with a GPU.
        shown = page.locator("#rl-admin-gen-dp").count() > 0 and \
            page.locator("#rl-admin-gen-dp").is_visible()
        assert shown == admin.machine_has_gpu()
        _shot(page, "jobs-progress")
        page.context.close()
    finally:
        svc.db().execute("UPDATE jobs SET status = 'succeeded' WHERE pid = ?", [os.getpid()])


def test_the_tables_on_a_phone_keep_their_headers_whole(browser, app):
    page, _ = _admin_page(browser, app["url"], viewport=PHONE)
    _subtab(page, "Jobs")
    page.locator("#rl-admin-jobs th").first.wait_for()
    heights = page.evaluate("() => [...document.querySelectorAll('#rl-admin-jobs th')]"
                            ".map(th => th.getBoundingClientRect().height)")
    assert heights and max(heights) < 60, heights
    _shot(page, "review-phone-jobs")
    page.context.close()
