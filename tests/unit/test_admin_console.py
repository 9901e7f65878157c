"""The admin console's actions against a real SQLite file: users, export, settings, the queue
order, the item browser, stopping jobs, model checks, and the job log's cleaning."""

import json
import time
from pathlib import Path

import pytest

from data import labeling, settings, store
from data.labeling import QueuePolicy
from data.queue_order import get_queue_order
from labeler import admin, handlers
from labeler.handlers import BadRequest, LabelerService, PermissionDenied
from labeler.jobs import STOPPED, clean_log, workspace_dir
from tests.integration.conftest import free_port
from tests.labeling_fixtures import PASSWORD, make_labeling_db


@pytest.fixture
def svc(tmp_path):
    return LabelerService(make_labeling_db(tmp_path / "r.db", n_prompts=4, k=3),
                          policy=QueuePolicy(overlap=2), autogenerate=False)


def _rank(svc, user, ranks, **kw):
    """Ranks the user's next item; ``ranks`` are per candidate in idx order (A, B, C), whatever
    order the page shuffled them into."""
    view = handlers.current_task(svc, user)
    assignment = labeling.get_assignment(svc.db(), view.assignment_id)
    by_idx = [c["id"] for c in labeling.item_candidates(svc.db(), assignment.item_id)]
    shown = [ranks[by_idx.index(cid)] for cid in assignment.candidate_ids]
    message, _ = handlers.submit_ranking(svc, user, view.assignment_id, shown, **kw)
    assert message.startswith("Saved"), message
    return view.assignment_id


# --- the log tail ----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, shown", [
    ("plain\nlines", "plain\nlines"),
    # A progress bar rewritten with \r keeps its last state; \r\n is one line end.
    (" 10%|#   |\r 50%|##  |\r100%|####|\r\ndone", "100%|####|\ndone"),
    ("step 3\r", "step 3"),  # a trailing \r does not blank the line
    # Colours, cursor moves and line erases (CSI) are removed.
    ("\x1b[1m\x1b[31mred\x1b[0m \x1b[2K\x1b[1Gback\x1b[?25l", "red back"),
    # OSC: a window title ended by BEL, a hyperlink ended by ESC \.
    ("\x1b]0;title\x07a \x1b]8;;https://x.org\x1b\\link\x1b]8;;\x1b\\ b", "a link b"),
    ("tab\tkept\x00\x08", "tab\tkept"),
    ("\x1b]0;unterminated\nnext", "\nnext"),
])
def test_clean_log_shows_what_a_terminal_would(raw, shown):
    assert clean_log(raw) == shown


def test_the_log_tail_follows_the_end_of_a_long_log(svc, tmp_path):
    log = tmp_path / "job.log"
    log.write_bytes(b"".join(b"line %d\r\x1b[32mline %d done\x1b[0m\n" % (i, i)
                             for i in range(5000)))
    db = svc.db()
    db.execute("INSERT INTO jobs (kind, argv, status, started_by, started_at, log_path) "
               "VALUES ('generate', '[]', 'succeeded', 'root', 0, ?)", [str(log)])
    tail = admin.job_log(svc, "root", 0)
    assert tail.splitlines()[-1] == "line 4999 done"
    assert "\x1b" not in tail and "\r" not in tail
    # The first shown line is a whole line, not the cut-off end of one.
    assert all(line.startswith("line ") and line.endswith(" done")
               for line in tail.splitlines()[1:])


# --- jobs ---------------------------------------------------------------------------------------------

def _long_job(svc):
    """A real `rankloop` job that runs until stopped: the app itself, on a free port."""
    return svc.jobs.start("serve", ["app", "--port", str(free_port()), "--no-autogenerate"],
                          started_by="root")


def test_a_running_job_is_stopped_with_its_process_group(svc):
    import os

    job = _long_job(svc)
    assert svc.jobs.get(job.id).status == "running"
    message = admin.stop_job(svc, "root", job.id)
    assert message == f"Stopped job {job.id} (serve); its status is stopped."
    stopped = svc.jobs.get(job.id)
    assert stopped.status == STOPPED
    with pytest.raises(ProcessLookupError):
        os.killpg(job.pid, 0)
    assert admin.jobs_table(svc, "root")[0][2] == "stopped by an admin"
    # The watcher's later word does not turn it into "failed".
    time.sleep(0.5)
    assert svc.jobs.get(job.id).status == STOPPED
    assert admin.stop_job(svc, "root", job.id).startswith("Not stopped: job")
    assert admin.stop_job(svc, "root", 0) == "Nothing to stop: no job is running."
    assert admin.stop_job(svc, "root", 99) == "Not stopped: there is no job 99."


