"""gevent-websocket apps, imports switched to geventws.compat.geventwebsocket, on real servers.

The apps are written as gevent-websocket's README and chat example write
them.  Each behavioural test also runs against the original (installed from
PyPI by the test extra), except where the original is wrong, which the
xfail says.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import gevent
import pytest
import websocket
from gevent.pywsgi import WSGIServer
from servers import close_code

from geventws import Rfc6455ClientFactory

IMPLEMENTATIONS = ["geventws", "original"]
MALFORMED_CLOSE = "gevent-websocket puts a malformed close frame on the wire when a reason is given"


def load(implementation: str) -> types.SimpleNamespace:
    """The library's modules as an app imports them: geventwebsocket.X or geventws.compat.geventwebsocket.X."""
    package = "geventwebsocket" if implementation == "original" else "geventws.compat.geventwebsocket"
    modules = {name: importlib.import_module(f"{package}.{name}") for name in ("handler", "server", "resource")}
    modules["exceptions"] = importlib.import_module(f"{package}.exceptions")
    modules["root"] = importlib.import_module(package)
    return types.SimpleNamespace(**modules)


@pytest.fixture(params=IMPLEMENTATIONS)
def gws(request: pytest.FixtureRequest) -> types.SimpleNamespace:
    return load(request.param)


def echo_app(gws: types.SimpleNamespace) -> Any:
    """gevent-websocket's README app, with a few more paths."""
    WebSocketError = gws.exceptions.WebSocketError

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        ws = environ.get("wsgi.websocket")
        if ws is None:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"plain HTTP: " + environ["PATH_INFO"].encode()]
        path = environ["PATH_INFO"]
        if path == "/info":
            ws.send(json.dumps({"path": ws.path, "origin": ws.origin, "version": environ["wsgi.websocket_version"]}))
        elif path == "/close":
            ws.receive()
            ws.close(4001, "custom")
        elif path == "/wait-close":
            message = ws.receive()
            app.seen.append(message)
            app.done.set()
        else:
            try:
                while True:
                    message = ws.receive()
                    if message is None:
                        break
                    ws.send(message)
            except WebSocketError:
                pass
        return []

    app.seen = []
    app.done = threading.Event()
    return app


@contextmanager
def pywsgi(app: Any, handler_class: Any) -> Iterator[int]:
    server = WSGIServer(("127.0.0.1", 0), app, handler_class=handler_class, log=None)
    server.start()
    try:
        yield server.server_port
    finally:
        server.stop(timeout=1)


def connect(port: int, path: str = "/echo", **options: Any) -> websocket.WebSocket:
    options.setdefault("timeout", 10)
    return websocket.create_connection(f"ws://127.0.0.1:{port}{path}", **options)


def test_echo_text_utf8_and_binary(gws: types.SimpleNamespace) -> None:
    with pywsgi(echo_app(gws), gws.handler.WebSocketHandler) as port:
        ws = connect(port)
        ws.send("hello")
        assert ws.recv() == "hello"
        ws.send("héllo ☃ 🎉")
        assert ws.recv() == "héllo ☃ 🎉"
        payload = bytes(range(256)) * 4096  # 1 MiB
        ws.send_binary(payload)
        opcode, data = ws.recv_data()
        assert opcode == websocket.ABNF.OPCODE_BINARY
        assert data == payload
        ws.close()


def test_plain_http_on_the_same_port(gws: types.SimpleNamespace) -> None:
    import urllib.request

    with pywsgi(echo_app(gws), gws.handler.WebSocketHandler) as port:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/page", timeout=10) as reply:
            assert reply.status == 200
            assert reply.read() == b"plain HTTP: /page"
        ws = connect(port)  # and WebSocket beside it
        ws.send("still here")
        assert ws.recv() == "still here"
        ws.close()


def test_path_origin_and_version(gws: types.SimpleNamespace) -> None:
    with pywsgi(echo_app(gws), gws.handler.WebSocketHandler) as port:
        ws = connect(port, "/info", origin="https://app.example")
        assert json.loads(ws.recv()) == {"path": "/info", "origin": "https://app.example", "version": "13"}
        ws.close()


def test_returning_app_closes_with_1000(gws: types.SimpleNamespace, request: pytest.FixtureRequest) -> None:
    if "original" in request.node.name:
        request.applymarker(pytest.mark.xfail(reason=MALFORMED_CLOSE + " (1005: no code at all)", strict=True))
    with pywsgi(echo_app(gws), gws.handler.WebSocketHandler) as port:
        ws = connect(port, "/info")
        ws.recv()
        assert close_code(ws) == (1000, "")
        ws.shutdown()


def test_close_with_code_and_reason(gws: types.SimpleNamespace, request: pytest.FixtureRequest) -> None:
    if "original" in request.node.name:
        request.applymarker(pytest.mark.xfail(reason=MALFORMED_CLOSE, strict=True))
    with pywsgi(echo_app(gws), gws.handler.WebSocketHandler) as port:
        ws = connect(port, "/close")
        ws.send("close please")
        assert close_code(ws) == (4001, "custom")
        ws.shutdown()


def test_client_closing(gws: types.SimpleNamespace, request: pytest.FixtureRequest) -> None:
    if "original" in request.node.name:
        request.applymarker(pytest.mark.xfail(reason=MALFORMED_CLOSE + " (its echo of a close)", strict=True))
    app = echo_app(gws)
    with pywsgi(app, gws.handler.WebSocketHandler) as port:
        ws = connect(port, "/wait-close")
        ws.send_close(4000, b"bye")
        assert close_code(ws)[0] == 4000  # the echo (geventws echoes the code, not the reason)
        assert app.done.wait(10)
        assert app.seen == [None]
        ws.shutdown()


