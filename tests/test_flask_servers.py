"""The same Flask app with WebSocket routes, served by every server users run it with.

Our Server, gevent's plain pywsgi.WSGIServer, werkzeug's development server
(threads are greenlets in this patched process), and real gunicorn masters
with our worker (two processes) and with gunicorn's stock gevent workers, and
the thread servers, unpatched: ``flask run --debug`` (reloader and debugger)
and gunicorn's ``gthread`` worker (a thread per connection).
Each: plain HTTP, a logged-in handshake that sees the session, a refused
anonymous one, echo of text and of a 1 MiB binary message, 50 clients at once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import gevent
import gevent.pool
import pytest
import websocket
from flask_test_app import app
from servers import Served, flask_run, gunicorn, in_process

SERVERS = [
    "geventws",
    "pywsgi",
    "werkzeug",
    "gunicorn -k geventws.gunicorn.Worker -w 2",
    "gunicorn -k gevent",
    "gunicorn -k gevent_pywsgi",
    "flask run --debug",
    "gunicorn -k gthread --threads 60",
]


@pytest.fixture(scope="module", params=SERVERS)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    name = request.param
    if name.startswith("gunicorn"):
        with gunicorn(tmp_path_factory.mktemp("gunicorn"), *name.split()[1:]) as running:
            yield running
    elif name.startswith("flask run"):
        with flask_run(tmp_path_factory.mktemp("flask"), *name.split()[2:], app="flask_test_app:app") as running:
            yield running
    else:
        with in_process(name, app) as running:
            yield running


def test_plain_http_and_json_routes(served: Served) -> None:
    assert served.get("/") == (200, b"plain HTTP works")
    assert served.get("/api/me")[0] == 401
    cookie = served.login("alice")
    status, body = served.get("/api/me", cookie)
    assert status == 200 and json.loads(body)["user"] == "alice"  # (indented under --debug)


def test_logged_in_handshake_runs_in_the_request_context(served: Served) -> None:
    client = served.connect("/echo", served.login("alice"))
    try:
        assert client.recv().startswith("hello alice from /echo")
    finally:
        client.close()


def test_anonymous_handshake_gets_the_refusing_response(served: Served) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        served.connect("/echo")
    assert refused.value.status_code == 401
    assert b"Log in first" in refused.value.resp_body


def test_plain_request_to_a_websocket_route_is_told_to_upgrade(served: Served) -> None:
    status, body = served.get("/echo", served.login("alice"))
    assert status == 426
    assert b"Upgrade: websocket" in body


def test_echo_text_and_a_1_mib_binary_message(served: Served) -> None:
    client = served.connect("/echo", served.login("bob"))
    try:
        client.recv()
        client.send("ping ü")
        assert client.recv() == "ping ü"
        payload = os.urandom(1 << 20)
        client.send_binary(payload)
        assert client.recv() == payload
    finally:
        client.close()


def test_broadcast_reaches_the_clients_of_the_process(served: Served) -> None:
    cookie = served.login("carol")
    clients = [served.connect("/broadcast", cookie) for _ in range(4)]
    try:
        pids = [client.recv() for client in clients]
        sender = clients[0]
        peers = [client for client, pid in zip(clients, pids, strict=True) if pid == pids[0]]
        sender.send("hi all")
        for peer in peers:
            assert peer.recv() == "carol: hi all"
    finally:
        for client in clients:
            client.close()


def test_50_concurrent_clients(served: Served) -> None:
    cookie = served.login("dave")

    def converse(number: int) -> str:
        client = served.connect("/echo", cookie)
        try:
            client.recv()
            client.send(f"message {number}")
            return str(client.recv())
        finally:
            client.close()

    pool = gevent.pool.Pool(50)
    with gevent.Timeout(60):
        answers = pool.map(converse, range(50))
    assert answers == [f"message {number}" for number in range(50)]


def test_the_server_logged_no_error(served: Served) -> None:
    """Run last for each server: nothing above left a traceback or an error line in gunicorn's log."""
    log = served.log()
    assert "Traceback" not in log and "[ERROR]" not in log, log
    if served.process is not None:
        assert '"GET /echo HTTP/1.1" 101' in log  # the handshakes are in gunicorn's access log
