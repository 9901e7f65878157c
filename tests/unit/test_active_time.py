"""Active time per task: accepted with a submission, checked, cut to the wall time, stored on
the vote (and its revisions), read back and summed per annotator."""

from __future__ import annotations

import math

import pytest

from data import agreement, labeling, revisions
from data.labeling import QueuePolicy
from data.rankings import validate_submission
from data.votes import read_rankings
from labeler import handlers
from labeler.handlers import BadRequest, LabelerService
from tests.labeling_fixtures import make_labeling_db


@pytest.fixture
def svc(tmp_path):
    return LabelerService(make_labeling_db(tmp_path / "t.db", n_prompts=3, k=3),
                          policy=QueuePolicy(overlap=2), autogenerate=False)


def _shown_ago(svc, assignment_id, seconds):
    svc.db().execute("UPDATE assignments SET shown_at = shown_at - ? WHERE id = ?",
                     [seconds, assignment_id])


def _stored(svc):
    return [r[0] for r in svc.db().execute("SELECT active_seconds FROM rankings ORDER BY id")]


def test_active_seconds_are_stored_and_cut_to_the_wall_time(svc):
    view = handlers.current_task(svc, "ann")
    _shown_ago(svc, view.assignment_id, 100)
    out = handlers.submit(svc, "ann", {"assignment_id": view.assignment_id,
                                       "ranks": ["1", "2", "3"], "active_seconds": 42.5})
    assert out.status["outcome"] == "saved"
    view = handlers.current_task(svc, "ann")
    _shown_ago(svc, view.assignment_id, 100)
    # More than the wall time since the task was shown: the browser's clock, cut to the wall.
    handlers.submit(svc, "ann", {"assignment_id": view.assignment_id,
                                 "ranks": ["1", "2", "3"], "active_seconds": 10_000})
    view = handlers.current_task(svc, "ann")
    handlers.submit(svc, "ann", {"assignment_id": view.assignment_id, "ranks": ["1", "2", "3"]})
    first, cut, unknown = _stored(svc)
    assert first == 42.5
    assert 100 <= cut < 110
    assert unknown is None  # a page that measured nothing stores nothing
    assert [r.active_seconds for r in read_rankings(svc.db())] == [first, cut, None]


@pytest.mark.parametrize("bad", [-1, "5", True, float("inf"), float("nan"), [3]])
def test_bad_active_seconds_are_refused_with_a_sentence_and_store_nothing(svc, bad):
    view = handlers.current_task(svc, "ann")
    with pytest.raises(BadRequest, match="active_seconds must be a"):
        handlers.submit(svc, "ann", {"assignment_id": view.assignment_id,
                                     "ranks": ["1", "2", "3"], "active_seconds": bad})
    assert svc.db()["rankings"].count == 0


def test_a_revision_adds_its_time_to_the_vote(svc):
    db = svc.db()
    view = handlers.current_task(svc, "ann")
    _shown_ago(svc, view.assignment_id, 500)
    saved = handlers.submit(svc, "ann", {"assignment_id": view.assignment_id,
                                         "ranks": ["1", "2", "3"], "active_seconds": 30})
    first = saved.status["ranking_id"]
    handlers.submit(svc, "ann", {"revises": first, "ranks": ["3", "2", "1"],
                                 "active_seconds": 12})
    assert _stored(svc) == [30, 42]
    with pytest.raises(labeling.LabelingError, match="active time"):
        revisions.revise_submission(db, first + 1, labeling.get_user(db, "ann").id,
                                    validate_submission(
                                        [r.candidate_ids for r in read_rankings(db)][0],
                                        [1, 2, 3]), active_seconds=-3)


def test_active_time_helper():
    assert labeling.active_time(None, 0.0, 10.0) is None
    assert labeling.active_time(4.0, 0.0, 10.0) == 4.0
    assert labeling.active_time(40.0, 0.0, 10.0) == 10.0
    assert labeling.active_time(4.0, None, 10.0) == 4.0
    for bad in (-0.5, math.nan, math.inf):
        with pytest.raises(labeling.LabelingError):
            labeling.active_time(bad, 0.0, 10.0)


def test_speed_per_annotator_and_implausibly_fast_votes():
    chars = 600  # 2 s + 600 / 60 s = 12 s is the least plausible time
    assert agreement.min_plausible_seconds(chars) == pytest.approx(12.0)
    rows = [
        {"annotator": "a", "active_seconds": 5.0, "shown_at": 0, "submitted_at": 900,
         "chars": chars},  # fast by its active time, though the wall clock says 15 minutes
        {"annotator": "a", "active_seconds": 20.0, "shown_at": 0, "submitted_at": 30,
         "chars": chars},
        {"annotator": "a", "active_seconds": 40.0, "shown_at": 0, "submitted_at": 40,
         "chars": chars},
        {"annotator": "b", "active_seconds": None, "shown_at": 0, "submitted_at": 3,
         "chars": chars},  # not measured: its wall time (never less) says fast
        {"annotator": "b", "active_seconds": None, "shown_at": 0, "submitted_at": 300,
         "chars": 60},
        {"annotator": "b", "active_seconds": 1.0, "shown_at": 0, "submitted_at": 1,
         "chars": 0, "superseded_by": 9},  # an old version is not counted
    ]
    assert agreement.speed(rows) == {"a": (20.0, 3, 1), "b": (None, 0, 1)}


def test_console_shows_speed_and_reliability_beside_agreement(svc):
    from labeler import admin

    for name in ("ann", "bob"):
        for _ in range(3):
            view = handlers.current_task(svc, name)
            _shown_ago(svc, view.assignment_id, 60)
            handlers.submit(svc, name, {"assignment_id": view.assignment_id,
                                        "ranks": ["1", "2", "3"], "active_seconds": 0.5})
    rows = {r[0]: r for r in admin.dataset_status(svc, "root").annotators}
    ann = rows["ann"]
    weight, temperature, median, fast = ann[7:11]
    assert 0.0 <= float(weight) <= 1.0 and float(temperature) != 0.0
    assert (median, fast) == ("0.5 s", 3)  # half a second on three candidates: too fast
    assert rows["root"][7:11] == ["", "", "", 0]  # no votes


def test_console_refits_reliability_as_votes_grow(svc, monkeypatch):
    from labeler import admin

    fits = []
    real = admin.reliability
    monkeypatch.setattr(admin, "reliability", lambda db, **kw: fits.append(1) or real(db, **kw))
    monkeypatch.setattr(admin, "REFIT_GROWTH", 0.4)
    for _ in range(2):
        view = handlers.current_task(svc, "ann")
        handlers.submit(svc, "ann", {"assignment_id": view.assignment_id,
                                     "ranks": ["1", "2", "3"]})
    admin._reliability(svc.db())
    view = handlers.current_task(svc, "bob")
    handlers.submit(svc, "bob", {"assignment_id": view.assignment_id, "ranks": ["1", "2", "3"]})
    admin._reliability(svc.db())  # 3 votes after 2: grown by more than 40%, a refit
    assert len(fits) == 2
    view = handlers.current_task(svc, "bob")
    handlers.submit(svc, "bob", {"assignment_id": view.assignment_id, "ranks": ["1", "2", "3"]})
    admin._reliability(svc.db())  # 4 after 3: grown by 33%, the last fit stands
    assert len(fits) == 2
