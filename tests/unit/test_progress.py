"""Progress of the first generation job, from the jobs table and candidate timestamps."""

from data import labeling, progress, store


def _job(db, started_at, status="running"):
    return db.execute("INSERT INTO jobs (kind, argv, status, started_by, started_at) "
                      "VALUES ('generate', '[]', ?, 'rankloop', ?)", [status, started_at]).lastrowid


def _run(db, now):
    run_id = store.get_or_create_run(db, store.RunSettings("m", "transformers", 2, 0.8, 0.9, 8, 0))
    db.execute("UPDATE generation_runs SET updated_at = ? WHERE id = ?", [now, run_id])
    return run_id


def _store_prompt(db, run_id, prompt_id, at):
    store.add_candidates(db, prompt_id, run_id, [store.CandidateIn("a", 1, "stop"),
                                                 store.CandidateIn("b", 1, "stop")])
    db.execute("UPDATE candidates SET created_at = ? WHERE prompt_id = ?", [at, prompt_id])


def test_prompts_done_of_total_and_time_left(tmp_path):
    db = store.open_store(tmp_path / "r.db")
    assert progress.generation_progress(db) is None
    job = _job(db, started_at=1000.0)
    prompt_ids = store.upsert_prompts(
        db, [([{"role": "user", "content": f"q{i}"}], "bundled", str(i)) for i in range(10)])
    db.execute("UPDATE prompts SET created_at = 1001")
    loading = progress.generation_progress(db)
    assert (loading.job_id, loading.run_id, loading.prompts_total) == (job, None, None)
    # From its first second the job says what it does and for how long.
    assert loading.line(now=1012.0) == \
        "Loading the model to generate the first candidates… (12 s so far)"

    run_id = _run(db, now=1002.0)
    # The run is recorded before the model loads: the time so far is what there is to say.
    assert progress.generation_progress(db).line(now=1020.0) == (
        "0 of 10 prompts ready — loading the model and writing the first candidates (20 s so "
        "far; an estimate follows the first prompt)")
    # A gold item added meanwhile is not part of the job.
    labeling.add_gold_item(db, [{"role": "user", "content": "2+2?"}], ["4", "5"], [1, 2])
    _store_prompt(db, run_id, prompt_ids[0], at=1030.0)  # after ~28 s of model loading
    one = progress.generation_progress(db)
    # One prompt in 30 s since the job started (loading included): 9 left → 270 s.
    assert (one.prompts_done, one.prompts_total, one.seconds_left) == (1, 10, 270.0)
    assert one.line() == "1 of 10 prompts ready, about 4 min left"
    for i, at in ((1, 1034.0), (2, 1038.0)):
        _store_prompt(db, run_id, prompt_ids[i], at=at)
    got = progress.generation_progress(db, job)
    # 2 prompts in 8 s after the first: 0.25 prompts/s; 7 left → 28 s.
    assert (got.prompts_done, got.prompts_total) == (3, 10)
    assert got.prompts_per_second == 0.25 and got.seconds_left == 28.0
    assert got.line() == "3 of 10 prompts ready, about 28 s left"


def test_a_resumed_job_times_only_its_own_prompts(tmp_path):
    db = store.open_store(tmp_path / "r.db")
    prompt_ids = store.upsert_prompts(
        db, [([{"role": "user", "content": f"q{i}"}], "bundled", str(i)) for i in range(4)])
    db.execute("UPDATE prompts SET created_at = 1")
    run_id = _run(db, now=2.0)
    _store_prompt(db, run_id, prompt_ids[0], at=3.0)  # by the first, stopped job
    _job(db, started_at=0.0, status="stopped")
    job = _job(db, started_at=500.0)
    _run(db, now=501.0)
    _store_prompt(db, run_id, prompt_ids[1], at=560.0)
    _store_prompt(db, run_id, prompt_ids[2], at=600.0)
    got = progress.generation_progress(db)
    assert (got.job_id, got.prompts_done, got.prompts_total) == (job, 3, 4)
    assert got.seconds_left == 40.0  # 1 left at 1 per 40 s
