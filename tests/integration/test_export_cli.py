"""`rankloop export` end to end on a real SQLite file: the folder it writes loads with
`load_dataset` and `load_from_disk`, the Hub upload carries both configurations and the card,
and bad input is one error line.

The Hub itself is out of reach here. The upload test replaces only the two network calls,
`HfApi.create_repo` and `HfApi.create_commit`, records what they were given, writes the
committed files into a folder and loads that folder with `load_dataset`, as a reader of the
Hub repository would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_dataset, load_from_disk

from data import export
from launch.cli import main
from tests.unit.test_export import make_export_db

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def votes_db(tmp_path):
    return make_export_db(tmp_path / "votes.db")


def test_local_export_loads_every_way(votes_db, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", "--db", votes_db, "--to", str(out), "--test-fraction", "0.25",
                 "--license", "cc-by-4.0"]) == 0
    line = capsys.readouterr().out
    assert f"exported to {out}" in line and "12 rankings from 3 annotators" in line

    pairs = load_dataset(str(out))  # the card's `default` configuration
    rankings = load_dataset(str(out), "rankings")
    assert set(pairs) == set(rankings) == {"train", "test"}
    assert pairs["train"].num_rows + pairs["test"].num_rows == 25
    assert rankings["train"].num_rows + rankings["test"].num_rows == 12
    assert pairs["test"].num_rows > 0
    assert {"prompt", "chosen", "rejected", "score_chosen", "score_rejected", "margin",
            "annotator", "annotators", "tie", "source_run"} <= set(pairs["train"].column_names)
    # All rows of a prompt are in one split.
    assert not ({r["prompt_id"] for r in pairs["train"]} & {r["prompt_id"] for r in pairs["test"]})

    on_disk = load_from_disk(str(out / "preferences"))
    assert on_disk["train"].to_list() == pairs["train"].to_list()
    assert load_from_disk(str(out / "rankings"))["test"].to_list() == rankings["test"].to_list()
    lines = (out / "jsonl" / "preferences" / "train.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == pairs["train"].to_list()
    assert (out / "README.md").read_text().startswith("---\nlicense: cc-by-4.0\n")
    # Raw rankings from the exported files reproduce the vote log.
    from data import store

    back = export.rankings_from_rows(rankings["train"].to_list() + rankings["test"].to_list())
    assert back == export.read_rankings(store.open_store(votes_db))
    assert not list(tmp_path.glob(".export.partial-*"))


def test_standard_format_renders_prompts_with_the_chat_template(votes_db, tmp_path,
                                                                 tiny_model_dir, capsys):
    out = tmp_path / "standard"
    assert main(["export", "--db", votes_db, "--to", str(out), "--format", "standard",
                 "--model", tiny_model_dir, "--pairs", "best-worst"]) == 0
    pairs = load_dataset(str(out))
    row = pairs["train"][0]
    assert isinstance(row["prompt"], str) and isinstance(row["chosen"], str)
    assert row["prompt"].startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert row["prompt"].endswith("<|im_start|>assistant\n")
    assert pairs["train"].num_rows + pairs["test"].num_rows == 11


def test_hub_upload_commits_both_configurations_and_the_card(votes_db, tmp_path, monkeypatch,
                                                             capsys):
    from huggingface_hub import HfApi

    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["repo"] = (repo_id, kwargs, self.token)
        return f"https://huggingface.co/datasets/{repo_id}"

    def create_commit(self, repo_id, operations, **kwargs):
        calls["commit"] = (repo_id, kwargs)
        calls["files"] = {op.path_in_repo: Path(op.path_or_fileobj).read_bytes()
                          for op in operations}
        return type("CommitInfo", (), {"commit_url": f"https://hf.co/{repo_id}/commit/abc"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    assert main(["export", "--db", votes_db, "--to", "hub:rank-loop/prefs", "--private"]) == 0
    assert "exported to https://huggingface.co/datasets/rank-loop/prefs" in capsys.readouterr().out

    repo_id, repo_kwargs, token = calls["repo"]
    assert repo_id == "rank-loop/prefs" and token == "hf_test_token"
    assert repo_kwargs["repo_type"] == "dataset" and repo_kwargs["private"] is True
    assert calls["commit"][1]["repo_type"] == "dataset"
    assert sorted(calls["files"]) == [
        "README.md", "parquet/preferences/test.parquet", "parquet/preferences/train.parquet",
        "parquet/rankings/test.parquet", "parquet/rankings/train.parquet"]
    card = calls["files"]["README.md"].decode()
    assert "config_name: default" in card and "config_name: rankings" in card
    assert "12 submissions by 3 annotators" in card and "license: other" in card

    # What was uploaded loads as the Hub repository would.
    repo = tmp_path / "repo"
    for name, content in calls["files"].items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_bytes(content)
    pairs, rankings = load_dataset(str(repo)), load_dataset(str(repo), "rankings")
    assert pairs["train"].num_rows + pairs["test"].num_rows == 25
    assert rankings["train"].num_rows + rankings["test"].num_rows == 12


def test_hub_upload_needs_a_token(votes_db, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no cached login either
    assert main(["export", "--db", votes_db, "--to", "hub:rank-loop/prefs"]) == 2
    assert "no Hugging Face token" in capsys.readouterr().err


def rankloop(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rankloop: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_exporting_an_empty_database_says_so(tmp_path):
    from data import store

    empty = tmp_path / "empty.db"
    store.open_store(empty).close()
    out = tmp_path / "out"
    assert_one_line_error(rankloop("export", "--db", str(empty), "--to", str(out)),
                          "has no rankings to export yet")
    assert not out.exists()


@pytest.mark.parametrize("repo", ["hub:no-owner", "hub:owner/bad name", "hub:a/b/c", "hub:"])
def test_invalid_repo_ids_are_one_line_errors(votes_db, repo, capsys):
    assert main(["export", "--db", votes_db, "--to", repo]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid Hub repository id" in err[0]


def test_unwritable_or_bad_destinations_are_one_line_errors(votes_db, tmp_path):
    if os.geteuid() == 0:
        # Permission bits do not stop root; a read-only system folder does.
        target = Path("/sys/rankloop-export-test")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        target = locked / "out"
    result = rankloop("export", "--db", votes_db, "--to", str(target))
    assert_one_line_error(result, f"cannot export to {target}")
    assert not target.exists()

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert_one_line_error(rankloop("export", "--db", votes_db, "--to", str(tmp_path / "full")),
                          "is not empty")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert_one_line_error(rankloop("export", "--db", str(tmp_path / "missing.db"), "--to",
                                   str(tmp_path / "x")), "does not exist")
