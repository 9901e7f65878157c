"""The guidelines on the Rank screen: a version per text, delivered with each screen, marked
until read, recorded on each vote; and the keys legend of the screen."""

import pytest

from data import settings
from data.labeling import QueuePolicy
from labeler import handlers
from labeler.handlers import BadRequest, LabelerService
from labeler.render import keys_legend
from tests.labeling_fixtures import make_labeling_db


@pytest.fixture
def svc(tmp_path):
    return LabelerService(make_labeling_db(tmp_path / "g.db", n_prompts=3, k=3),
                          policy=QueuePolicy(overlap=2), autogenerate=False)


def test_a_version_per_text():
    a = settings.guidelines_version("Rank helpfulness first.")
    assert a == settings.guidelines_version("Rank helpfulness first.")
    assert len(a) == settings.VERSION_CHARS and int(a, 16) >= 0
    assert a != settings.guidelines_version("Rank honesty first.")
    assert settings.guidelines_version("") is None and settings.guidelines_version(" \n") is None


def test_each_screen_carries_the_guidelines_marked_until_read(svc):
    db = svc.db()
    assert 'id="rl-guidelines"' not in handlers.load_screen(svc, "ann").html  # none set
    settings.set_setting(db, "guidelines", "Prefer <b>correct</b> answers.")
    version = settings.current_guidelines(db)[1]
    html = handlers.load_screen(svc, "ann").html
    assert f'data-version="{version}"' in html and 'id="rl-guide-new"' in html
    assert "&lt;b&gt;correct&lt;/b&gt;" in html and "<b>" not in html  # the admin's text, shown
    with pytest.raises(BadRequest, match="changed since this screen"):
        handlers.guidelines_read(svc, "ann", {"version": "0" * settings.VERSION_CHARS})
    assert handlers.guidelines_read(svc, "ann", {"version": version}) == version
    assert 'id="rl-guide-new"' not in handlers.load_screen(svc, "ann").html
    assert 'id="rl-guide-new"' in handlers.load_screen(svc, "bob").html  # bob has not read
    settings.set_setting(db, "guidelines", "Prefer correct answers, then short ones.")
    html = handlers.load_screen(svc, "ann").html
    assert 'id="rl-guide-new"' in html and "then short ones" in html


def test_each_vote_records_the_guidelines_in_force(svc):
    db = svc.db()
    view = handlers.current_task(svc, "ann")
    handlers.submit_ranking(svc, "ann", view.assignment_id, ["1", "2", "3"])
    settings.set_setting(db, "guidelines", "Rule one.")
    view = handlers.current_task(svc, "ann")
    handlers.submit_ranking(svc, "ann", view.assignment_id, ["1", "2", "3"])
    stored = [r[0] for r in db.execute("SELECT guidelines_version FROM rankings ORDER BY id")]
    assert stored == [None, settings.guidelines_version("Rule one.")]


def test_the_legend_gives_the_real_range_and_no_skip_when_revising():
    keys = dict(keys_legend(4, revise=False))
    assert "1–4" in keys and "S" in keys and "?" in keys
    assert "1–8" in dict(keys_legend(8, revise=False))
    assert "S" not in dict(keys_legend(4, revise=True))
    assert "?" not in dict(keys_legend(4, revise=False, guidelines=False))
