import sqlite3

import pytest

from data import store


def _insert_generation(db, text="an answer"):
    [prompt_id] = store.upsert_prompts(db, [([{"role": "user", "content": "hi"}], "test", "0")])
    run_id = store.get_or_create_run(
        db, store.RunSettings("default", "transformers", 1, 0.8, 0.9, 16, 0)
    )
    store.add_candidates(db, prompt_id, run_id, [store.CandidateIn(text, 3, "stop")])
    return prompt_id, run_id


def test_new_database_has_every_table_wal_and_foreign_keys(tmp_path):
    db = store.open_store(tmp_path / "r.db")
    assert store.schema_version(db) == store.SCHEMA_VERSION
    assert store.applied_versions(db) == {m.version for m in store.MIGRATIONS}
    assert set(db.table_names()) >= {
        "schema_migrations", "prompts", "generation_runs", "candidates",
        "users", "rankings", "comparisons",
    }
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert {"prompt_id", "run_id", "idx", "text", "token_count", "finish_reason",
            "duplicate_of"} <= set(db["candidates"].columns_dict)


def test_migration_from_version_1_keeps_rows_and_adds_tables(tmp_path):
    path = tmp_path / "old.db"
    old = store.open_store(path, migrate_to=1)
    assert store.schema_version(old) == 1
    assert "rankings" not in old.table_names()
    assert "duplicate_of" not in old["candidates"].columns_dict
    prompt_id, run_id = _insert_generation_v1(old)
    old.close()

    db = store.open_store(path)
    assert store.schema_version(db) == store.SCHEMA_VERSION
    [row] = store.candidates_for_run(db, run_id)
    assert (row["prompt_id"], row["text"], row["duplicate_of"]) == (prompt_id, "old text", None)
    assert "rankings" in db.table_names()
    applied = [r["version"] for r in db["schema_migrations"].rows]
    assert applied == sorted(m.version for m in store.MIGRATIONS)


def test_a_migration_that_landed_out_of_order_is_still_applied(tmp_path, monkeypatch):
    def table(name):
        return lambda db: db[name].create({"id": int}, pk="id")

    first, second = store.MIGRATIONS[:2]
    five = store.Migration(50, "fifty", table("t50"))
    monkeypatch.setattr(store, "MIGRATIONS", (first, second, five))
    store.open_store(tmp_path / "r.db", migrate_to=50).close()
    # A migration numbered below the newest applied one arrives later (merged from a branch).
    three = store.Migration(30, "thirty", table("t30"))
    monkeypatch.setattr(store, "MIGRATIONS", (first, second, three, five))
    db = store.open_store(tmp_path / "r.db", migrate_to=50)
    assert {"t30", "t50"} <= set(db.table_names())
    assert store.applied_versions(db) == {1, 2, 30, 50}


def _insert_generation_v1(db):
    # Version 1 has no duplicate_of column, so write the row directly.
    [prompt_id] = store.upsert_prompts(db, [([{"role": "user", "content": "q"}], "t", None)])
    run_id = store.get_or_create_run(db, store.RunSettings("m", "vllm", 1, 0.8, 0.9, 8, 1))
    db.execute(
        "INSERT INTO candidates (prompt_id, run_id, idx, text, token_count, finish_reason, "
        "created_at) VALUES (?, ?, 0, 'old text', 2, 'stop', 0)", [prompt_id, run_id],
    )
    return prompt_id, run_id


def test_reopening_applies_nothing_twice(tmp_path):
    store.open_store(tmp_path / "r.db").close()
    db = store.open_store(tmp_path / "r.db")
    assert db["schema_migrations"].count == len(store.MIGRATIONS)


def test_rankings_and_comparisons_are_append_only(tmp_path):
    db = store.open_store(tmp_path / "r.db")
    prompt_id, _ = _insert_generation(db)
    db.execute("INSERT INTO users (name, role, password_hash, created_at) VALUES "
               "('ann', 'annotator', 'x', 0)")
    db.execute("INSERT INTO rankings (user_id, prompt_id, candidate_ids, ranks, submitted_at) "
               "VALUES (1, ?, '[1]', '[1]', 0)", [prompt_id])
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE rankings SET rationale = 'edited'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM rankings")
    assert db["rankings"].count == 1


def test_foreign_keys_are_enforced(tmp_path):
    db = store.open_store(tmp_path / "r.db")
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO candidates (prompt_id, run_id, idx, text, created_at) "
                   "VALUES (999, 999, 0, 'x', 0)")