def test_generation_passes_the_sampling_options(svc):
    message = admin.start_generation(svc, "root", limit=2, temperature=0.3, top_p=0.5, seed=7,
                                     max_new_tokens=64)
    assert message.startswith("Started job 1")
    argv = svc.jobs.list()[0].argv
    svc.jobs.stop_all()
    flags = dict(zip(argv[::1], argv[1::1]))
    assert (flags["--temperature"], flags["--top-p"], flags["--seed"],
            flags["--max-new-tokens"], flags["--limit"]) == ("0.3", "0.5", "7", "64", "2")


@pytest.mark.parametrize("kwargs, reason", [
    ({"temperature": -1}, "temperature"), ({"top_p": 0}, "top p"), ({"top_p": 1.5}, "top p"),
    ({"max_new_tokens": 0}, "max new tokens"), ({"backend": "tpu"}, "backend"),
])
def test_generation_options_out_of_range_are_refused(svc, kwargs, reason):
    message = admin.start_generation(svc, "root", **kwargs)
    assert message.startswith("Not started") and reason in message
    assert svc.db()["jobs"].count == 0


@pytest.mark.parametrize("model", ["/no/such/model", "./models/missing", "models/a/b",
                                   "someone/not-cached-anywhere", "bad name!"])
def test_a_job_for_a_missing_model_is_refused_before_it_starts(svc, model):
    message = admin.start_generation(svc, "root", model=model)
    assert message.startswith("Not started"), message
    assert "does not exist" in message or "neither a folder" in message
    reward = admin.start_reward_training(svc, "root", output="rm", model=model)
    assert reward.startswith("Not started")
    assert svc.db()["jobs"].count == 0


def test_a_folder_without_a_model_is_refused(svc, tmp_path):
    (tmp_path / "empty").mkdir()
    message = admin.start_generation(svc, "root", model=str(tmp_path / "empty"))
    assert message.startswith("Not started") and "no config.json" in message


def test_existing_model_folders_and_cached_hub_models_start(svc, tmp_path, monkeypatch):
    folder = workspace_dir(svc.db_path) / "models" / "policy-1"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    svc.jobs.max_running = 3
    # A folder the app's own jobs wrote, named relative to the workspace.
    assert admin.start_generation(svc, "root", model="models/policy-1").startswith("Started")
    # A Hub id in the local Hugging Face cache.
    hub = tmp_path / "hf-cache"
    snapshot = hub / "models--someone--tiny" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (hub / "models--someone--tiny" / "refs").mkdir()
    (hub / "models--someone--tiny" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hub))
    assert admin.start_generation(svc, "root", model="someone/tiny").startswith("Started")
    models = [j.argv[j.argv.index("--model") + 1] for j in svc.jobs.list()]
    svc.jobs.stop_all()
    assert models == ["someone/tiny", str(folder.resolve())]


# --- users ------------------------------------------------------------------------------------------

def test_admins_create_users_who_can_log_in(svc):
    assert admin.create_user(svc, "root", name="carol", password="long-enough-1",
                             role="annotator") == "Created annotator 'carol'; they can log in now."
    assert svc.check_login("carol", "long-enough-1")
    assert admin.create_user(svc, "root", name="dave", password="another-pass-2",
                             role="admin").startswith("Created admin 'dave'")
    assert svc.user("dave").is_admin
    assert ["carol", "annotator", "active"] in admin.users_table(svc, "root")


@pytest.mark.parametrize("name, password, role, reason", [
    ("ANN", "long-enough-1", "annotator", "already exists"),
    ("ｃａｒｏｌ", "long-enough-1", "annotator", None),  # full width: a new, valid name
    ("carol", "", "annotator", "give a password"),
    ("carol", "        ", "annotator", "give a password"),
    ("carol", "short", "annotator", "at least 8"),
    ("carol", "aaaaaaaaaa", "annotator", "guessable"),
    ("carolyn12", "CAROLYN12", "annotator", "user name"),
    ("", "long-enough-1", "annotator", "user name is"),
    ("car ol", "long-enough-1", "annotator", "without spaces"),
    ("carol", "long-enough-1", "superuser", "role is one of"),
])
def test_user_creation_refusals_are_clear(svc, name, password, role, reason):
    before = svc.db()["users"].count
    message = admin.create_user(svc, "root", name=name, password=password, role=role)
    if reason is None:
        assert message.startswith("Created")
        return
    assert message.startswith("Not created") and reason in message, message
    assert svc.db()["users"].count == before


