"""The Review tab in a real browser (headless Debian Chromium through Playwright) against the
served app: who sees it, each vote in its annotator's letters, untrusted text shown as text,
and a decision recorded from the page."""

import pytest

from data import adjudication, labeling
from data.labeling import QueuePolicy
from labeler import handlers
from tests.browser import ARTIFACTS
from tests.integration.conftest import serve_db
from tests.labeling_fixtures import PASSWORD, make_labeling_db

HOSTILE = "<img/src=x/onerror=window.__rl_xss=1>"
USERS = (("ann", "annotator"), ("bob", "annotator"), ("cat", "annotator"), ("root", "admin"))


@pytest.fixture
def app(tmp_path):
    db_path = make_labeling_db(tmp_path / "app.db", n_prompts=1, k=3, users=USERS)
    served, svc, origin = serve_db(db_path, policy=QueuePolicy(overlap=2))
    yield {"url": origin + "/", "svc": svc}
    served.close()


def _rank(svc, user, by_idx, rationale=""):
    view = handlers.current_task(svc, user)
    svc.db().execute("UPDATE assignments SET shown_at = shown_at - 60 WHERE id = ?",
                     [view.assignment_id])  # shown a minute ago: 33 active seconds fit
    assignment = labeling.get_assignment(svc.db(), view.assignment_id)
    ids = [c["id"] for c in labeling.item_candidates(svc.db(), assignment.item_id)]
    shown = [by_idx[ids.index(cid)] for cid in assignment.candidate_ids]
    out = handlers.submit(svc, user, {"assignment_id": view.assignment_id, "ranks": shown,
                                      "rationale": rationale, "active_seconds": 33})
    assert out.status["outcome"] == "saved"
    return out.status["ranking_id"], assignment


def _login(browser, url, user):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(url)
    page.locator("input").nth(0).fill(user)
    page.locator("input").nth(1).fill(PASSWORD)
    page.get_by_role("button", name="Login").click()
    page.get_by_role("tab", name="Rank").wait_for()
    return page, dialogs


def test_review_a_disputed_item_in_the_browser(browser, app):
    svc = app["svc"]
    ann_vote, _ = _rank(svc, "ann", ["1", "2", "3"])
    bob_vote, bob_task = _rank(svc, "bob", ["3", "2", "1"], rationale=HOSTILE)

    # A plain annotator has no Review tab; naming them a reviewer gives them one.
    page, _ = _login(browser, app["url"], "cat")
    page.wait_for_timeout(1500)
    assert page.get_by_role("tab", name="Review").count() == 0
    page.context.close()

    page, dialogs = _login(browser, app["url"], "root")
    page.get_by_role("tab", name="Review").click()
    page.wait_for_function(
        "document.querySelector('#rl-review-summary')?.innerText.includes('1 item to review')")
    page.wait_for_function(
        "document.querySelector('#rl-review-votes')?.innerText.includes('bob')")
    votes = page.locator("#rl-review-votes").inner_text()
    candidates = page.locator("#rl-review-candidates").inner_text()
    # bob's letters are the order he saw: A is the first candidate shown to him.
    number = {c["id"]: c["idx"] + 1 for c in labeling.item_candidates(
        svc.db(), bob_task.item_id)}
    assert f"A = #{number[bob_task.candidate_ids[0]]}" in votes
    assert "33 s" in votes and "60 s" in votes  # active and wall time beside the vote
    assert "too fast" not in votes  # 33 s is ample for these short candidates
    assert HOSTILE in votes  # the rationale shown as text, never run
    assert "<script>window.__rl_xss = 1</script>" in candidates
    assert page.evaluate("window.__rl_xss") is None and dialogs == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review-queue.png"), full_page=True)

    # Keep bob's vote as the item's label.
    page.get_by_text("Keep one vote as the item's label").click()
    page.locator("#rl-review-keep input").first.click()
    page.get_by_role("option", name=f"vote {bob_vote} by bob", exact=True).click()
    page.locator("#rl-review-note textarea").fill("bob read the question")
    page.locator("#rl-review-record").click()
    page.wait_for_function(
        "document.querySelector('#rl-review-message textarea')?.value.includes('Recorded')")
    [decision] = adjudication.decisions(svc.db())
    assert (decision.reviewer, decision.outcome, decision.ranking_id, decision.note) == (
        "root", "vote", bob_vote, "bob read the question")
    page.wait_for_function(
        "document.querySelector('#rl-review-summary')?.innerText.includes('Nothing to review')")

    # The admin names cat a reviewer from the same tab.
    page.locator("#rl-review-who input, #rl-review-who textarea").first.fill("cat")
    page.locator("#rl-review-apply").click()
    page.wait_for_function("document.querySelector('#rl-review-reviewer-message textarea')"
                           "?.value.includes('now a reviewer')")
    assert adjudication.reviewers(svc.db()) == ["cat"]
    page.context.close()
    page, _ = _login(browser, app["url"], "cat")
    page.get_by_role("tab", name="Review").click()
    page.wait_for_function(
        "document.querySelector('#rl-review-summary')?.innerText.includes('Nothing to review')")
    assert not page.locator("#rl-review-who").is_visible()  # naming reviewers is for admins
    page.context.close()
    assert ann_vote != bob_vote
