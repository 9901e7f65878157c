"""The app's handlers called directly on a real SQLite file (no server)."""

import pytest

from data.labeling import QueuePolicy
from labeler import handlers
from labeler.handlers import LabelerService, PermissionDenied
from tests.labeling_fixtures import PASSWORD, make_labeling_db


@pytest.fixture
def svc(tmp_path):
    return LabelerService(make_labeling_db(tmp_path / "r.db", n_prompts=3, k=3),
                          policy=QueuePolicy(overlap=2), autogenerate=False)


def test_login_checks_the_stored_hash(svc):
    assert svc.check_login("ann", PASSWORD)
    assert not svc.check_login("ann", "wrong-password")
    assert not svc.check_login("nobody", PASSWORD)


def test_a_session_ranks_items_until_the_queue_is_empty(svc):
    view = handlers.current_task(svc, "ann")
    assert view.assignment_id and len(view.candidates_md) == 3
    assert "**0** done by you · **3** left in the queue" == view.progress_md
    for _ in range(3):
        message, view = handlers.submit_ranking(svc, "ann", view.assignment_id, ["1", "2", "3"])
        assert message == "Saved (3 comparisons)."
    assert view.waiting and view.assignment_id is None
    assert "Nothing left to rank" in view.prompt_md
    assert "**3** done by you · **0** left" in view.progress_md


def test_invalid_submission_keeps_the_task_and_stores_nothing(svc):
    view = handlers.current_task(svc, "ann")
    message, again = handlers.submit_ranking(svc, "ann", view.assignment_id, ["1", None, "2"])
    assert message == "Not saved: rank every candidate: B has no rank."
    assert again.assignment_id == view.assignment_id
    assert svc.db()["rankings"].count == 0


def test_candidate_html_is_shown_as_text(svc):
    view = handlers.current_task(svc, "ann")
    html = [md for md in view.candidates_md if "script" in md]
    assert html and "<script>" not in html[0] and "&lt;script&gt;" in html[0]


def test_admin_functions_refuse_annotators(svc):
    for call in (lambda u: handlers.dataset_status(svc, u),
                 lambda u: handlers.jobs_table(svc, u),
                 lambda u: handlers.job_log(svc, u),
                 lambda u: handlers.start_generation(svc, u),
                 lambda u: handlers.start_reward_training(svc, u, output="out"),
                 lambda u: handlers.start_scoring(svc, u, scorer="bt:out")):
        with pytest.raises(PermissionDenied, match="admins only"):
            call("ann")
    assert svc.db()["jobs"].count == 0


def test_admin_status_reports_counts_agreement_and_gold(svc):
    for user, ranks in (("ann", ["1", "2", "3"]), ("bob", ["1", "2", "3"])):
        view = handlers.current_task(svc, user)
        handlers.submit_ranking(svc, user, view.assignment_id, ranks)
    status = handlers.dataset_status(svc, "root")
    assert status.counts["rankings"] == 2 and status.counts["comparisons"] == 6
    assert [row[:3] for row in status.annotators] == [["ann", "annotator", 1],
                                                      ["bob", "annotator", 1],
                                                      ["root", "admin", 0]]
    assert len(status.labels_over_time) == 2
    # Both saw the same item (overlap 2) in their own shuffled order.
    assert [row[0:2] for row in status.agreement_pairs] == [["ann", "bob"]]


def test_empty_store_starts_one_background_generation(tmp_path):
    svc = LabelerService(make_labeling_db(tmp_path / "r.db", n_prompts=0),
                         first_run_args=["status"])  # a quick stand-in command
    view = handlers.current_task(svc, "ann")
    assert view.waiting and "Generating candidates" in view.prompt_md
    [job] = svc.jobs.list()
    assert job.kind == "generate" and job.argv[:1] == ["status"]
    import time

    deadline = time.monotonic() + 60
    while svc.jobs.get(job.id).status == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert svc.jobs.get(job.id).status == "succeeded"
    assert "schema v" in svc.jobs.log_tail(svc.jobs.get(job.id))
    # Still no candidates, but the first job has run: no second one starts by itself.
    assert "Nothing left to rank" in handlers.current_task(svc, "ann").prompt_md
    assert len(svc.jobs.list()) == 1


def test_admins_start_training_and_scoring_jobs_with_the_right_commands(svc, tmp_path):
    assert "Not started" in handlers.start_reward_training(svc, "root", output=" ")
    assert "Not started" in handlers.start_scoring(svc, "root", scorer="folder-without-kind")
    message = handlers.start_reward_training(svc, "root", output=str(tmp_path / "rm"),
                                             epochs=2, agreed_only=True, lora_r=8)
    assert message.startswith("Started job 1: rankloop train reward --output")
    handlers.start_scoring(svc, "root", scorer=f"bt:{tmp_path / 'rm'}")
    jobs = {j.kind: j.argv for j in svc.jobs.list()}
    assert jobs["train-reward"] == ["train", "reward", "--output", str(tmp_path / "rm"),
                                    "--model", "default", "--epochs", "2", "--no-progress",
                                    "--agreed-only", "--lora-r", "8", "--db", svc.db_path]
    assert jobs["score"] == ["score", "--scorer", f"bt:{tmp_path / 'rm'}", "--db", svc.db_path]
    svc.jobs.stop_all()


def test_generation_jobs_pass_the_parallel_sizes(svc):
    handlers.start_generation(svc, "root", limit=1, data_parallel_size=8)
    handlers.start_generation(svc, "root", limit=1, tensor_parallel_size=2, data_parallel_size=4)
    handlers.start_generation(svc, "root", limit=1)
    plain, both, data = (j.argv for j in svc.jobs.list())
    assert data[data.index("--data-parallel-size") + 1] == "8"
    assert "--tensor-parallel-size" not in data
    assert (both[both.index("--tensor-parallel-size") + 1],
            both[both.index("--data-parallel-size") + 1]) == ("2", "4")
    assert not any("parallel" in a for a in plain)
    svc.jobs.stop_all()


def test_generation_jobs_use_the_newest_policy_iteration(svc, tmp_path):
    handlers.start_generation(svc, "root", limit=1)
    db = svc.db()
    db.execute("INSERT INTO policy_iterations (iteration, algorithm, base_model, model, scorer, "
               "report, created_at) VALUES (1, 'rebel', 'default', ?, 'bt:x', '{}', 0)",
               [str(tmp_path / "policy-1")])
    handlers.start_generation(svc, "root", limit=1)
    second, first = svc.jobs.list()
    assert first.argv[first.argv.index("--model") + 1] == "default"
    assert second.argv[second.argv.index("--model") + 1] == str(tmp_path / "policy-1")
    svc.jobs.stop_all()
