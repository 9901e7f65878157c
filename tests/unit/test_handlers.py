"""The app's handlers called directly on a real SQLite file (no server)."""

import pytest

from data.labeling import QueuePolicy
from labeler import admin, handlers
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
    assert view.assignment_id and len(view.candidates_html) == 3
    assert "**0** done by you · **3** left in the queue" == view.progress_md
    for _ in range(3):
        message, view = handlers.submit_ranking(svc, "ann", view.assignment_id, ["1", "2", "3"])
        assert message == "Saved (3 comparisons)."
    assert view.waiting and view.assignment_id is None
    assert "Nothing left to rank" in view.prompt_html
    assert "**3** done by you · **0** left" in view.progress_md


def test_invalid_submission_keeps_the_task_and_stores_nothing(svc):
    view = handlers.current_task(svc, "ann")
    message, again = handlers.submit_ranking(svc, "ann", view.assignment_id, ["1", None, "2"])
    assert message == "Not saved: rank every candidate: B has no rank."
    assert again.assignment_id == view.assignment_id
    assert svc.db()["rankings"].count == 0


def test_candidate_html_is_shown_as_text(svc):
    view = handlers.current_task(svc, "ann")
    html = [md for md in view.candidates_html if "script" in md]
    assert html and "<script>" not in html[0] and "&lt;script&gt;" in html[0]


def test_admin_functions_refuse_annotators(svc):
    for call in (lambda u: admin.dataset_status(svc, u),
                 lambda u: admin.jobs_table(svc, u),
                 lambda u: admin.job_log(svc, u),
                 lambda u: admin.start_generation(svc, u),
                 lambda u: admin.start_reward_training(svc, u, output="out"),
                 lambda u: admin.start_scoring(svc, u, scorer="bt:out")):
        with pytest.raises(PermissionDenied, match="admins only"):
            call("ann")
    assert svc.db()["jobs"].count == 0


def test_admin_status_reports_counts_agreement_and_gold(svc):
    for user, ranks in (("ann", ["1", "2", "3"]), ("bob", ["1", "2", "3"])):
        view = handlers.current_task(svc, user)
        handlers.submit_ranking(svc, user, view.assignment_id, ranks)
    status = admin.dataset_status(svc, "root")
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
    assert view.waiting and "Generating candidates" in view.prompt_html
    [job] = svc.jobs.list()
    assert job.kind == "generate" and job.argv[:1] == ["status"]
    import time

    deadline = time.monotonic() + 60
    while svc.jobs.get(job.id).status == "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert svc.jobs.get(job.id).status == "succeeded"
    assert "schema v" in svc.jobs.log_tail(svc.jobs.get(job.id))
    # Still no candidates, but the first job has run: no second one starts by itself.
    assert "Nothing left to rank" in handlers.current_task(svc, "ann").prompt_html
    assert len(svc.jobs.list()) == 1


def test_admins_start_training_and_scoring_jobs_with_the_right_commands(svc, tmp_path):
    assert "Not started" in admin.start_reward_training(svc, "root", output=" ")
    assert "Not started" in admin.start_scoring(svc, "root", scorer="folder-without-kind")
    message = admin.start_reward_training(svc, "root", output="rm",
                                             epochs=2, agreed_only=True, lora_r=8)
    assert message.startswith("Started job 1: rankloop train reward --output")
    admin.start_scoring(svc, "root", scorer=f"bt:{tmp_path / 'rm'}")
    jobs = {j.kind: j.argv for j in svc.jobs.list()}
    workspace = tmp_path / "r.db.workspace"
    assert jobs["train-reward"] == ["train", "reward", "--output", str(workspace / "rm"),
                                    "--model", "default", "--epochs", "2", "--no-progress",
                                    "--agreed-only", "--lora-r", "8", "--db", svc.db_path]
    assert jobs["score"] == ["score", "--scorer", f"bt:{tmp_path / 'rm'}", "--db", svc.db_path]
    svc.jobs.stop_all()


def test_generation_jobs_pass_the_parallel_sizes(svc):
    svc.jobs.max_running = 3  # three jobs side by side, above the app's usual cap
    admin.start_generation(svc, "root", limit=1, data_parallel_size=8)
    admin.start_generation(svc, "root", limit=1, tensor_parallel_size=2, data_parallel_size=4)
    admin.start_generation(svc, "root", limit=1)
    plain, both, data = (j.argv for j in svc.jobs.list())
    assert data[data.index("--data-parallel-size") + 1] == "8"
    assert "--tensor-parallel-size" not in data
    assert (both[both.index("--tensor-parallel-size") + 1],
            both[both.index("--data-parallel-size") + 1]) == ("2", "4")
    assert not any("parallel" in a for a in plain)
    svc.jobs.stop_all()


