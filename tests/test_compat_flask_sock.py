"""A flask-sock app (tests/compat_flask_sock_app.py), imports switched, under the servers flask-sock users run.

Each behavioural test runs against geventws.compat.flask_sock and against
the original flask-sock (``COMPAT_ORIGINAL=1``); our answers to bad input
are checked against ours only.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
import websocket
from servers import Served, close_code, flask_run, gunicorn

SERVERS = ["flask run", "gunicorn -k gthread --threads 8", "gunicorn -k gevent"]
IMPLEMENTATIONS = ["geventws", "original"]
APP = "compat_flask_sock_app:app"


@pytest.fixture(scope="module", params=[(s, i) for s in SERVERS for i in IMPLEMENTATIONS], ids=lambda p: "-".join(p))
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    server, implementation = request.param
    env = {"COMPAT_ORIGINAL": "1"} if implementation == "original" else {}
    log_dir = tmp_path_factory.mktemp("served")
    if server.startswith("flask run"):
        context = flask_run(log_dir, *server.split()[2:], app=APP, env=env)
    else:
        # What is tested here is serving, not the graceful stop: SIGINT, and a worker that
        # still has threads (simple-websocket's) is killed by its master after a second.
        arguments = [*server.split()[1:], "--graceful-timeout", "1"]
        context = gunicorn(log_dir, *arguments, app=APP, env=env, stop_signal=signal.SIGINT)
    with context as running:
        running.extra["implementation"] = implementation
        yield running


@pytest.fixture
def ours(served: Served) -> Served:
    if served.extra["implementation"] != "geventws":
        pytest.skip("geventws's own answers")
    return served


def test_echo_and_plain_http(served: Served) -> None:
    assert served.get("/") == (200, b"flask-sock app")
    ws = served.connect("/echo")
    ws.send("héllo ☃")
    assert ws.recv() == "héllo ☃"
    payload = bytes(range(256)) * 4096
    ws.send_binary(payload)
    assert ws.recv_data() == (websocket.ABNF.OPCODE_BINARY, payload)
    ws.close()


def test_a_blueprint_route_with_url_variables(served: Served) -> None:
    ws = served.connect("/api/echo/3")
    ws.send("ab")
    assert ws.recv() == "ababab"
    assert close_code(ws) == (1000, "")
    ws.shutdown()


def test_subprotocols_of_sock_server_options(served: Served) -> None:
    ws = served.connect("/subprotocol", subprotocols=["other", "chat.v1", "chat.v2"])
    assert ws.getsubprotocol() == "chat.v1"  # the client's first supported one, as simple-websocket chooses
    assert ws.recv() == "speaking chat.v1"
    ws.close()


def test_receive_with_a_timeout(served: Served) -> None:
    ws = served.connect("/timeout")
    assert ws.recv() == "timed out"
    ws.send("late")
    assert ws.recv() == "then late"
    assert close_code(ws) == (1000, "")  # the handler returned
    ws.shutdown()


def test_close_with_reason_and_message(served: Served) -> None:
    ws = served.connect("/close")
    ws.send("go")
    assert close_code(ws) == (4002, "closing now")
    ws.shutdown()


def test_chat_sends_to_every_other_connection(served: Served) -> None:
    members = []
    for number in range(1, 4):
        ws = served.connect("/chat")
        assert ws.recv() == f"welcome {number}"
        members.append(ws)
    for index, ws in enumerate(members):
        ws.send(f"from {index}")
    for index, ws in enumerate(members):
        got = sorted(ws.recv() for _ in range(2))
        assert got == sorted(f"from {other}" for other in range(3) if other != index)
    for ws in members:
        ws.close()


def test_send_from_a_thread_of_the_app(served: Served) -> None:
    ws = served.connect("/thread")
    ws.send("ping")
    assert ws.recv() == "from a thread: ping"
    ws.send("thanks")
    assert ws.recv() == "handler got thanks"
    ws.close()


@pytest.mark.parametrize(
    ("send", "code"),
    [
        (lambda ws: ws.send(b"\xff\xfe", opcode=websocket.ABNF.OPCODE_TEXT), 1007),
        (lambda ws: ws.send_binary(b"x" * (2 * 1024 * 1024 + 1)), 1009),
        (lambda ws: ws.send_frame(websocket.ABNF(fin=1, rsv2=1, opcode=websocket.ABNF.OPCODE_TEXT, data="x")), 1002),
    ],
    ids=["invalid-utf8", "over-max_message_size", "protocol-error"],
)
def test_bad_input_gets_our_close_codes(ours: Served, send: object, code: int) -> None:
    ws = ours.connect("/echo")
    send(ws)  # type: ignore[operator]
    assert close_code(ws)[0] == code
    ws.shutdown()  # both close frames are through: drop TCP without waiting


def test_another_sites_page_is_refused(ours: Served) -> None:
    """The layer shares geventws.flask's default: same origin only (flask-sock accepts any)."""
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        ours.connect("/echo", origin="https://elsewhere.example")
    assert refused.value.status_code == 403


def test_plain_request_to_a_websocket_route_is_told_to_upgrade(ours: Served) -> None:
    assert ours.get("/echo")[0] == 426


def test_the_server_logged_no_error(served: Served) -> None:
    """Run last for each server: nothing above left a traceback in the server's log."""
    log = served.log()
    assert "Traceback" not in log and "[ERROR]" not in log, log
