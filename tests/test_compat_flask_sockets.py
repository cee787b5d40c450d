"""A Flask-Sockets app (tests/compat_flask_sockets_app.py) on pywsgi with gevent-websocket's handler, under
gunicorn with the worker Flask-Sockets names, and under ``flask run`` (unpatched threads).

The original Flask-Sockets cannot run on Flask 3 (its README app fails at
import), so only the switched app is tested.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import websocket
from compat_flask_sockets_app import app
from gevent.pywsgi import WSGIServer
from servers import Served, close_code, flask_run, gunicorn

from geventws.compat.geventwebsocket.handler import WebSocketHandler

SERVERS = ["pywsgi", "gunicorn -k geventws.compat.flask_sockets.worker", "flask run"]


@pytest.fixture(scope="module", params=SERVERS)
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if request.param == "flask run":
        with flask_run(tmp_path_factory.mktemp("flask"), app="compat_flask_sockets_app:app") as running:
            yield running
        return
    if request.param.startswith("gunicorn"):
        arguments = request.param.split()[1:]
        with gunicorn(tmp_path_factory.mktemp("gunicorn"), *arguments, app="compat_flask_sockets_app:app") as running:
            yield running
        return
    server = WSGIServer(("127.0.0.1", 0), app, handler_class=WebSocketHandler, log=None)
    server.start()
    try:
        yield Served("pywsgi", server.server_port)
    finally:
        server.stop(timeout=1)


def test_plain_routes_of_the_blueprint(served: Served) -> None:
    assert served.get("/") == (200, b"Hello World!")


def test_echo_of_the_websocket_blueprint(served: Served) -> None:
    ws = served.connect("/ws/echo")
    ws.send("hello")
    assert ws.recv() == "hello"
    payload = b"\x00\xff" * 300_000
    ws.send_binary(payload)
    assert ws.recv_data() == (websocket.ABNF.OPCODE_BINARY, payload)
    ws.send_close(1000, b"")
    assert close_code(ws)[0] == 1000
    ws.shutdown()  # both close frames are through: drop TCP without waiting


def test_handler_sees_the_session(served: Served) -> None:
    cookie = served.login("ada")
    ws = served.connect("/ws/whoami", cookie=cookie)
    assert ws.recv() == "ada on /ws/whoami"
    assert close_code(ws) == (1000, "")  # the handler returned
    ws.shutdown()


def test_route_with_url_variables(served: Served) -> None:
    ws = served.connect("/room/lobby")
    assert ws.recv() == "room lobby"
    ws.close()


def test_bad_input_closes_without_a_traceback(served: Served) -> None:
    ws = served.connect("/ws/echo")
    ws.send(b"\xc3\x28", opcode=websocket.ABNF.OPCODE_TEXT)
    assert close_code(ws)[0] == 1007
    ws.shutdown()  # both close frames are through: drop TCP without waiting


def test_a_path_without_a_websocket_route(served: Served) -> None:
    if served.name.startswith("flask run"):  # the handshake reaches Flask, which refuses it
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            served.connect("/ws/nowhere")
        assert refused.value.status_code == 404
        return
    # gevent-websocket's handler upgraded before the app was asked: the app's refusal closes with 1008
    ws = served.connect("/ws/nowhere")
    assert close_code(ws) == (1008, "404 NOT FOUND")
    ws.shutdown()


def test_another_sites_page_is_refused(served: Served) -> None:
    """The layer shares geventws.flask's default: same origin only."""
    if served.name.startswith("flask run"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            served.connect("/ws/echo", origin="https://elsewhere.example")
        assert refused.value.status_code == 403
        return
    # gevent-websocket's handler (any origin, as the original) upgraded first; the route refuses
    ws = served.connect("/ws/echo", origin="https://elsewhere.example")
    assert close_code(ws) == (1008, "403 FORBIDDEN")
    ws.shutdown()


def test_the_server_logged_no_error(served: Served) -> None:
    """Run last for each server: nothing above left a traceback in gunicorn's log."""
    log = served.log()
    assert "Traceback" not in log and "[ERROR]" not in log, log
    if served.process is not None:
        assert '"GET /ws/echo HTTP/1.1" 101' in log
