import os
import socket
import subprocess
import sys
import time
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


def wait_for_port(port: int, process, timeout: float = 120.0) -> None:
    """Until ``port`` on localhost accepts a connection; fails if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the app exited with {process.returncode}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listened on port {port} within {timeout:.0f} s")


def api_client(url: str, auth: tuple[str, str]):
    """A gradio_client ``Client`` logged in as ``auth``, with the read timeout the README's
    example sets: httpx's default of 5 s fails a login on a loaded machine (scrypt runs on it)."""
    import httpx
    from gradio_client import Client

    return Client(url, auth=auth, verbose=False,
                  httpx_kwargs={"timeout": httpx.Timeout(120.0, connect=10.0)})


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
