"""The server around the endpoint: routing, fallbacks, static files, stopping."""

import logging
import signal
import socket
import time
import urllib.request

import flask
import gevent
import pytest
from conftest import factory, raw_exchange
from websocket import ABNF

import geventws
from geventws import CloseCode


def chat_app(server, public_dir=None, fallback=None):
    def handler(client, request, response):
        client.send_text(f"welcome to {request.path}")
        for message in client:
            client.send_text(str(message).upper())

    router = geventws.Router()
    router.add_route("GET", "/broadcast", geventws.Websocket(server, None, None, handler))
    if fallback is not None:
        router.set_fallback(fallback)
    return router


def tiny_flask_app():
    app = flask.Flask("tiny")

    @app.get("/hello")
    def hello():
        return {"hello": "flask"}

    @app.post("/echo")
    def echo_body():
        return flask.request.get_data()

    return app


def test_websocket_route_and_flask_fallback_share_one_port(serve):
    running = serve(factory(lambda server: chat_app(server, fallback=tiny_flask_app())))
    with urllib.request.urlopen(running.http_url + "/hello", timeout=5) as reply:
        assert reply.status == 200
        assert reply.read() == b'{"hello":"flask"}\n'
    client = running.connect("/broadcast")
    assert client.recv() == "welcome to /broadcast"
    client.send("hi")
    assert client.recv() == "HI"
    client.close()
    request = urllib.request.Request(running.http_url + "/echo", data=b"posted", method="POST")
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.read() == b"posted"
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(running.http_url + "/missing", timeout=5)
    assert error.value.code == 404


