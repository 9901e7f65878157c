"""The app's handlers called directly on a real SQLite file (no server)."""

from pathlib import Path

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
    assert view.progress == "0 done by you · 3 left in the queue"
    for _ in range(3):
        message, view = handlers.submit_ranking(svc, "ann", view.assignment_id, ["1", "2", "3"])
        assert message == "Saved — ranking of 3 candidates."
    assert view.waiting and view.assignment_id is None
    assert "Nothing left to rank" in view.state_title
    assert view.progress == "3 done by you · 0 left in the queue"
    shown = handlers.screen(view).html
    assert "Nothing left to rank" in shown and 'id="rl-submit"' not in shown


def test_invalid_submission_keeps_the_task_and_stores_nothing(svc):
    view = handlers.current_task(svc, "ann")
    message, again = handlers.submit_ranking(svc, "ann", view.assignment_id, ["1", None, "2"])
    assert message == "Not saved: give every candidate a rank — B has no rank yet."
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
    assert view.waiting and "Generating candidates" in view.state_title
    # The first-run screen says how far generation is (data.progress), and has no controls.
    assert view.state_detail.startswith("Loading the model to generate the first candidates… (")
    shown = handlers.screen(view)
    assert "Loading the model" in shown.html and 'id="rl-bar"' not in shown.html
    assert shown.status["waiting"] and shown.status["assignment_id"] is None
    [job] = svc.jobs.list()
    assert job.kind == "generate" and job.argv[:1] == ["status"]
    import time

    deadline = time.monotonic() + 60
    while (status := svc.jobs.get(job.id).status) == "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    # Between the process's exit and its watcher recording it, the job is never called lost.
    assert status == "succeeded"
    assert "schema v" in svc.jobs.log_tail(svc.jobs.get(job.id))
    # Still no candidates, but the first job has run: no second one starts by itself.
    assert "Nothing left to rank" in handlers.current_task(svc, "ann").state_title
    assert len(svc.jobs.list()) == 1


