"""Databases with ready-to-rank items and users, shared by the labeling tests."""

from __future__ import annotations

from data import labeling, store
from labeler.auth import hash_password

PASSWORD = "s3cret-pass"
HTML_CANDIDATE = '<script>window.__rl_xss = 1</script><b>bold?</b> & "quotes"'


def make_labeling_db(path, *, n_prompts: int = 5, k: int = 3, users=(("ann", "annotator"),
                     ("bob", "annotator"), ("root", "admin"))) -> str:
    """Items with k candidates each (the first prompt's first candidate is raw HTML)."""
    db = store.open_store(path)
    run_id = store.get_or_create_run(db, store.RunSettings("default", "transformers", k, 0.8,
                                                           0.9, 32, 0))
    for p in range(n_prompts):
        [prompt_id] = store.upsert_prompts(
            db, [([{"role": "user", "content": f"Question {p}: what is {p} + {p}?"}], "test",
                  str(p))])
        texts = [f"Answer {p}.{j}: {2 * p + j - 1}" for j in range(k)]
        if p == 0:
            texts[0] = HTML_CANDIDATE
        store.add_candidates(db, prompt_id, run_id,
                             [store.CandidateIn(t, 5, "stop") for t in texts])
    for name, role in users:
        labeling.add_user(db, name, role, hash_password(PASSWORD))
    labeling.sync_items(db)
    db.close()
    return str(path)
