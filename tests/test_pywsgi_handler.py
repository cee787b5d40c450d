"""Our pywsgi request handler: the environ it builds, and what an upgrade leaves of the request."""

from __future__ import annotations

import gc
import inspect
import io
import logging
import socket
from typing import Any

import pytest
import websocket
from conftest import factory, handshake_request, raw_exchange
from gevent.pywsgi import WSGIHandler, WSGIServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_request_head import HANDSHAKE, PLAIN_HEADS, well_formed_heads
from werkzeug.middleware.proxy_fix import ProxyFix

import geventws
from geventws.http import pywsgi_handler
from geventws.http.pywsgi_handler import WebsocketWSGIHandler
from geventws.http.request_head import BadRequestHead, parse_request_head
from geventws.http.transport import TRANSPORT_KEY, Transport


class PywsgiEnviron(WebsocketWSGIHandler):
    """The environ as pywsgi's own ``get_environ`` builds it from the same parsed head: the reference."""

    def _headers(self) -> Any:
        for name, value in self.headers.headers:
            if "_" in name:
                continue
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                yield "HTTP_" + key, value


def environ_of(handler_class: type[WebsocketWSGIHandler], head: bytes, server: WSGIServer) -> dict[str, Any]:
    near, far = socket.socketpair()
    with near, far:
        handler = handler_class(near, ("10.0.0.7", 51234), server)
        handler.read_request(head.split(b"\n", 1)[0].decode("latin-1") + "\n")  # as pywsgi reads it
        environ = WSGIHandler.get_environ(handler) if handler_class is PywsgiEnviron else handler.get_environ()
        handler.rfile.close()
    objects = ("wsgi.input", "wsgi.input_terminated", TRANSPORT_KEY)
    return {key: value for key, value in environ.items() if key not in objects}


def parsed_heads(head: bytes) -> Any:
    try:
        parse_request_head(head)
    except BadRequestHead:
        return None
    return head


@pytest.fixture(scope="module")
def wsgi_server() -> WSGIServer:
    return WSGIServer(("127.0.0.1", 0), lambda environ, start_response: [])


COOKIES = b"GET /a%20b?x=1&y=%20 HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nX-Twice: 1\r\ncookie: b=2\r\nx-twice: 2\r\n\r\n"
BODY = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX_Sneaky: 1\r\n\r\n"


@pytest.mark.parametrize("head", [*PLAIN_HEADS, COOKIES, BODY], ids=range(len(PLAIN_HEADS) + 2))
def test_the_environ_is_the_one_pywsgi_builds(head: bytes, wsgi_server: WSGIServer, monkeypatch: Any) -> None:
    monkeypatch.setattr(WebsocketWSGIHandler, "_read_head", lambda self, line: head)
    ours = environ_of(WebsocketWSGIHandler, head, wsgi_server)
    assert ours == environ_of(PywsgiEnviron, head, wsgi_server)
    assert ours["REMOTE_ADDR"] == "10.0.0.7"


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(head=well_formed_heads().map(parsed_heads).filter(bool))
def test_any_parsed_head_gives_the_environ_pywsgi_builds(head: bytes, wsgi_server: WSGIServer) -> None:
    original = WebsocketWSGIHandler._read_head
    WebsocketWSGIHandler._read_head = lambda self, line: head  # type: ignore[method-assign]
    try:
        assert environ_of(WebsocketWSGIHandler, head, wsgi_server) == environ_of(PywsgiEnviron, head, wsgi_server)
    finally:
        WebsocketWSGIHandler._read_head = original  # type: ignore[method-assign]


# What an upgrade leaves: the handler runs from the connection's frame when nothing wraps the endpoint.


def frames_seen(client: Any, request: Any, response: Any) -> None:
    names = [frame.function for frame in inspect.stack()]
    client.send_text(",".join(names))
    environ = request.environ
    body = environ["wsgi.input"].read() + request.get_data()
    client.send_text(f"{environ['PATH_INFO']} {request.headers['Upgrade']} {request.args.get('q')} {body!r}")
    for message in client:
        client.send_text(str(message))


def handler_frames(url: str) -> tuple[list[str], str]:
    client = websocket.create_connection(url, timeout=10)
    try:
        names = client.recv().split(",")
        seen = client.recv()
        client.send("still open")
        assert client.recv() == "still open"
        return names, seen
    finally:
        client.close()


def test_a_directly_served_endpoint_runs_its_handler_after_returning_to_the_server(serve: Any) -> None:
    running = serve(factory(lambda server: geventws.Websocket(server, None, None, frames_seen)))
    names, seen = handler_frames(running.url + "/ws?q=1")
    assert "frames_seen" in names and "_serve" in names
    assert "run_application" not in names and "__call__" not in names, names
    assert "handle_one_request" not in names and "serve_upgraded" in names, names
    assert seen == "/ws websocket 1 b''"


def test_a_routed_endpoint_runs_its_handler_after_returning_to_the_server(serve: Any) -> None:
    def app(server: geventws.Server) -> geventws.Router:
        router = geventws.Router()
        router.add_route("GET", "/ws", geventws.Websocket(server, None, None, frames_seen))
        return router

    names, seen = handler_frames(serve(factory(app)).url + "/ws?q=2")
    assert "run_application" not in names and "_dispatch" not in names, names
    assert seen == "/ws websocket 2 b''"