def _model_folder(path):
    """A folder the app takes for a saved model (the job itself would load it)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    return path


def test_admins_start_training_and_scoring_jobs_with_the_right_commands(svc, tmp_path):
    assert "Not started" in admin.start_reward_training(svc, "root", output=" ")
    assert "Not started" in admin.start_scoring(svc, "root", scorer="folder-without-kind")
    missing = admin.start_scoring(svc, "root", scorer=f"bt:{tmp_path / 'no-such-rm'}")
    assert missing.startswith("Not started") and "does not exist" in missing
    message = admin.start_reward_training(svc, "root", output="rm",
                                             epochs=2, agreed_only=True, lora_r=8)
    assert message.startswith("Started job 1: rankloop train reward --output")
    saved = _model_folder(tmp_path / "rm")
    assert admin.start_scoring(svc, "root", scorer=f"bt:{saved}").startswith("Started job 2")
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
        scorer = f"bt:{_model_folder(Path(svc.db_path).parent / 'x')}"
        message = admin.start_scoring(svc, "root", scorer=scorer)
        assert message.startswith("Not started") and "2 jobs are running" in message
        assert db["jobs"].count == 2
    finally:
        for p in sleepers:
            p.kill()
            p.wait()
    # Once they have ended, a job starts again.
    assert admin.start_scoring(svc, "root", scorer=scorer).startswith("Started job 3")


# --- the Rank screen's handlers -------------------------------------------------------------------

def _task(svc, user="ann"):
    return handlers.load_screen(svc, user).status["assignment_id"]


def test_submit_refusals_name_the_unranked_candidates_and_keep_the_entry(svc):
    from data import drafts

    task = _task(svc)
    refused = handlers.submit(svc, "ann", {"assignment_id": task, "ranks": [2, None, None],
                                           "rationale": "so far"})
    assert refused.status["outcome"] == "refused"
    assert refused.status["message"] == ("Not saved: give every candidate a rank — B and C "
                                         "have no rank yet.")
    assert refused.status["unranked"] == ["B", "C"]
    assert refused.status["assignment_id"] == task
    assert 'class="rl-candidate rl-missing" id="rl-cand-1"' in refused.html
    assert "rl-msg-error" in refused.html and ">so far</textarea>" in refused.html
    nothing = handlers.submit(svc, "ann", {"assignment_id": task, "ranks": []})
    assert nothing.status["message"].startswith("Not saved: rank the candidates, or mark")
    assert svc.db()["rankings"].count == 0
    saved = handlers.submit(svc, "ann", {"assignment_id": task, "ranks": [2, 1, 3]})
    assert saved.status["outcome"] == "saved" and "rl-msg-ok" in saved.html
    assert saved.status["message"] == "Saved — ranking of 3 candidates."
    assert drafts.load_draft(svc.db(), task, svc.user("ann").id) is None


def test_payloads_of_the_wrong_shape_are_bad_requests(svc):
    task = _task(svc)
    for payload, message in (([task], "JSON object"), ({"assignment_id": "1"}, "whole number"),
                             ({"assignment_id": task, "ranks": "1,2,3"}, "list"),
                             ({"assignment_id": task, "ranks": [1.5]}, "number"),
                             ({"assignment_id": task, "all_bad": "yes"}, "true or false"),
                             ({"assignment_id": task, "rationale": 3}, "text"),
                             ({"assignment_id": task, "extra": 1}, "unknown field")):
        with pytest.raises(handlers.BadRequest, match=message):
            handlers.submit(svc, "ann", payload)
    with pytest.raises(handlers.BadRequest, match="JSON object"):
        handlers.skip(svc, "ann", task)
    with pytest.raises(handlers.BadRequest, match="layout must be one of"):
        handlers.set_layout(svc, "ann", {"layout": "grid"})
    assert svc.db()["rankings"].count == 0


def test_a_draft_is_restored_on_the_next_load_and_ignored_after_submit(svc):
    task = _task(svc)
    entry = {"assignment_id": task, "ranks": [None, 1, None], "all_bad": False,
             "rationale": "B is right", "demonstration": "mine"}
    assert handlers.save_draft(svc, "ann", entry) == "saved"
    fresh = handlers.current_task(svc, "bob")
    assert not fresh.controls.from_draft
    assert 'class="rl-draft-state"></span>' in handlers.screen(fresh).html
    view = handlers.current_task(svc, "ann")
    assert view.controls.ranks == (None, 1, None) and view.controls.from_draft
    assert (view.controls.rationale, view.controls.demonstration) == ("B is right", "mine")
    assert 'class="rl-draft-state">· draft restored</span>' in handlers.screen(view).html
    with pytest.raises(handlers.BadRequest, match="not assigned to you"):
        handlers.save_draft(svc, "bob", entry)
    handlers.submit(svc, "ann", {**entry, "ranks": [2, 1, 3]})
    assert handlers.save_draft(svc, "ann", entry) == "already submitted"
    assert svc.db()["drafts"].count == 0


def test_a_recent_submission_is_reopened_and_revised(svc):
    first = _task(svc)
    saved = handlers.submit(svc, "ann", {"assignment_id": first, "ranks": [1, 2, 3]})
    ranking_id = saved.status["ranking_id"]
    listing = handlers.reopen(svc, "ann", {"ranking_id": None})
    assert listing.status["recent"] == [ranking_id] and "Question" in listing.html
    opened = handlers.reopen(svc, "ann", {"ranking_id": ranking_id})
    assert opened.status["revises"] == ranking_id and opened.status["assignment_id"] == first
    assert 'id="rl-skip"' not in opened.html and "Save the change" in opened.html
    revised = handlers.submit(svc, "ann", {"assignment_id": first, "ranks": [3, 2, 1],
                                           "revises": ranking_id})
    assert revised.status["outcome"] == "revised"
    assert revised.status["assignment_id"] == saved.status["assignment_id"]  # back to the task
    latest = list(svc.db().query("SELECT ranks FROM latest_rankings"))
    assert latest == [{"ranks": "[3, 2, 1]"}]
    stale = handlers.submit(svc, "ann", {"assignment_id": first, "ranks": [1, 2, 3],
                                         "revises": ranking_id})
    assert stale.status["outcome"] == "refused"
    with pytest.raises(handlers.BadRequest):
        handlers.reopen(svc, "ann", {"ranking_id": "x"})
    assert handlers.reopen(svc, "bob", {"ranking_id": ranking_id}).status["outcome"] == "refused"


def test_suggestions_prefill_the_ranks_and_the_flag_says_if_they_changed(svc):
    from data import settings, store

    db = svc.db()
    settings.set_setting(db, "suggestions", True)
    # Every candidate scored: the score is the candidate id, so the newest ranks first.
    store.put_model_scores(db, [store.ModelScore(c, "bt:/rm", float(c))
                                for (c,) in db.execute("SELECT id FROM candidates")])
    view = handlers.current_task(svc, "ann")
    ids = _shown(svc, view.assignment_id)
    expected = tuple(sorted(ids, reverse=True).index(c) + 1 for c in ids)
    # Annotators see the model's short name, never a server path.
    assert view.suggestion == "rm (bt)" and view.controls.ranks == expected
    assert "suggestion from the model scores (rm (bt))" in handlers.screen(view).html
    handlers.submit(svc, "ann", {"assignment_id": view.assignment_id, "ranks": list(expected)})
    second = handlers.current_task(svc, "ann")
    changed = [4 - r for r in second.controls.ranks]
    handlers.submit(svc, "ann", {"assignment_id": second.assignment_id, "ranks": changed})
    flags = [r[0] for r in db.execute("SELECT suggestion_accepted FROM rankings ORDER BY id")]
    assert flags == [1, 0]


def _shown(svc, assignment_id):
    import json

    return json.loads(svc.db().execute("SELECT candidate_ids FROM assignments WHERE id = ?",
                                       [assignment_id]).fetchone()[0])


def test_layout_is_remembered_per_annotator_and_differences_stay_escaped(svc):
    handlers.set_layout(svc, "ann", {"layout": "stacked"})
    assert "rl-layout-stacked" in handlers.load_screen(svc, "ann").html
    assert "rl-layout-side-by-side" in handlers.load_screen(svc, "bob").html
    task = _task(svc)
    diff = handlers.differences(svc, "ann", {"assignment_id": task, "a": 0, "b": 1})
    assert "Differences between Candidate A and Candidate B" in diff
    with pytest.raises(handlers.BadRequest, match="not assigned"):
        handlers.differences(svc, "bob", {"assignment_id": task, "a": 0, "b": 1})
    with pytest.raises(handlers.BadRequest, match="positions"):
        handlers.differences(svc, "ann", {"assignment_id": task, "a": 0, "b": 7})


def _one_item_task(db_path, candidates):
    """The task view of a store holding one item with ``candidates`` (``CandidateIn`` args)."""
    from data import labeling, store

    make_labeling_db(db_path, n_prompts=0)
    db = store.open_store(db_path)
    run = store.get_or_create_run(db, store.RunSettings("m", "transformers", 3, 0.8, 0.9, 8, 0))
    [prompt] = store.upsert_prompts(db, [([{"role": "user", "content": "q"}], "t", "1")])
    store.add_candidates(db, prompt, run, [store.CandidateIn(*c) for c in candidates])
    labeling.sync_items(db)
    return handlers.current_task(LabelerService(db_path, autogenerate=False), "ann")


def test_badges_mark_cut_off_and_empty_candidates(tmp_path):
    view = _one_item_task(tmp_path / "b.db", [("long text", 8, "length"), ("  ", 0, "stop"),
                                              ("fine", 1, "stop")])
    by_text = {c.html: c.badges for c in view.candidates}
    assert sorted(by_text.values()) == [(), ("cut",), ("empty",)]
    shown = handlers.screen(view).html
    assert shown.count("Cut off at the token limit") == 1 and shown.count("Empty answer") == 1


def test_a_badge_marks_candidates_with_the_same_text(tmp_path):
    """Two candidates with exactly the same text each say so; the third does not."""
    view = _one_item_task(tmp_path / "d.db", [("same words", 2, "stop"),
                                              ("other words", 2, "stop"),
                                              ("same words", 2, "stop")])
    assert sorted(c.badges for c in view.candidates) == [(), ("duplicate",), ("duplicate",)]
    assert handlers.screen(view).html.count("Same text as another candidate") == 2


def test_an_admin_screen_takes_nothing_until_asked(svc):
    idle = handlers.idle_screen()
    assert idle.status["assignment_id"] is None and 'data-mode="idle"' in idle.html
    assert svc.db()["assignments"].count == 0