def test_generation_jobs_use_the_newest_policy_iteration(svc, tmp_path):
    admin.start_generation(svc, "root", limit=1)
    db = svc.db()
    db.execute("INSERT INTO policy_iterations (iteration, algorithm, base_model, model, scorer, "
               "report, created_at) VALUES (1, 'rebel', 'default', ?, 'bt:x', '{}', 0)",
               [str(tmp_path / "policy-1")])
    # A recorded policy whose folder is gone is refused, not started.
    refused = admin.start_generation(svc, "root", limit=1)
    assert refused.startswith("Not started") and "policy-1 does not exist" in refused
    (tmp_path / "policy-1").mkdir()
    (tmp_path / "policy-1" / "config.json").write_text("{}")
    admin.start_generation(svc, "root", limit=1)
    second, first = svc.jobs.list()
    assert first.argv[first.argv.index("--model") + 1] == "default"
    assert second.argv[second.argv.index("--model") + 1] == str(tmp_path / "policy-1")
    svc.jobs.stop_all()


def test_an_item_that_cannot_be_shown_is_set_aside_not_stranding_anyone(svc):
    from data import labeling, store

    db = svc.db()
    run_id = store.get_or_create_run(db, store.RunSettings("m", "transformers", 9, 0.8, 0.9,
                                                           8, 0))
    [prompt_id] = store.upsert_prompts(db, [([{"role": "user", "content": "nine"}], "t", "9")])
    store.add_candidates(db, prompt_id, run_id, [store.CandidateIn(f"c{i}", 1, "stop")
                                                 for i in range(9)])
    labeling.sync_items(db)
    bob = svc.user("bob")
    # Hand bob the 9-candidate item first, as an older app would have.
    nine = db.execute("SELECT id FROM items WHERE run_id = ?", [run_id]).fetchone()[0]
    db.execute("INSERT INTO assignments (item_id, user_id, candidate_ids, shown_at, expires_at)"
               " SELECT ?, ?, json_group_array(id), 0, 1e12 FROM candidates WHERE run_id = ?",
               [nine, bob.id, run_id])
    view = handlers.current_task(svc, "bob")
    assert view.assignment_id and len(view.candidates_html) == 3  # the next regular item
    assert [r["id"] for r in labeling.set_aside_items(db)] == [nine]
    assert "9 candidates" in labeling.set_aside_items(db)[0]["set_aside_reason"]
    assert handlers.current_task(svc, "bob").assignment_id == view.assignment_id
    assert "**1** items set aside" in admin.dataset_status(svc, "root").summary_md()


@pytest.mark.parametrize("field, value, message", [
    ("all_bad", 7, "all_bad must be true or false"),
    ("all_bad", "yes", "all_bad must be true or false"),
    ("rationale", ["x"], "the rationale must be text"),
    ("demonstration", "x" * 100_001, "longer than"),
    ("ranks", ["1", {"a": 1}, "2"], "each rank must be a number"),
    ("assignment_id", "1; DROP TABLE", "whole number"),
])
def test_api_values_of_the_wrong_type_are_refused(svc, field, value, message):
    view = handlers.current_task(svc, "ann")
    kwargs = {"all_bad": False, "rationale": "", "demonstration": ""}
    args = [view.assignment_id, ["1", "2", "3"]]
    if field == "ranks":
        args[1] = value
    elif field == "assignment_id":
        args[0] = value
    else:
        kwargs[field] = value
    with pytest.raises(handlers.BadRequest, match=message):
        handlers.submit_ranking(svc, "ann", *args, **kwargs)
    assert svc.db()["rankings"].count == 0


def test_generation_k_above_the_page_is_refused(svc):
    assert admin.start_generation(svc, "root", k=9).startswith("Not started")
    assert svc.db()["jobs"].count == 0


@pytest.mark.parametrize("output", ["../escape", "/etc/rankloop", "a/../../b", ".", "x\x00y"])
def test_job_outputs_stay_inside_the_workspace(svc, output):
    message = admin.start_reward_training(svc, "root", output=output)
    assert message.startswith("Not started") and ("workspace" in message or "'..'" in message)
    assert svc.db()["jobs"].count == 0


def test_job_outputs_cannot_leave_the_workspace_through_a_link(svc, tmp_path):
    from labeler.jobs import workspace_dir

    workspace = workspace_dir(svc.db_path)
    workspace.mkdir()
    (workspace / "out").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert "Not started" in admin.start_reward_training(svc, "root", output="out/rm")


def test_running_jobs_are_capped(svc):
    import json
    import subprocess
    import time

    # Two jobs whose processes are alive (plain sleeps stand in for model jobs).
    sleepers = [subprocess.Popen(["sleep", "30"]) for _ in range(2)]
    try:
        db = svc.db()
        for p in sleepers:
            db.execute("INSERT INTO jobs (kind, argv, status, pid, started_by, started_at) "
                       "VALUES ('generate', ?, 'running', ?, 'root', ?)",
                       [json.dumps(["generate"]), p.pid, time.time()])
        message = admin.start_scoring(svc, "root", scorer="bt:x")
        assert message.startswith("Not started") and "2 jobs are running" in message
        assert db["jobs"].count == 2
    finally:
        for p in sleepers:
            p.kill()
            p.wait()
    # Once they have ended, a job starts again.
    assert admin.start_scoring(svc, "root", scorer="bt:x").startswith("Started job 3")