def test_behind_middleware_the_handler_runs_inside_the_application(serve: Any) -> None:
    running = serve(factory(lambda server: ProxyFix(geventws.Websocket(server, None, None, frames_seen))))
    names, seen = handler_frames(running.url + "/ws?q=3")
    assert "run_application" in names, names
    assert seen == "/ws websocket 3 b''"


def test_an_idle_upgraded_connection_keeps_no_request_head(serve: Any) -> None:
    running = serve(factory(lambda server: geventws.Websocket(server, None, None, frames_seen)))
    client = websocket.create_connection(running.url + "/", timeout=10)
    try:
        client.recv(), client.recv()
        gc.collect()
        # The request handler itself is gone: the server serves the connection once it returned.
        assert not [o for o in gc.get_objects() if isinstance(o, WebsocketWSGIHandler)]
        assert not [o for o in gc.get_objects() if isinstance(o, Transport)]
    finally:
        client.close()


def test_the_101_has_the_acceptors_headers_and_a_date(serve: Any) -> None:
    running = serve(factory(lambda server: geventws.Websocket(server, None, None, frames_seen)))
    status, headers, _ = raw_exchange(running.port, handshake_request(running.port), read_until_close=False)
    assert status == 101
    assert headers["upgrade"] == "websocket" and headers["connection"] == "Upgrade"
    assert headers["date"].endswith(" GMT")
    assert "content-type" not in headers and "content-length" not in headers


def test_the_access_log_records_the_101_when_enabled_and_costs_nothing_when_not(serve: Any, caplog: Any) -> None:
    running = serve(factory(lambda server: geventws.Websocket(server, None, None, frames_seen)))
    caplog.set_level(logging.WARNING, "tests.server.access")
    handler_frames(running.url + "/quiet")
    caplog.set_level(logging.INFO, "tests.server.access")
    handler_frames(running.url + "/heard")
    lines = [r.getMessage() for r in caplog.records if r.name == "tests.server.access"]
    assert any('"GET /heard HTTP/1.1" 101 ' in line for line in lines), lines
    assert not any("/quiet" in line for line in lines), lines


def test_a_head_sent_with_the_first_frame_keeps_the_frame(serve: Any) -> None:
    running = serve(factory(lambda server: geventws.Websocket(server, None, None, frames_seen)))
    frame = bytes([0x81, 0x80 | 5]) + b"\x00\x00\x00\x00" + b"early"
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(HANDSHAKE.replace(b"/chat?room=1", b"/") + frame)
        data = b""
        while data.count(b"early") < 1:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk


def plain(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


def test_an_upgrade_after_a_plain_request_on_the_same_connection(serve: Any) -> None:
    def app(server: geventws.Server) -> geventws.Router:
        router = geventws.Router()
        router.add_route("GET", "/ws", geventws.Websocket(server, None, None, frames_seen))
        router.set_fallback(plain)
        return router

    running = serve(factory(app))
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"ok"):
            data += sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 200 ")
        sock.sendall(handshake_request(running.port, path="/ws?q=4"))
        data = b""
        while b"/ws websocket 4" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        assert data.startswith(b"HTTP/1.1 101 ")


FIELD_PIECES = [b"Host: x\r\n", b"X-A: 1\n", b"\r\n", b"\n", b"\r", b"X-B: \r\r\n", b"a" * 40, b"\r\n\r\n"]


@settings(max_examples=300, deadline=None)
@given(
    rest=st.lists(st.one_of(st.sampled_from(FIELD_PIECES), st.binary(max_size=6)), max_size=12).map(b"".join),
    limit=st.sampled_from([16, 64, 16 * 1024]),
    fields=st.sampled_from([1, 2, 100]),
)
def test_a_buffered_head_is_taken_whole_exactly_as_line_by_line(rest: bytes, limit: int, fields: int) -> None:
    """Taking the head from the buffer at once gives what reading it line by line gives, limits and errors included."""
    outcomes = []
    for whole in (True, False):
        near, far = socket.socketpair()
        with near, far:
            server = type("S", (), {"max_header_size": limit})()
            handler = WebsocketWSGIHandler(near, ("127.0.0.1", 1), server, rfile=io.BufferedReader(io.BytesIO(rest)))
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(pywsgi_handler, "MAX_HEADER_FIELDS", fields)
                if not whole:
                    patch.setattr(pywsgi_handler, "_whole_fields", lambda buffered, limit: b"")
                try:
                    outcome: Any = handler._read_head("GET / HTTP/1.1\r\n")
                except (BadRequestHead, ConnectionResetError) as error:
                    outcome = (type(error), getattr(error, "status", None))
            outcomes.append((outcome, handler.rfile.read()))
    assert outcomes[0] == outcomes[1]


def test_an_error_after_the_upgrade_is_logged_not_printed(serve: Any, caplog: Any, capfd: Any) -> None:
    def app(server: geventws.Server) -> geventws.Websocket:
        endpoint = geventws.Websocket(server, None, None, frames_seen)
        endpoint._serve = lambda *args: 1 / 0  # type: ignore[method-assign]
        return endpoint

    running = serve(factory(app))
    status, _, _ = raw_exchange(running.port, handshake_request(running.port), read_until_close=True)
    assert status == 101
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and errors[0].getMessage().startswith("Error serving the upgraded connection from 127.0.0.1")
    assert "Traceback" not in capfd.readouterr().err
