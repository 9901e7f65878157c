"""The app served in this process over a database whose items carry the hostile corpus."""

from __future__ import annotations

import logging

import pytest

from data import labeling, store
from tests.integration.conftest import serve_db  # noqa: F401 - the security tests import it here
from tests.labeling_fixtures import make_labeling_db
from tests.security.hostile_corpus import corpus


def add_hostile_items(db_path, origin: str) -> list[str]:
    """One item per corpus entry: the hostile text as candidate A (and as the prompt)."""
    db = store.open_store(db_path)
    run_id = store.get_or_create_run(db, store.RunSettings("hostile", "transformers", 3, 0.8,
                                                           0.9, 32, 0))
    names = []
    for name, text in corpus(origin).items():
        [prompt_id] = store.upsert_prompts(db, [([{"role": "user", "content": text}],
                                                 "hostile", name)])
        store.add_candidates(db, prompt_id, run_id, [
            store.CandidateIn(text, 5, "stop"), store.CandidateIn(f"plain {name}", 2, "stop"),
            store.CandidateIn(f"other {name}", 2, "stop")])
        names.append(name)
    labeling.sync_items(db)
    db.close()
    return names


@pytest.fixture
def app_log(caplog):
    caplog.set_level(logging.WARNING, logger="rankloop.app")
    return caplog


@pytest.fixture
def served(tmp_path):
    db_path = make_labeling_db(tmp_path / "app.db", n_prompts=3, k=3)
    served, svc, origin = serve_db(db_path)
    yield {"url": origin + "/", "origin": origin, "db": db_path, "svc": svc, "app": served}
    served.close()