def test_disable_enable_reset_and_role_changes(svc):
    assert admin.set_user_disabled(svc, "root", name="ann", disabled=True) == \
        "Disabled 'ann'; their sessions have ended."
    assert not svc.check_login("ann", PASSWORD)
    assert admin.set_user_disabled(svc, "root", name="ann", disabled=False).startswith("Enabled")
    assert svc.check_login("ann", PASSWORD)
    assert admin.reset_password(svc, "root", name="ann", password="short").startswith(
        "Password not changed: a password needs")
    assert admin.reset_password(svc, "root", name="ann", password="fresh-pass-9") == \
        "New password for 'ann'; their sessions have ended."
    assert svc.check_login("ann", "fresh-pass-9") and not svc.check_login("ann", PASSWORD)
    assert admin.set_user_role(svc, "root", name="ann", role="admin") == "'ann' is now an admin."
    assert svc.user("ann").is_admin
    for call in (lambda: admin.set_user_disabled(svc, "root", name="zed", disabled=True),
                 lambda: admin.reset_password(svc, "root", name="zed", password="fresh-pass-9"),
                 lambda: admin.set_user_role(svc, "root", name="zed", role="admin")):
        assert "no user 'zed'" in call()
    assert "role is one of" in admin.set_user_role(svc, "root", name="ann", role="owner")


def test_the_last_admin_cannot_disable_or_demote_themselves(svc):
    assert admin.set_user_disabled(svc, "root", name="root", disabled=True) == (
        "Not disabled: you are the last active admin; make another user an admin first.")
    assert admin.set_user_role(svc, "root", name="root", role="annotator").startswith(
        "Role not changed: you are the last active admin")
    assert svc.user("root").is_admin and not svc.user("root").disabled
    # With a second admin, either may step down; then the other is the last.
    admin.set_user_role(svc, "root", name="bob", role="admin")
    assert admin.set_user_role(svc, "root", name="root", role="annotator") == \
        "'root' is now an annotator."
    assert admin.set_user_disabled(svc, "bob", name="BOB", disabled=True).startswith(
        "Not disabled: you are the last active admin")
    assert svc.user("bob").is_admin and not svc.user("bob").disabled


def test_a_disabled_admin_does_not_count_as_a_remaining_admin(svc):
    admin.set_user_role(svc, "root", name="bob", role="admin")
    admin.set_user_disabled(svc, "root", name="bob", disabled=True)
    assert admin.set_user_role(svc, "root", name="root", role="annotator").startswith(
        "Role not changed")


# --- export -------------------------------------------------------------------------------------

def test_export_writes_the_same_files_as_the_cli_inside_the_workspace(svc):
    _rank(svc, "ann", ["1", "2", "3"])
    message = admin.export_dataset(svc, "root", to="exports/first", keep_annotator_names=True)
    target = workspace_dir(svc.db_path) / "exports" / "first"
    assert message.startswith(f"Exported to {target}: ") and "from 1 annotator" in message
    assert (target / "README.md").is_file()
    rows = [json.loads(line) for split in ("train", "test")
            for line in (target / "jsonl" / "rankings" / f"{split}.jsonl").read_text()
            .splitlines()]
    assert [r["annotator"] for r in rows] == ["ann"]
    again = admin.export_dataset(svc, "root", to="exports/first")
    assert again.startswith("Not exported") and "not empty" in again
    assert admin.export_dataset(svc, "root", to="exports/first",
                                overwrite=True).startswith("Exported")


@pytest.mark.parametrize("to, reason", [
    ("../out", "'..'"), ("/etc/rankloop-export", "workspace"), ("", "give a folder"),
    ("hub:not a repo", "invalid Hub repository id"),
])
def test_export_refusals(svc, to, reason):
    message = admin.export_dataset(svc, "root", to=to)
    assert message.startswith("Not exported") and reason in message, message