def test_twenty_concurrent_clients(gws: types.SimpleNamespace) -> None:
    with pywsgi(echo_app(gws), gws.handler.WebSocketHandler) as port:
        clients = [connect(port) for _ in range(20)]

        def talk(index: int, ws: websocket.WebSocket) -> list[str]:
            answers = []
            for round_ in range(5):
                ws.send(f"{index}:{round_}")
                answers.append(ws.recv())
            ws.close()
            return answers

        jobs = [gevent.spawn(talk, index, ws) for index, ws in enumerate(clients)]
        gevent.joinall(jobs, timeout=20, raise_error=True)
        assert [job.value for job in jobs] == [[f"{i}:{r}" for r in range(5)] for i in range(20)]


def chat_resource(gws: types.SimpleNamespace) -> Any:
    """gevent-websocket's chat example (examples/chat/chat.py), its printing left out."""

    class ChatApplication(gws.resource.WebSocketApplication):  # type: ignore[name-defined,misc]
        def on_message(self, message: Any) -> None:
            if message is None:
                return
            message = json.loads(message)
            if message["msg_type"] == "message":
                self.broadcast(message)
            elif message["msg_type"] == "update_clients":
                self.send_client_list(message)

        def send_client_list(self, message: Any) -> None:
            current_client = self.ws.handler.active_client
            current_client.nickname = message["nickname"]
            self.ws.send(
                json.dumps(
                    {
                        "msg_type": "update_clients",
                        "clients": [
                            getattr(client, "nickname", "anonymous")
                            for client in self.ws.handler.server.clients.values()
                        ],
                    }
                )
            )

        def broadcast(self, message: Any) -> None:
            for client in self.ws.handler.server.clients.values():
                client.ws.send(
                    json.dumps({"msg_type": "message", "nickname": message["nickname"], "message": message["message"]})
                )

        def on_close(self, reason: Any) -> None:
            pass

    def index(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/html")])
        return [b"<html>chat</html>"]

    return gws.resource.Resource([("^/chat", ChatApplication), ("^/.*", index)])


def test_websocket_server_chat(gws: types.SimpleNamespace) -> None:
    import urllib.request

    server = gws.server.WebSocketServer(("127.0.0.1", 0), chat_resource(gws), debug=False, log=None)
    server.start()
    try:
        port = server.server_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
            assert reply.read() == b"<html>chat</html>"
        clients = [connect(port, "/chat") for _ in range(5)]
        for index, ws in enumerate(clients):
            ws.send(json.dumps({"msg_type": "update_clients", "nickname": f"user{index}"}))
            listed = json.loads(ws.recv())
            assert listed["msg_type"] == "update_clients"
            named = [f"user{i}" for i in range(index + 1)]
            assert sorted(listed["clients"]) == sorted(named + ["anonymous"] * (4 - index))
        for index, ws in enumerate(clients):
            ws.send(json.dumps({"msg_type": "message", "nickname": f"user{index}", "message": f"hi {index}"}))
        for ws in clients:
            got = [json.loads(ws.recv()) for _ in range(5)]
            assert sorted(item["message"] for item in got) == [f"hi {i}" for i in range(5)]
        for ws in clients:
            ws.close()
    finally:
        server.stop(timeout=1)


# ---------------------------------------------------------------- geventws only: our answers to bad input


class SmallLimits(load("geventws").handler.WebSocketHandler):  # type: ignore[misc]
    client_factory = Rfc6455ClientFactory(message_size_limit=1024, rate_limit=None)


@pytest.mark.parametrize(
    ("send", "code"),
    [
        (lambda ws: ws.send(b"\xff\xfe invalid", opcode=websocket.ABNF.OPCODE_TEXT), 1007),
        (lambda ws: ws.send_binary(b"x" * 2048), 1009),
        (lambda ws: ws.send_frame(websocket.ABNF(fin=1, rsv1=1, opcode=websocket.ABNF.OPCODE_TEXT, data="x")), 1002),
    ],
    ids=["invalid-utf8", "over-the-limit", "protocol-error"],
)
def test_bad_input_gets_our_close_codes(send: Any, code: int, caplog: pytest.LogCaptureFixture) -> None:
    gws = load("geventws")
    with caplog.at_level(logging.INFO), pywsgi(echo_app(gws), SmallLimits) as port:
        ws = connect(port)
        ws.send("fine")
        assert ws.recv() == "fine"
        send(ws)
        assert close_code(ws)[0] == code
        ws.shutdown()  # both close frames are through: drop TCP without waiting
        with gevent.Timeout(5):
            while not any("closed by the server" in r.getMessage() for r in caplog.records):
                gevent.sleep(0.01)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def test_refused_handshakes_get_our_answers() -> None:
    from conftest import handshake_request, raw_exchange

    gws = load("geventws")
    with pywsgi(echo_app(gws), gws.handler.WebSocketHandler) as port:
        status, headers, _ = raw_exchange(port, handshake_request(port, headers={"Sec-WebSocket-Version": "8"}))
        assert status in (400, 426)
        assert headers["sec-websocket-version"] == "13"
        status, _, _ = raw_exchange(port, handshake_request(port, headers={"Sec-WebSocket-Key": "short"}))
        assert status == 400
