"""The README's API section stays true: its gradio_client example, run as written against a
served app, logs in and ranks a task; every event an API client can call is documented."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

from gradio_client import Client

from tests.labeling_fixtures import PASSWORD

README = Path(__file__).resolve().parents[2] / "README.md"


def api_example() -> str:
    """The python block after the ``<!-- api-example -->`` marker, unindented."""
    text = README.read_text()
    block = re.search(r"<!-- api-example -->\s*```python\n(.*?)\n\s*```", text, re.S)
    assert block, "README has no api-example block"
    lines = block.group(1).splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines)


def test_the_readme_example_ranks_a_task(served_app):
    code = api_example()
    settings_line = 'URL, USER, PASSWORD = "http://127.0.0.1:7860/", "ann", "her password"'
    assert settings_line in code
    code = code.replace(settings_line,
                        f"URL, USER, PASSWORD = {served_app['url']!r}, 'ann', {PASSWORD!r}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README api-example", "exec"), {})
    assert out.getvalue().startswith("saved Saved — ranking of 3 candidates.")
    from data import store
    [(ranks, rationale, active)] = store.open_store(served_app["db"]).execute(
        "SELECT ranks, rationale, active_seconds FROM rankings").fetchall()
    assert json.loads(ranks) == [1, 2, 3] and rationale == "In the order shown."
    assert active is not None and active <= 12.5


def test_every_event_an_api_client_can_call_is_in_the_readme(served_app):
    client = Client(served_app["url"], auth=("ann", PASSWORD), verbose=False)
    named = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    section = README.read_text().split("**API clients**", 1)[1].split("- **Queue.**", 1)[0]
    assert named, "the app offers no named events"
    for event in named:
        assert f"| `{event}` |" in section, event
