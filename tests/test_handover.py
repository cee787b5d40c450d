"""A bare Websocket endpoint mounted anywhere in a WSGI stack, under servers other than ours.

DispatcherMiddleware and a werkzeug Map in front of the endpoint; plain
gevent.pywsgi.WSGIServer and werkzeug's development server behind it.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import flask
import pytest
from servers import in_process
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.routing import Map, Rule

from geventws import Websocket, WebsocketClient


def echo(client: WebsocketClient, request: Any, response: Any) -> None:
    client.send_text(f"path {request.path} script {request.script_root}")
    for message in client:
        client.send_text(str(message))


def dispatcher_stack() -> Any:
    fallback = flask.Flask(__name__)

    @fallback.get("/")
    def index() -> str:
        return "flask"

    return DispatcherMiddleware(fallback, {"/ws": Websocket(None, None, None, echo)})


def map_stack() -> Any:
    endpoint = Websocket(None, None, None, echo)
    routes = Map([Rule("/", endpoint="index"), Rule("/rooms/<int:room>", endpoint="room")])

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        adapter = routes.bind_to_environ(environ)
        adapter.websocket = False  # one rule serves both kinds of request here
        try:
            name, _ = adapter.match()
        except HTTPException as error:
            return error(environ, start_response)
        if name == "room":
            return endpoint(environ, start_response)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"map"]

    return app


@pytest.mark.parametrize("server", ["pywsgi", "werkzeug", "geventws"])
@pytest.mark.parametrize(
    ("stack", "path", "plain"), [(dispatcher_stack, "/ws/x", b"flask"), (map_stack, "/rooms/3", b"map")]
)
def test_bare_endpoint_behind_middleware(server: str, stack: Any, path: str, plain: bytes) -> None:
    with in_process(server, stack()) as served:
        assert served.get("/") == (200, plain)
        client = served.connect(path)
        try:
            greeting = client.recv()
            assert greeting.startswith("path ")
            client.send("écho")
            assert client.recv() == "écho"
        finally:
            client.close()
        assert served.get("/") == (200, plain)  # the server goes on serving


def test_pywsgi_access_log_records_the_101(caplog: pytest.LogCaptureFixture) -> None:
    import websocket
    from gevent.pool import Pool
    from gevent.pywsgi import LoggingLogAdapter, WSGIServer

    access = logging.getLogger("tests.pywsgi.access")
    caplog.set_level(logging.INFO, logger=access.name)
    endpoint = Websocket(None, None, None, echo)
    # With a pool, stop() waits for the connection's greenlet, which logs when the connection ends.
    server = WSGIServer(("127.0.0.1", 0), endpoint, log=LoggingLogAdapter(access), spawn=Pool())
    server.start()
    try:
        client = websocket.create_connection(f"ws://127.0.0.1:{server.server_port}/", timeout=10)
        client.recv()
        client.close()
    finally:
        server.stop(timeout=2)
    lines = [record.getMessage() for record in caplog.records if record.name == access.name]
    assert any('"GET / HTTP/1.1" 101 ' in line for line in lines), lines
    assert not any(" 500 " in line or " 200 " in line for line in lines), lines


UNPATCHED = """
import logging, sys
logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
{setup}
"""


@pytest.mark.parametrize(
    ("setup", "logger"),
    [
        (
            "import geventws\nserver = geventws.Server(logging.getLogger('app'))\n"
            "server.expose(('127.0.0.1', 0))\nserver.start(lambda e, s: [])\nserver.stop()",
            "app WARNING",
        ),
        ("import flask\nfrom geventws.flask import Websockets\nWebsockets(flask.Flask('x'))", "geventws.flask WARNING"),
    ],
)
def test_unpatched_process_is_warned_once(setup: str, logger: str) -> None:
    code = UNPATCHED.format(setup=setup + "\n" + setup)  # twice: still one warning
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    warnings = [line for line in output.splitlines() if "not monkey-patched" in line]
    assert len(warnings) == 1, output
    assert warnings[0].startswith(logger)
    assert "socket, time, threading not patched" in warnings[0]
    assert "monkey.patch_all()" in warnings[0]


def test_patched_process_is_not_warned() -> None:
    code = "from gevent import monkey; monkey.patch_all()\n" + UNPATCHED.format(
        setup="import flask\nfrom geventws.flask import Websockets\nWebsockets(flask.Flask('x'))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "monkey-patched" not in output


UNPATCHED_WERKZEUG = """
import logging, ssl, sys, threading
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(name)s %(levelname)s %(message)s")
import websocket
from werkzeug.serving import make_server
from geventws import Websocket

def echo(client, request, response):
    for message in client:
        client.send_text(f"{threading.current_thread().name}: {message}")

tls = sys.argv[1:]
server = make_server("127.0.0.1", 0, Websocket(None, None, None, echo), threaded=True, ssl_context=tuple(tls) or None)
threading.Thread(target=server.serve_forever, daemon=True).start()
scheme, options = ("wss", {"sslopt": {"cert_reqs": ssl.CERT_NONE}}) if tls else ("ws", {})
try:
    clients = [websocket.create_connection(f"{scheme}://127.0.0.1:{server.server_port}/", timeout=10, **options)
               for _ in range(2)]
    for number, client in enumerate(clients):
        client.send(f"hello {number}")
        print("echo", client.recv(), flush=True)
    for client in clients:
        client.close()
except websocket.WebSocketBadStatusException as refused:
    print("status", refused.status_code, flush=True)
server.shutdown()
"""


def test_werkzeug_in_an_unpatched_process_serves_each_connection_in_a_thread() -> None:
    output = subprocess.run(
        [sys.executable, "-c", UNPATCHED_WERKZEUG], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    echoes = [line.split(": ") for line in output.splitlines() if line.startswith("echo ")]
    assert [message for _, message in echoes] == ["hello 0", "hello 1"], output
    assert echoes[0][0] != echoes[1][0]  # two threads
    assert "ERROR" not in output and "Traceback" not in output


def test_werkzeug_with_tls_in_an_unpatched_process_refuses_and_says_why(tmp_path: Path) -> None:
    import trustme

    certificate = trustme.CA().issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate.cert_chain_pems[0].write_to_path(str(certfile))
    certificate.private_key_pem.write_to_path(str(keyfile))
    output = subprocess.run(
        [sys.executable, "-c", UNPATCHED_WERKZEUG, str(certfile), str(keyfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "status 500" in output
    assert "werkzeug's development server serves this request in a thread, over TLS" in output
