"""Drafts and settings on a real SQLite file, reopened to stand in for a restart."""

import pytest

from data import drafts, labeling, revisions, settings, store
from data.drafts import Draft
from data.labeling import LabelingError, QueuePolicy
from data.rankings import validate_submission
from data.settings import SettingsError


def _setup(path, k=3):
    db = store.open_store(path)
    run_id = store.get_or_create_run(db, store.RunSettings("m", "vllm", k, 0.8, 0.9, 8, 0))
    [prompt_id] = store.upsert_prompts(db, [([{"role": "user", "content": "q"}], "t", None)])
    store.add_candidates(db, prompt_id, run_id,
                         [store.CandidateIn(f"answer {j}", 2, "stop") for j in range(k)])
    labeling.sync_items(db)
    ann = labeling.add_user(db, "ann", "annotator", "x").id
    bob = labeling.add_user(db, "bob", "annotator", "x").id
    return db, ann, bob


def test_a_draft_survives_a_restart_and_is_cleared_by_the_submission(tmp_path):
    db, ann, bob = _setup(tmp_path / "r.db")
    a = labeling.next_assignment(db, ann, QueuePolicy(), now=0)
    assert drafts.load_draft(db, a.id, ann) is None
    drafts.save_draft(db, a.id, ann, Draft((2, None, None), rationale="half"), now=1)
    saved = drafts.save_draft(db, a.id, ann, Draft((2, 1, None), all_bad=True,
                                                   rationale="B first", demonstration="Mine"),
                              now=2)
    db.close()

    db = store.open_store(tmp_path / "r.db")  # the app restarted
    assert drafts.load_draft(db, a.id, ann) == saved == Draft((2, 1, None), True, "B first",
                                                              "Mine", 2)
    assert drafts.load_draft(db, a.id, bob) is None  # someone else's
    with pytest.raises(LabelingError, match="not assigned to you"):
        drafts.save_draft(db, a.id, bob, Draft((1, 2, 3)))
    # The resumed task is the same assignment, so its draft applies to the same order.
    assert labeling.next_assignment(db, ann, QueuePolicy(), now=3).id == a.id
    stored = labeling.submit_assignment(db, a.id, ann, validate_submission(
        a.candidate_ids, [2, 1, 3]), now=4)
    assert drafts.load_draft(db, a.id, ann) is None

    # A draft of a revision is cleared by the revision.
    drafts.save_draft(db, a.id, ann, Draft((1, 1, 1)), now=5)
    revisions.revise_submission(db, stored.ranking_id, ann,
                                validate_submission(a.candidate_ids, [1, 1, 1]), now=6)
    assert db["drafts"].count == 0


@pytest.mark.parametrize("draft,message", [
    (Draft((1, 2)), "expected 3, got 2"),
    (Draft((1, 2, 4)), "between 1 and 3"),
    (Draft((1, True, 3)), "between 1 and 3"),
    (Draft((1, "2", 3)), "between 1 and 3"),
    (Draft((None, None, None), rationale="x" * 20_001), "rationale is too long"),
    (Draft((None, None, None), demonstration=None), "your answer must be text"),
])
def test_bad_drafts_are_refused_and_keep_the_previous_one(tmp_path, draft, message):
    db, ann, _ = _setup(tmp_path / "r.db")
    a = labeling.next_assignment(db, ann, QueuePolicy(), now=0)
    kept = drafts.save_draft(db, a.id, ann, Draft((3, None, None)), now=1)
    with pytest.raises(LabelingError, match=message):
        drafts.save_draft(db, a.id, ann, draft, now=2)
    assert drafts.load_draft(db, a.id, ann) == kept


def test_draft_ranks_from_ids_follow_the_shown_order():
    assert drafts.draft_ranks_for([30, 10, 20], {10: 1, 20: 2}) == (None, 1, 2)


def test_project_settings_default_check_and_persist(tmp_path):
    db, ann, _ = _setup(tmp_path / "r.db")
    assert settings.project_settings(db) == settings.ProjectSettings("", False, None)
    settings.set_setting(db, "guidelines", "# Rank by **helpfulness**", by="root", now=7)
    settings.set_setting(db, "suggestions", True, by="root", now=8)
    assert settings.set_setting(db, "suggestion_scorer", " bt:/models/rm ") == "bt:/models/rm"
    with pytest.raises(SettingsError, match="true or false"):
        settings.set_setting(db, "suggestions", "yes")
    with pytest.raises(SettingsError, match="unknown setting 'guideline'"):
        settings.set_setting(db, "guideline", "x")
    with pytest.raises(SettingsError, match="too long"):
        settings.set_setting(db, "guidelines", "x" * (settings.MAX_GUIDELINES_CHARS + 1))
    with pytest.raises(SettingsError, match="bt:FOLDER"):
        settings.set_setting(db, "suggestion_scorer", "just-a-folder")
    db.close()
    db = store.open_store(tmp_path / "r.db")
    assert settings.project_settings(db) == settings.ProjectSettings(
        "# Rank by **helpfulness**", True, "bt:/models/rm")
    assert settings.get_setting(db, "guidelines") == "# Rank by **helpfulness**"
    assert settings.setting_changes(db)["suggestions"] == (8, "root")
    settings.set_setting(db, "suggestion_scorer", "")
    assert settings.get_setting(db, "suggestion_scorer") is None


def test_user_preferences_are_per_user(tmp_path):
    db, ann, bob = _setup(tmp_path / "r.db")
    assert settings.user_preferences(db, ann).layout == "side-by-side"
    settings.set_user_setting(db, ann, "layout", "stacked")
    assert settings.user_preferences(db, ann).layout == "stacked"
    assert settings.get_user_setting(db, bob, "layout") == "side-by-side"
    with pytest.raises(SettingsError, match="must be one of side-by-side, two-up, stacked"):
        settings.set_user_setting(db, ann, "layout", "grid")
    with pytest.raises(SettingsError, match="no user with id 99"):
        settings.set_user_setting(db, 99, "layout", "two-up")
    assert settings.get_user_setting(db, ann, "layout") == "stacked"
