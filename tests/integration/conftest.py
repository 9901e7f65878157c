import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from data.labeling import QueuePolicy
from tests.labeling_fixtures import make_labeling_db


ROOT = Path(__file__).resolve().parents[2]


def zero3_cpu2(*cli_args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    """``rankloop CLI_ARGS`` under ``accelerate launch`` with DeepSpeed ZeRO-3 on 2 CPU
    processes (gloo), one thread each so that the two share this machine's cores."""
    return subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(ROOT / "launch/configs/zero3-cpu2.yaml"), "-m", "launch.cli", *cli_args],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_db(db_path, *, policy=None, port: int | None = None, **serve_options):
    """The labeling app over ``db_path``, served in this process on ``port`` (a free one by
    default): (the served app, its service, its origin without the trailing slash)."""
    from labeler.app import serve
    from labeler.handlers import LabelerService

    svc = LabelerService(str(db_path), policy=policy or QueuePolicy(overlap=1),
                         autogenerate=False)
    port = port or free_port()
    served = serve(svc, port=port, block=False, **serve_options)
    return served, svc, f"http://127.0.0.1:{port}"


@pytest.fixture
def served_app(tmp_path):
    """The labeling app served in this process on a free localhost port."""
    db_path = make_labeling_db(tmp_path / "app.db", n_prompts=6, k=3)
    served, svc, origin = serve_db(db_path)
    yield {"url": origin + "/", "db": db_path, "svc": svc}
    served.close()
