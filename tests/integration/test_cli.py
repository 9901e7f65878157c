"""The `rankloop` command as users run it: real processes, real files, exit codes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def rankloop(*args, cwd=None, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "launch.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


def _assert_clean_failure(result, message):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("rankloop: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert message in errors[0], errors[0]


def _write(path: Path, content) -> str:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


@pytest.mark.parametrize("make_args,message", [
    (lambda d, m: ["--prompts", _write(d / "empty.jsonl", "")], "contains no rows"),
    (lambda d, m: ["--prompts", _write(d / "cols.csv", "text\nhello\n")], "no column 'prompt'"),
    (lambda d, m: ["--prompts", _write(d / "bad.jsonl", b'{"prompt": "\xff\xfe"}\n')],
     "is not valid UTF-8"),
    (lambda d, m: ["--prompts", _write(d / "long.jsonl", json.dumps({"prompt": "x " * 2000})),
                   "--model", m, "--max-prompt-tokens", "1024"], "exceed --max-prompt-tokens 1024"),
    (lambda d, m: ["--k", "0", "--model", m], "k must be at least 1"),
    (lambda d, m: ["--backend", "tgi"], "unknown backend 'tgi'"),
    (lambda d, m: ["--model", str(d / "no-such-model")], "does not exist"),
])
def test_bad_input_fails_with_one_line_and_writes_nothing(tmp_path, tiny_model_dir, make_args,
                                                          message):
    db = tmp_path / "r.db"
    result = rankloop("generate", "--db", str(db), *make_args(tmp_path, tiny_model_dir))
    _assert_clean_failure(result, message)
    assert not db.exists()


@pytest.mark.parametrize("make_db,message", [
    (lambda d: d / "missing" / "r.db", "does not exist"),
    (lambda d: d, "is a directory"),
])
def test_unwritable_db_path(tmp_path, tiny_model_dir, make_db, message):
    result = rankloop("generate", "--db", str(make_db(tmp_path)), "--model", tiny_model_dir)
    _assert_clean_failure(result, message)
    assert not (tmp_path / "missing").exists()


def test_generate_writes_to_the_env_db_and_prints_a_summary(tmp_path, tiny_model_dir):
    prompts = _write(tmp_path / "p.csv", "prompt\nHello?\nWhat is tea?\n")
    result = rankloop("generate", "--prompts", prompts, "--model", tiny_model_dir, "--k", "2",
                      "--max-new-tokens", "4", "--backend", "transformers", cwd=tmp_path,
                      env={"RANKLOOP_DB": str(tmp_path / "env.db")})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "2 prompts sampled" in result.stdout and "4 candidates" in result.stdout
    assert "tokens/s" in result.stdout
    assert (tmp_path / "env.db").exists() and not (tmp_path / "rankloop.db").exists()
    status = rankloop("status", "--db", str(tmp_path / "env.db"))
    assert "candidates       4" in status.stdout


def test_every_command_has_help_and_a_readme_section():
    from launch.cli import _build_parser

    parser = _build_parser()
    commands = parser._subparsers._group_actions[0].choices
    readme = README.read_text()
    for name, sub in commands.items():
        assert sub.description, f"{name} has no description"
        assert f"rankloop {name}" in readme, f"README does not mention `rankloop {name}`"
        assert any(a.dest == "db" for a in sub._actions), f"{name} lacks --db"
