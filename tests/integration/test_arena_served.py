"""`rankloop arena` on two tiny policies, and blind serving: no policy name or model folder
reaches the served page or the Rank tab's JSON routes."""

from __future__ import annotations

import json
import random

import httpx
import pytest

from data import labeling, store
from data.rankings import Submission
from tests.integration.conftest import serve_db
from tests.labeling_fixtures import PASSWORD, make_labeling_db

SECRET_NAMES = ("zebra-policy", "okapi-policy")


@pytest.fixture(scope="module")
def other_tiny_model_dir(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny Llama with its weights perturbed: a second policy that answers differently."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    path = tmp_path_factory.mktemp("okapi-folder")
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return str(path)


def test_arena_add_ratings_and_export(tiny_model_dir, other_tiny_model_dir, tmp_path, capsys):
    from launch.cli import main

    db_file = str(tmp_path / "arena.db")
    args = ["arena", "add", "--db", db_file, "--policy", f"zebra-policy={tiny_model_dir}",
            "--policy", f"okapi-policy={other_tiny_model_dir}", "--limit", "6",
            "--backend", "transformers", "--max-new-tokens", "4", "--no-progress"]
    assert main(args) == 0
    assert "6 prompts answered" in capsys.readouterr().out
    db = store.open_store(db_file)
    items = [r[0] for r in db.execute("SELECT id FROM items WHERE comparison = 1")]
    assert len(items) == 6 and db["items"].count == 6
    policy_of = store.candidate_policies(db)
    assert sorted(name for name, _ in policy_of.values()) == ["okapi-policy"] * 6 + \
        ["zebra-policy"] * 6
    assert main(args) == 0  # a rerun resumes: nothing new
    assert "0 prompts answered (6 already done" in capsys.readouterr().out
    assert db["candidates"].count == 12

    # Two annotators judge every item; okapi wins most, one tie, one both-bad.
    for name in ("ann", "bob"):
        user = labeling.add_user(db, name, "annotator", "!x")
        rng = random.Random(name)
        for n in range(6):
            a = labeling.next_assignment(db, user.id, labeling.QueuePolicy(overlap=2), rng=rng)
            names = [policy_of[c][0] for c in a.candidate_ids]
            if n == 0:
                sub = Submission(tuple(a.candidate_ids), (1, 1))
            elif n == 1:
                sub = Submission(tuple(a.candidate_ids), None, all_bad=True)
            else:
                sub = Submission(tuple(a.candidate_ids),
                                 tuple(1 if p == "okapi-policy" else 2 for p in names))
            labeling.submit_assignment(db, a.id, user.id, sub, overlap=2)

    assert main(["arena", "ratings", "--db", db_file, "--resamples", "100"]) == 0
    out = capsys.readouterr().out
    assert "12 votes between 2 policies" in out
    board = out.splitlines()
    okapi = next(i for i, l in enumerate(board) if l.startswith("okapi-policy"))
    zebra = next(i for i, l in enumerate(board) if l.startswith("zebra-policy"))
    assert okapi < zebra  # best first
    assert "0.83 (12)" in out  # okapi: 8 wins + 4 halves of 12

    target = tmp_path / "arena.jsonl"
    assert main(["export", "--db", db_file, "--format", "arena", "--to", str(target)]) == 0
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(rows) == 12
    assert {r["winner"] for r in rows} == {"model_a", "model_b", "tie", "tie (bothbad)"}
    for row in rows:
        assert {row["model_a"], row["model_b"]} == set(SECRET_NAMES)
        assert row["conversation_a"][-1]["role"] == "assistant"


def test_policy_flags_are_checked(tmp_path, capsys):
    from launch.cli import main

    for policies, message in ((["a=default"], "at least two"),
                              (["a=default", "a=default"], "its own name"),
                              (["a", "b=default"], "NAME=MODEL")):
        argv = ["arena", "add", "--db", str(tmp_path / "x.db")]
        for p in policies:
            argv += ["--policy", p]
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()


def test_comparison_items_are_served_blind(tmp_path):
    """The page, the screen and every answer of the JSON routes over a store whose only
    items are comparisons of two policies with distinctive names and model folders."""
    db_path = make_labeling_db(tmp_path / "app.db", n_prompts=0, k=2)
    db = store.open_store(db_path)
    ids = [store.get_or_create_policy(db, name, f"/models/{name}-folder")
           for name in SECRET_NAMES]
    run = store.get_or_create_run(db, store.RunSettings(
        "arena: " + ", ".join(SECRET_NAMES), store.ARENA_BACKEND, 2, 0.8, 1.0, 16, 0))
    for p in range(4):
        [prompt] = store.upsert_prompts(db, [([{"role": "user", "content": f"Q{p}?"}], "t",
                                              None)])
        store.add_candidates(db, prompt, run, [store.CandidateIn(f"reply {p} {j}", 3, "stop")
                                               for j in range(2)], policy_ids=ids)
    db.close()
    served, _svc, origin = serve_db(db_path)
    seen = []
    try:
        with httpx.Client(base_url=origin + "/", timeout=30) as client:
            client.post("login", data={"username": "ann",
                                       "password": PASSWORD}).raise_for_status()
            seen.append(client.get("").text)
            seen.append(client.get("config").text)
            screen = client.post("rank/api/screen", json={})
            assert screen.status_code == 200
            status = screen.json()["status"]
            assert status["candidates"] == 2
            seen.append(screen.text)
            # A tie, a tie, then "both bad": the two-answer screen takes each.
            for payload in ({"ranks": ["1", "1"]}, {"ranks": ["1", "1"]},
                            {"ranks": [], "all_bad": True}):
                answer = client.post("rank/api/submit", json={
                    "assignment_id": status["assignment_id"], **payload})
                assert answer.status_code == 200, answer.text
                seen.append(answer.text)
                status = answer.json()["status"]
            skipped = client.post("rank/api/skip", json={"assignment_id":
                                                         status["assignment_id"]})
            seen.append(skipped.text)
    finally:
        served.close()
    everything = "\n".join(seen)
    assert "reply 0" in everything  # the answers are there ...
    for secret in (*SECRET_NAMES, "-folder", "arena:"):  # ... their sources are not
        assert secret not in everything, secret
    db = store.open_store(db_path)
    assert db.execute("SELECT COUNT(*) FROM rankings WHERE has_tie = 1").fetchone()[0] == 2
    assert db.execute("SELECT COUNT(*) FROM rankings WHERE all_bad = 1").fetchone()[0] == 1