def test_prompts_are_stored_once_and_runs_keyed_by_settings(tmp_path):
    db = store.open_store(tmp_path / "r.db")
    messages = [{"role": "user", "content": "same"}]
    assert store.upsert_prompts(db, [(messages, "a", "1")]) == store.upsert_prompts(
        db, [(messages, "b", "2")]
    )
    settings = store.RunSettings("default", "vllm", 4, 0.8, 0.9, 64, 0)
    first = store.get_or_create_run(db, settings)
    assert store.get_or_create_run(db, settings) == first
    other = store.RunSettings("default", "vllm", 4, 0.8, 0.9, 64, seed=1)
    assert store.get_or_create_run(db, other) != first


def test_a_prompts_candidates_are_written_all_or_nothing(tmp_path):
    db = store.open_store(tmp_path / "r.db")
    _, run_id = _insert_generation(db)
    [prompt_id] = store.upsert_prompts(db, [([{"role": "user", "content": "b"}], "t", None)])
    # A row already holds idx 1, so the batch's second insert fails after its first succeeded.
    db.execute("INSERT INTO candidates (prompt_id, run_id, idx, text, created_at) "
               "VALUES (?, ?, 1, 'already there', 0)", [prompt_id, run_id])
    batch = [store.CandidateIn("new 0", 1, "stop"), store.CandidateIn("new 1", 1, "stop")]
    with pytest.raises(sqlite3.IntegrityError):
        store.add_candidates(db, prompt_id, run_id, batch)
    texts = [r["text"] for r in store.candidates_for_run(db, run_id)]
    assert texts == ["an answer", "already there"]
    assert not db.conn.in_transaction


def test_duplicate_targets_point_at_the_first_identical_text():
    assert store.duplicate_targets(["a", "b", "a", " b ", "c", "a"]) == [
        None, None, 0, 1, None, 0
    ]


def test_identical_candidates_are_flagged_not_dropped(tmp_path):
    db = store.open_store(tmp_path / "r.db")
    [prompt_id] = store.upsert_prompts(db, [([{"role": "user", "content": "q"}], "t", None)])
    run_id = store.get_or_create_run(db, store.RunSettings("m", "vllm", 3, 0.8, 0.9, 8, 0))
    ids = store.add_candidates(db, prompt_id, run_id, [
        store.CandidateIn("same", 1, "stop"), store.CandidateIn("other", 1, "stop"),
        store.CandidateIn("same", 1, "stop"),
    ])
    rows = store.candidates_for_run(db, run_id)
    assert [r["duplicate_of"] for r in rows] == [None, None, ids[0]]


@pytest.mark.parametrize("make_path,message", [
    (lambda tmp: tmp / "missing-dir" / "r.db", "does not exist"),
    (lambda tmp: tmp, "is a directory"),
])
def test_unwritable_paths_fail_with_a_clear_error_and_create_nothing(tmp_path, make_path, message):
    path = make_path(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(store.StoreError, match=message):
        store.open_store(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_db_path_defaults_to_env_then_cwd(monkeypatch):
    monkeypatch.delenv("RANKLOOP_DB", raising=False)
    assert store.default_db_path() == "rankloop.db"
    monkeypatch.setenv("RANKLOOP_DB", "/data/x.db")
    assert store.default_db_path() == "/data/x.db"


def test_migrations_import_no_project_code():
    """A shipped migration must do forever what it did when it shipped: it may not call
    project code that later changes (such as the rule for user-name keys)."""
    import ast
    import inspect

    from data import store

    tree = ast.parse(inspect.getsource(store))
    project = ("data", "labeler", "reward", "policy", "training", "launch")
    migrations = [f for f in tree.body
                  if isinstance(f, ast.FunctionDef) and f.name.startswith("_m")]
    assert len(migrations) >= 10
    for function in migrations:
        for node in ast.walk(function):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            assert not any(n.split(".")[0] in project for n in names), \
                f"migration {function.name} imports {names}"


def test_a_store_from_before_items_were_made_with_candidates_gets_them_on_upgrade(tmp_path):
    path = tmp_path / "old.db"
    db = store.open_store(path, migrate_to=54)
    run = store.get_or_create_run(db, store.RunSettings("m", "vllm", 2, 0.8, 0.9, 8, 0))
    prompts = store.upsert_prompts(db, [([{"role": "user", "content": f"q{i}"}], "t", str(i))
                                        for i in range(2)])
    store.add_candidates(db, prompts[0], run, [store.CandidateIn("a", 1, "stop"),
                                                store.CandidateIn("b", 1, "stop")])
    db.execute("DELETE FROM items")  # as a store of that version held them: none yet
    db.execute("INSERT INTO candidates (prompt_id, run_id, idx, text, created_at) "
               "VALUES (?, ?, 0, 'half', 0)", [prompts[1], run])  # 1 of 2: not an item
    db.conn.commit()
    db.close()
    upgraded = store.open_store(path)
    assert upgraded.execute("SELECT prompt_id, run_id FROM items").fetchall() == [
        (prompts[0], run)]
