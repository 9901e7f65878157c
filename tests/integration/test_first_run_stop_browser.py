"""The first run on an empty store, watched and stopped in headless Chromium: the annotator's
waiting screen and the admin's overview say what the job does from its first seconds, and a
stop by the admin sticks while the waiting screen keeps polling."""

import pytest

from data import labeling, store
from data.labeling import QueuePolicy
from labeler.auth import hash_password
from tests.integration.conftest import free_port
from tests.integration.test_admin_browser import DESKTOP, PHONE, _fill, _login, _shot, \
    _subtab, _wait_value
from tests.labeling_fixtures import PASSWORD


@pytest.fixture
def empty_app(tmp_path):
    """An app over a store with accounts and no candidates; its first run is a real job that
    runs until stopped (another app, on a free port), so nothing loads a model here."""
    from labeler.app import serve
    from labeler.handlers import LabelerService

    db = store.open_store(tmp_path / "first.db")
    for name, role in (("ann", "annotator"), ("root", "admin")):
        labeling.add_user(db, name, role, hash_password(PASSWORD))
    svc = LabelerService(str(tmp_path / "first.db"), policy=QueuePolicy(overlap=1),
                         autogenerate=True)
    svc.first_run_args = ["app", "--port", str(free_port()), "--no-autogenerate"]
    port = free_port()
    served = serve(svc, port=port, block=False)
    yield {"url": f"http://127.0.0.1:{port}/", "svc": svc}
    svc.jobs.stop_all(grace_s=5)
    served.close()


def test_a_stopped_first_run_stays_stopped_while_the_waiting_screen_polls(browser, empty_app):
    svc = empty_app["svc"]
    annotator, _ = _login(browser, empty_app["url"], "ann", viewport=PHONE)
    annotator.wait_for_function(
        "document.querySelector('#rl-state-detail')?.innerText.includes('so far')")
    assert "Loading the model" in annotator.locator("#rl-state-detail").inner_text()
    _shot(annotator, "first-run-waiting-phone")
    [job] = svc.jobs.running()

    admin, _ = _login(browser, empty_app["url"], "root", viewport=DESKTOP)
    admin.get_by_role("tab", name="Admin").click()
    admin.wait_for_function(
        "document.querySelector('#rl-admin-running')?.innerText.includes('Running now')")
    running = admin.locator("#rl-admin-running").inner_text()
    assert f"job {job.id} (generate, started by rankloop" in running and "so far" in running
    _subtab(admin, "Jobs")
    _fill(admin, "rl-admin-job-id", str(job.id))
    admin.locator("#rl-admin-stop").click()
    _wait_value(admin, "rl-admin-stop-message", "Stopped")
    # The waiting screen polls every few seconds: none of its polls starts the job again.
    annotator.wait_for_timeout(8000)
    assert [(j.id, j.status) for j in svc.jobs.list()] == [(job.id, "stopped")]
    admin.wait_for_function(
        "document.querySelector('#rl-admin-jobs')?.innerText.includes('stopped by an admin')")
    assert "No job is running." in admin.locator("#rl-admin-running").inner_text()
    _shot(admin, "first-run-stopped")