def test_export_minimum_agreement_from_the_text_field(svc):
    _rank(svc, "ann", ["1", "2", "3"])
    assert admin.export_dataset(svc, "root", to="exports/all",
                                min_agreement="").startswith("Exported")
    # Pairs judged by one annotator only have no agreement to meet.
    strict = admin.export_dataset(svc, "root", to="exports/strict", min_agreement="0.5")
    assert strict.startswith("Not exported") and "no preference pairs" in strict
    assert admin.export_dataset(svc, "root", to="exports/bad", min_agreement="most").startswith(
        "Not exported: the minimum agreement is a number")
    assert "[0, 1]" in admin.export_dataset(svc, "root", to="exports/bad", min_agreement="2")


def test_export_to_the_hub_without_a_token_is_refused(svc, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(hf_constants, "HF_STORED_TOKENS_PATH",
                        str(tmp_path / "hf-home" / "stored_tokens"))
    message = admin.export_dataset(svc, "root", to="hub:someone/prefs")
    assert message.startswith("Not exported: no Hugging Face token")
    assert svc.db()["jobs"].count == 0


def test_export_to_the_hub_runs_the_cli_as_a_job(svc, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the job itself must not reach the network
    message = admin.export_dataset(svc, "root", to="hub:someone/prefs", private=True, seed=3)
    assert message.startswith("Started job 1: rankloop export --to hub:someone/prefs")
    [job] = svc.jobs.list()
    svc.jobs.stop_all()
    assert job.kind == "export" and "--private" in job.argv
    assert job.argv[job.argv.index("--seed") + 1] == "3"


# --- settings and the queue order -----------------------------------------------------------------

def test_guidelines_are_saved_and_read_back(svc):
    text = "# Rank by helpfulness\n\n<script>x</script> is text"
    assert admin.save_guidelines(svc, "root", text=text).startswith("Guidelines saved (")
    assert settings.get_setting(svc.db(), "guidelines") == text
    assert admin.project_settings(svc, "root").guidelines == text
    assert admin.save_guidelines(svc, "root", text="") == "Guidelines cleared."
    too_long = admin.save_guidelines(svc, "root", text="x" * (settings.MAX_GUIDELINES_CHARS + 1))
    assert too_long.startswith("Not saved") and "too long" in too_long
    assert settings.setting_changes(svc.db())["guidelines"][1] == "root"


def test_suggestions_toggle_and_scorer(svc):
    assert admin.save_suggestions(svc, "root", enabled=True, scorer="bt:models/rm") == \
        "Suggestions are on, from the scorer bt:models/rm."
    stored = settings.project_settings(svc.db())
    assert stored.suggestions and stored.suggestion_scorer == "bt:models/rm"
    assert admin.save_suggestions(svc, "root", enabled=True, scorer="") == \
        "Suggestions are on, from each item's most recent scorer."
    assert settings.get_setting(svc.db(), "suggestion_scorer") is None
    assert admin.save_suggestions(svc, "root", enabled=False) == "Suggestions are off."
    assert admin.save_suggestions(svc, "root", enabled=True,
                                  scorer="no-kind").startswith("Not saved")
    with pytest.raises(BadRequest):
        admin.save_suggestions(svc, "root", enabled="yes")


def test_the_queue_order_is_shown_and_changed(svc):
    assert admin.queue_order(svc, "root") == "fifo"
    assert admin.set_queue_order(svc, "root", order="random", seed=7) == \
        "The queue order is now random (seed 7)."
    assert get_queue_order(svc.db()).order == "random" and get_queue_order(svc.db()).seed == 7
    refused = admin.set_queue_order(svc, "root", order="uncertain", scorers="")
    assert refused.startswith("Not changed") and "reward model" in refused
    assert admin.set_queue_order(svc, "root", order="uncertain",
                                 scorers="folder").startswith("Not changed: a scorer is")
    assert admin.set_queue_order(svc, "root", order="sideways").startswith("Not changed")
    assert get_queue_order(svc.db()).order == "random"
    ids = [c.candidate_id for c in store.candidates_to_score(svc.db(), "bt:rm")]
    store.put_model_scores(svc.db(), [store.ModelScore(c, "bt:rm", float(c % 3)) for c in ids])
    message = admin.set_queue_order(svc, "root", order="uncertain", scorers="bt:rm")
    assert message == "The queue order is now uncertain (scorers: bt:rm); 4 items have an " \
        "uncertainty."
    assert get_queue_order(svc.db()).scorers == ("bt:rm",)


# --- the item browser -----------------------------------------------------------------------------

def test_the_browser_filters_and_pages(tmp_path):
    svc = LabelerService(make_labeling_db(tmp_path / "b.db", n_prompts=12, k=3),
                         policy=QueuePolicy(overlap=2), autogenerate=False)
    _rank(svc, "ann", ["1", "2", "3"], rationale="A is wrong")
    _rank(svc, "bob", ["3", "2", "1"])
    first = admin.browse(svc, "root", page_size=5)
    assert (first.total, first.pages, first.page) == (12, 3, 0)
    assert [r[0] for r in first.rows] == [1, 2, 3, 4, 5]
    assert first.caption() == "Page 1 of 3 · 12 items match"
    last = admin.browse(svc, "root", page=9, page_size=5)  # past the end: the last page
    assert last.page == 2 and [r[0] for r in last.rows] == [11, 12]
    disputed = admin.browse(svc, "root", status="disagreement")
    assert [r[:3] for r in disputed.rows] == [[1, "disagreement", 2]]
    assert disputed.rows[0][6] == "ann, bob"
    # Saving hands each of them the next item, which they now hold.
    held = admin.browse(svc, "root", status="in progress")
    # The holders are named, so an admin sees whose hold to release.
    assert [r[:2] + [r[4]] for r in held.rows] == [[2, "in progress", "ann, bob"]]
    assert admin.browse(svc, "root", status="unassigned").total == 10
    assert admin.browse(svc, "root", status="done").total == 1
    assert admin.browse(svc, "root", annotator="bob").total == 1
    assert admin.browse(svc, "root", annotator="nobody").total == 0
    assert admin.browse(svc, "root", run_id="1").total == 12
    assert admin.browse(svc, "root", run_id=2).total == 0
    from data import browser

    browser.tag_items(svc.db(), [3, 4], "<b>check</b>")
    tagged = admin.browse(svc, "root", tag="<b>check</b>")
    assert [r[0] for r in tagged.rows] == [3, 4] and tagged.rows[0][7] == "<b>check</b>"
    choices = admin.browse_choices(svc, "root")
    assert choices["tags"] == ["<b>check</b>"] and choices["runs"][0][1] == "1"
    with pytest.raises(BadRequest):
        admin.browse(svc, "root", status="lost")
    with pytest.raises(BadRequest):
        admin.browse(svc, "root", page_size=100_000)


def test_one_item_in_detail_with_disagreement_and_model_scores(svc):
    _rank(svc, "ann", ["1", "2", "3"], rationale="<b>clear</b> answer", demonstration="my own")
    _rank(svc, "bob", ["3", "2", "1"])
    ids = [c["id"] for c in labeling.item_candidates(svc.db(), 1)]
    store.put_model_scores(svc.db(), [store.ModelScore(c, "bt:rm", s)
                                      for c, s in zip(ids, (0.5, 2.0, -1.0))])
    view = admin.item_view(svc, "root", 1)
    assert "disagreement 1.00" in view.summary and "disputed pairs: A–B, A–C, B–C" in view.summary
    assert view.candidate_headers == ["candidate", "disputed", "rank by ann", "rank by bob",
                                      "mean rank", "spread", "rm (bt) score (rank)", "finish",
                                      "duplicate", "text"]
    a, b, c = view.candidate_rows
    assert a[-1].startswith("<script>")  # shown as text by the table
    assert [a[6], b[6], c[6]] == ["0.500 (2)", "2.000 (1)", "-1.000 (3)"]
    assert all(style == admin.DISPUTED_STYLE for row in view.candidate_styling for style in row)
    ann, bob = view.ranking_rows
    assert ann[1:7] == ["ann", "ranked", ann[3], ann[4], "<b>clear</b> answer", "my own"]
    assert bob[1] == "bob" and bob[8] == "latest"
    # Each order is in the letters its annotator saw; the mapping says what they are here.
    for row, ranks in ((ann, "123"), (bob, "321")):
        seen = dict(pair.split("=") for pair in row[4].split(", "))
        here_best_first = [here for _, here in sorted(
            (int(ranks["ABC".index(here)]), here) for here in seen.values())]
        theirs = {here: mine for mine, here in seen.items()}
        assert row[3] == " > ".join(theirs[h] for h in here_best_first)
    assert admin.item_view(svc, "root", 999) is None


def test_an_item_everyone_agrees_on_is_not_highlighted(svc):
    _rank(svc, "ann", ["1", "2", "3"])
    item = admin.item_view(svc, "root", 1)
    assert "disagreement n/a" in item.summary
    assert all(style == "" for row in item.candidate_styling for style in row)


def test_live_counts_follow_new_rankings(svc):
    before = admin.live_counts(svc, "root")
    assert "**0** rankings" in before
    _rank(svc, "ann", ["1", "2", "3"])
    assert "**1** rankings" in admin.live_counts(svc, "root")


def test_the_plot_keeps_at_most_max_points_with_first_and_last():
    times = [float(t) for t in range(10_000)]
    points = admin.thin_cumulative(times, max_points=100)
    assert len(points) == 100 and points[0] == (0.0, 1) and points[-1] == (9999.0, 10_000)
    assert admin.thin_cumulative([1.0, 2.0]) == [(1.0, 1), (2.0, 2)]


def test_every_console_action_refuses_annotators(svc):
    calls = [
        lambda u: admin.live_counts(svc, u), lambda u: admin.stop_job(svc, u, 1),
        lambda u: admin.users_table(svc, u),
        lambda u: admin.create_user(svc, u, name="x", password="long-enough-1"),
        lambda u: admin.set_user_disabled(svc, u, name="bob", disabled=True),
        lambda u: admin.reset_password(svc, u, name="bob", password="long-enough-1"),
        lambda u: admin.set_user_role(svc, u, name="ann", role="admin"),
        lambda u: admin.export_dataset(svc, u, to="exports/x"),
        lambda u: admin.save_guidelines(svc, u, text="x"),
        lambda u: admin.save_suggestions(svc, u, enabled=True),
        lambda u: admin.queue_order(svc, u),
        lambda u: admin.set_queue_order(svc, u, order="random"),
        lambda u: admin.project_settings(svc, u),
        lambda u: admin.browse(svc, u), lambda u: admin.browse_choices(svc, u),
        lambda u: admin.item_view(svc, u, 1),
    ]
    for call in calls:
        for user in ("ann", "nobody", ""):
            with pytest.raises(PermissionDenied):
                call(user)
    assert not svc.user("ann").is_admin and svc.db()["users"].count == 3
    assert not Path(workspace_dir(svc.db_path)).exists()


def test_the_polled_status_is_recomputed_only_when_its_inputs_change(svc):
    first = admin.dataset_status(svc, "root")
    assert admin.dataset_status(svc, "root") is first  # nothing changed: the same result
    _rank(svc, "ann", ["1", "2", "3"])
    second = admin.dataset_status(svc, "root")
    assert second.counts["rankings"] == 1 and first.counts["rankings"] == 0
    admin.set_user_role(svc, "root", name="bob", role="admin")
    assert ["bob", "admin"] == admin.dataset_status(svc, "root").annotators[1][:2]


# --- jobs you can watch and stop -------------------------------------------------------------

def _empty_store_service(tmp_path):
    """An app over a store with users but no candidates, whose first run is a real job that
    runs until stopped."""
    from labeler.auth import hash_password

    db = store.open_store(tmp_path / "first.db")
    labeling.add_user(db, "root", "admin", hash_password(PASSWORD))
    svc = LabelerService(str(tmp_path / "first.db"), autogenerate=True)
    svc.first_run_args = ["app", "--port", str(free_port()), "--no-autogenerate"]
    return svc


def test_an_admin_stop_of_the_first_run_sticks_and_only_an_app_stop_resumes_it(tmp_path):
    from labeler.jobs import INTERRUPTED

    svc = _empty_store_service(tmp_path)
    try:
        assert svc.ensure_candidates()  # the waiting screen's poll starts the first run
        [first] = svc.jobs.running()
        assert admin.stop_job(svc, "root", first.id).startswith(f"Stopped job {first.id}")
        # The waiting screen keeps polling: the stopped job is not started again.
        for _ in range(3):
            assert not svc.ensure_candidates()
        assert [j.status for j in svc.jobs.list()] == [STOPPED]
        assert admin.jobs_table(svc, "root")[0][2] == "stopped by an admin"
        # An app that stops while its first run runs resumes that run on the next poll.
        svc.db().execute("UPDATE jobs SET status = 'interrupted' WHERE id = ?", [first.id])
        assert svc.ensure_candidates()
        assert [j.status for j in svc.jobs.list()][0] == "running"
        svc.jobs.stop_all(grace_s=5)
        assert svc.jobs.list()[0].status == INTERRUPTED
        assert admin.jobs_table(svc, "root")[0][2] == "interrupted (app stopped)"
    finally:
        svc.jobs.stop_all(grace_s=5)


def test_training_progress_is_read_from_its_metrics_file(tmp_path):
    from data.progress import training_progress

    metrics = tmp_path / "metrics.jsonl"
    assert training_progress(metrics, epochs=1, started_at=0).line() == \
        "Loading the model and the pairs…"
    # 2 epochs of 15 steps; step 10 logged at t=100 s after the start, eval lines between.
    metrics.write_text("".join(json.dumps(row) + "\n" for row in (
        {"step": 5, "train/loss": 0.69, "train/epoch": 5 / 15},
        {"step": 5, "eval/accuracy": 0.5},
        {"step": 10, "train/loss": 0.4321, "train/epoch": 10 / 15}))
        + '{"step": 1')  # a line being written
    import os

    os.utime(metrics, (1100, 1100))
    got = training_progress(metrics, epochs=2, started_at=1000, now=1100)
    # 20 steps left at 10 s a step (loading included).
    assert (got.step, got.total, got.loss, got.seconds_left) == (10, 30, 0.4321, 200.0)
    assert got.line() == "step 10 of 30, loss 0.4321, about 3 min left"


def test_a_running_training_shows_its_step_in_the_jobs_table_and_the_overview(svc, tmp_path):
    import os

    out = workspace_dir(svc.db_path) / "models" / "reward-1"
    out.mkdir(parents=True)
    (out / "metrics.jsonl").write_text(json.dumps(
        {"step": 3, "train/loss": 0.5, "train/epoch": 0.2}) + "\n")
    # A running job: its pid is a live process (this one).
    svc.db().execute(
        "INSERT INTO jobs (kind, argv, status, started_by, started_at, pid) VALUES "
        "('train-reward', ?, 'running', 'root', ?, ?)",
        [json.dumps(["train", "reward", "--output", str(out), "--epochs", "1"]), time.time(),
         os.getpid()])
    row = admin.jobs_table(svc, "root")[0]
    assert row[admin.JOB_HEADERS.index("progress")].startswith("step 3 of 15, loss 0.5000")
    overview = admin.running_jobs_md(svc, "root")
    assert overview.startswith("Running now: job ") and "(train-reward, started by root" in \
        overview and "step 3 of 15" in overview
    svc.db().execute("UPDATE jobs SET status = 'succeeded'")
    assert admin.running_jobs_md(svc, "root") == "No job is running."


def test_a_new_reward_head_is_said_in_plain_words():
    from labeler.jobs import plain_log

    report = ("loading\nRewardModel LOAD REPORT from: /m/base\nKey          | Status  | \n"
              "-------------+---------+-\nscore.weight | MISSING | \n\nNotes:\n"
              "- MISSING:\tthose params were newly initialized because missing from the "
              "checkpoint. Consider training on your downstream task.\nstep 1")
    shown = plain_log(report)
    assert "MISSING" not in shown and "LOAD REPORT" not in shown
    assert shown.splitlines()[0] == "loading" and shown.splitlines()[-1] == "step 1"
    assert "a new reward head (score.weight) was initialised, as expected" in shown
    # Weights that did not fit are news: that report stays whole.
    odd = report.replace("score.weight | MISSING", "model.layers.0.w | UNEXPECTED")
    assert plain_log(odd) == odd


def test_the_generation_form_states_the_work_before_it_starts(svc):
    from data.prompts import BUNDLED_FILE

    bundled = sum(1 for line in BUNDLED_FILE.read_text().splitlines() if line.strip())
    text = admin.generation_estimate(svc, "root", prompts="bundled", k=4, limit=0,
                                     max_new_tokens=256)
    assert text.startswith(f"This job generates {bundled:,} prompts × 4 candidates × up to "
                           f"256 new tokens = up to {bundled * 4 * 256:,} tokens")
    limited = admin.generation_estimate(svc, "root", prompts="bundled", k=2, limit=3,
                                        max_new_tokens=10)
    assert "3 prompts × 2 candidates × up to 10 new tokens = up to 60 tokens" in limited
    # The fixture's run stored 32-token candidates: its speed times the job.
    db = svc.db()
    db.execute("UPDATE candidates SET token_count = 10, created_at = 100 + prompt_id * 10")
    timed = admin.generation_estimate(svc, "root", prompts="bundled", k=2, limit=3,
                                      max_new_tokens=10)
    assert "tokens/s) that is up to" in timed
    with pytest.raises(PermissionDenied):
        admin.generation_estimate(svc, "ann")


# --- review an admin can trust -----------------------------------------------------------------

def test_recent_submissions_show_ties(svc):
    view = handlers.current_task(svc, "ann")
    message, _ = handlers.submit_ranking(svc, "ann", view.assignment_id, ["1", "2", "2"])
    assert message.startswith("Saved")
    recent = handlers.reopen(svc, "ann", {})
    assert "ranked A &gt; B = C" in recent.html  # escaped in the page


def test_skips_are_not_rankings_over_time_and_periods_are_utc_hours(svc):
    _rank(svc, "ann", ["1", "2", "3"])
    handlers.skip(svc, "bob", {"assignment_id": handlers.current_task(svc, "bob").assignment_id})
    from data import browser as item_browser

    assert len(item_browser.label_times(svc.db())) == 1
    hour = 1_780_000_000 - 1_780_000_000 % 3600
    points = [(hour + 10, 1), (hour + 20, 2), (hour + 3700, 5)]
    from datetime import datetime, timezone

    label = datetime.fromtimestamp(hour, timezone.utc).strftime("%Y-%m-%d %H:00")
    assert admin.labels_per_period(points)[0] == (label, 2)
    assert admin.labels_per_period(points)[1][1] == 3
    assert admin.labels_per_period([]) == []


def test_overlap_is_a_project_setting_that_outlives_the_app(svc):
    assert admin.set_overlap(svc, "root", overlap=3).startswith("Each item is now ranked by 3")
    assert svc.policy.overlap == 3
    assert admin.set_overlap(svc, "root", overlap=0).startswith("Not changed: overlap is a")
    with pytest.raises(BadRequest):
        admin.set_overlap(svc, "root", overlap=[2])
    again = LabelerService(svc.db_path, policy=QueuePolicy(overlap=1), autogenerate=False)
    assert again.policy.overlap == 3


def test_a_disabled_users_holds_go_back_and_an_admin_may_release_an_item(svc):
    from data import browser as item_browser

    held = labeling.get_assignment(svc.db(), handlers.current_task(svc, "ann").assignment_id)
    assert item_browser.item_detail(svc.db(), held.item_id).holders == ["ann"]
    said = admin.set_user_disabled(svc, "root", name="ann", disabled=True)
    assert said.endswith("the 1 item they held is back in the queue.")
    assert item_browser.item_detail(svc.db(), held.item_id).holders == []
    bobs = labeling.get_assignment(svc.db(), handlers.current_task(svc, "bob").assignment_id)
    assert admin.release_item(svc, "root", bobs.item_id) == \
        f"Released item {bobs.item_id} (held by bob); it is back in the queue."
    assert admin.release_item(svc, "root", bobs.item_id).startswith("Not released: nobody")


def test_console_messages_use_console_words_and_say_whether_anything_was_done():
    said = admin.console_message("Not exported: /x is not empty; choose a new folder or pass "
                                 "--overwrite.")
    assert "--overwrite" not in said and 'tick "Replace a non-empty folder"' in said
    assert "hf auth login`" not in admin.console_message(
        "no Hugging Face token: set HF_TOKEN or run `hf auth login` first")
    assert admin.is_refusal("Not started: k is 1 to 9.")
    assert not admin.is_refusal("Started job 3: rankloop generate")
    from data.browser import scorer_name

    assert scorer_name("bt:/srv/app.db.workspace/models/reward-1/") == "reward-1 (bt)"
    assert admin.alpha_md(0.85).split("— ")[1].startswith("reliable agreement")
    assert "n/a" in admin.alpha_md(None)


def test_a_gpu_is_found_without_torch(tmp_path):
    proc = tmp_path / "gpus"
    assert not admin.detect_gpu(proc, None)
    proc.mkdir()
    assert not admin.detect_gpu(proc, None)
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)'\n")
    smi.chmod(0o755)
    assert admin.detect_gpu(proc, str(smi))
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed'\nexit 9\n")
    assert not admin.detect_gpu(proc, str(smi))
    (proc / "0000:01:00.0").mkdir()
    assert admin.detect_gpu(proc, None)
