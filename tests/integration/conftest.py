import socket

import pytest

from data.labeling import QueuePolicy
from tests.labeling_fixtures import make_labeling_db


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
