"""examples/flask_app run the two ways README shows: with our server and under gunicorn with our worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import websocket
from servers import Served, free_port, gunicorn, wait_until_serving

EXAMPLE = Path(__file__).parent.parent / "examples" / "flask_app"


@pytest.fixture(params=["python app.py", "gunicorn"])
def example(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    if request.param == "gunicorn":
        with gunicorn(tmp_path, "-k", "geventws.gunicorn.Worker", "-w", "1", app="app:app", chdir=EXAMPLE) as served:
            yield served
        return
    port = free_port()
    log_path = tmp_path / "example.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLE / "app.py")],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PORT": str(port), "PYTHONUNBUFFERED": "1"},
        )
    served = Served("example", port, process, log_path)
    try:
        wait_until_serving(served)
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0


def test_login_page_static_files_json_and_the_chat(example: Served) -> None:
    status, page = example.get("/")
    assert status == 200 and b'action="/login"' in page
    assert example.get("/static/chat.js")[0] == 200
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        example.connect("/chat")
    assert refused.value.status_code == 401
    alice, bob = example.login("alice"), example.login("bob")
    assert json.loads(example.get("/api/me", alice)[1]) == {"user": "alice"}
    first = example.connect("/chat", alice)
    assert json.loads(first.recv()) == {"event": "joined", "user": "alice"}
    second = example.connect("/chat", bob)
    assert json.loads(first.recv()) == {"event": "joined", "user": "bob"}
    assert json.loads(second.recv()) == {"event": "joined", "user": "bob"}
    assert json.loads(example.get("/api/online", alice)[1]) == {"users": ["alice", "bob"]}
    second.send("hello alice")
    expected = {"event": "message", "user": "bob", "text": "hello alice"}
    assert json.loads(first.recv()) == expected and json.loads(second.recv()) == expected
    second.close()
    assert json.loads(first.recv()) == {"event": "left", "user": "bob"}
    first.close()
