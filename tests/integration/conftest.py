import socket

import pytest

from data.labeling import QueuePolicy
from tests.labeling_fixtures import make_labeling_db


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served_app(tmp_path):
    """The labeling app served in this process on a free localhost port."""
    from labeler.app import serve
    from labeler.handlers import LabelerService

    db_path = make_labeling_db(tmp_path / "app.db", n_prompts=6, k=3)
    svc = LabelerService(db_path, policy=QueuePolicy(overlap=1), autogenerate=False)
    port = free_port()
    demo = serve(svc, port=port, block=False)
    yield {"url": f"http://127.0.0.1:{port}/", "db": db_path, "svc": svc}
    demo.close()