def test_keep_alive_serves_several_requests_on_one_connection(serve):
    running = serve(factory(lambda server: chat_app(server, fallback=tiny_flask_app())))
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        reader = sock.makefile("rb")
        for _ in range(3):
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            status = reader.readline()
            assert status.startswith(b"HTTP/1.1 200")
            length = 0
            while (line := reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length"):
                    length = int(line.split(b":")[1])
            assert reader.read(length) == b'{"hello":"flask"}\n'


def test_router_without_fallback_answers_404_and_405(serve):
    running = serve(factory(chat_app))
    assert raw_exchange(running.port, b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0] == 404
    code, headers, _ = raw_exchange(
        running.port, b"POST /broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    assert code == 405
    assert "GET" in headers["allow"]


def test_route_arguments_reach_the_handler(serve):
    def handler(client, request, response):
        client.send_text(repr(request.environ["wsgiorg.routing_args"][1]))

    def app(server):
        router = geventws.Router()
        router.add_route("GET", "/rooms/<int:room>", geventws.Websocket(server, None, None, handler))
        return router

    running = serve(factory(app))
    client = running.connect("/rooms/42")
    assert client.recv() == "{'room': 42}"


def test_document_root_serves_files_and_refuses_escapes(serve, tmp_path):
    (tmp_path / "index.html").write_text("<h1>chat</h1>")
    (tmp_path / "app.js").write_text("console.log(1)")
    running = serve(factory(lambda server: chat_app(server, fallback=geventws.DocumentRoot(tmp_path))))
    with urllib.request.urlopen(running.http_url + "/", timeout=5) as reply:
        assert reply.read() == b"<h1>chat</h1>"
        assert reply.headers["Content-Type"].startswith("text/html")
    with urllib.request.urlopen(running.http_url + "/app.js", timeout=5) as reply:
        assert reply.read() == b"console.log(1)"
    for path in ("/../etc/passwd", "/%2e%2e/etc/passwd", "/missing.txt"):
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        assert raw_exchange(running.port, request)[0] == 404
    request = b"DELETE /app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert raw_exchange(running.port, request)[0] == 405


def test_stop_closes_every_client_with_1001_within_the_close_period(serve):
    def handler(client, request, response):
        for _ in client:
            pass

    running = serve(factory(lambda server: geventws.Websocket(server, None, None, handler)))
    clients = [running.connect() for _ in range(20)]
    # One peer that never answers the close: stop() must not wait for it beyond the close period.
    silent = running.connect()
    codes = []

    def watch(client):
        opcode, frame = client.recv_data_frame(control_frame=True)
        codes.append((opcode, int.from_bytes(frame.data[:2], "big"), frame.data[2:]))

    watchers = [gevent.spawn(watch, client) for client in clients]
    started = time.monotonic()
    running.server.stop(timeout=3)
    elapsed = time.monotonic() - started
    gevent.joinall(watchers, timeout=5)
    assert elapsed < 3.5
    assert codes == [(ABNF.OPCODE_CLOSE, CloseCode.GOING_AWAY, b"Server shutting down")] * 20
    silent.sock.close()
    with pytest.raises(OSError):
        running.connect()


def test_ipv6_and_ipv4_on_one_server():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    server = geventws.Server(logging.getLogger("tests.server"))
    server.expose(("127.0.0.1", 0))
    try:
        server.expose(("::1", 0))
        server.start(geventws.Websocket(server, None, None, lambda c, rq, rs: c.send_text("hi")))
    except OSError:
        pytest.skip("no IPv6 loopback")
    import websocket

    try:
        v4, v6 = server.addresses
        assert websocket.create_connection(f"ws://127.0.0.1:{v4[1]}/", timeout=5).recv() == "hi"
        assert websocket.create_connection(f"ws://[::1]:{v6[1]}/", timeout=5).recv() == "hi"
    finally:
        server.stop()


def test_unix_socket(tmp_path):
    path = str(tmp_path / "ws.sock")
    server = geventws.Server()
    server.expose("unix:" + path)
    server.start(geventws.Websocket(server, None, None, lambda c, rq, rs: c.send_text("over unix")))
    try:
        import websocket

        sock = socket.socket(socket.AF_UNIX)
        sock.connect(path)
        client = websocket.create_connection("ws://localhost/", socket=sock, timeout=5)
        assert client.recv() == "over unix"
    finally:
        server.stop()


def test_trap_signal_returns_the_signal_number():
    gevent.spawn_later(0.1, signal.raise_signal, signal.SIGUSR1)
    assert geventws.trap_signal([signal.SIGUSR1], timeout=5) == signal.SIGUSR1
    with pytest.raises(TimeoutError):
        geventws.trap_signal([signal.SIGUSR2], timeout=0.05)


def test_server_refuses_to_start_without_addresses():
    with pytest.raises(RuntimeError, match="expose"):
        geventws.Server().start(lambda environ, start_response: [])


def test_the_seeds_positional_forms_still_work_with_a_deprecation_warning(tmp_path):
    server = geventws.Server()
    with pytest.warns(DeprecationWarning, match="drop the server argument"):
        router = geventws.Router(server, None, None)
    with pytest.warns(DeprecationWarning, match="DocumentRoot"):
        root = geventws.DocumentRoot(server, None, tmp_path)
    with pytest.warns(DeprecationWarning, match="by keyword"):
        endpoint = geventws.Websocket(server, None, None, lambda c, rq, rs: None, None, geventws.Rfc6455ClientFactory())
    assert router.logger.name == "geventws.router" and root.root == str(tmp_path)
    assert endpoint.clients == frozenset()


STOP_WITH_OPEN_CONNECTIONS = """
import logging, sys
from gevent import monkey
monkey.patch_all()
import gevent, websocket
from geventws import Server, Websocket

def hold(client, request, response):
    client.receive()

server = Server(logging.getLogger("x"))
server.expose(("127.0.0.1", 0))
server.start(Websocket(server, None, None, hold))
port = server.addresses[0][1]
clients = [websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=5) for _ in range(3)]
gevent.sleep(0.1)
server.stop(timeout=0.1)  # the handlers are killed and their sockets closed
gevent.get_hub().loop.reinit()  # as after a fork: the loop re-registers every watched descriptor
gevent.sleep(0.1)
print("survived")
"""


def test_stopping_with_open_connections_leaves_no_closed_socket_watched():
    """The event loop must never watch a closed descriptor: libev aborts the whole process."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", STOP_WITH_OPEN_CONNECTIONS], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "survived"
