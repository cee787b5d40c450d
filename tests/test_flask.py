"""The Flask extension: routes on apps and blueprints, Flask's dispatch around the handshake,
the request context for the whole connection, and per-route settings."""

from __future__ import annotations

import json
import logging
from typing import Any

import flask
import pytest
import websocket
from conftest import raw_exchange
from gevent.event import Event
from werkzeug.middleware.proxy_fix import ProxyFix

from geventws import Rfc6455ClientFactory, Rfc7692CompressionFactory, WebsocketClient
from geventws.flask import Websockets

#: websocket-client cannot inflate; the handlers' answers stay under the 64-byte compression threshold.
DEFLATE_OFFER = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10"


def make_app() -> flask.Flask:
    app = flask.Flask(__name__)
    app.secret_key = "test"
    return app


def test_init_app_blueprints_and_url_variables(serve: Any) -> None:
    ws = Websockets()
    rooms = flask.Blueprint("rooms", __name__, url_prefix="/rooms")

    @ws.route("/<int:room>", blueprint=rooms)
    def room(client: WebsocketClient, room: int) -> None:
        client.send_text(f"{room} {flask.url_for('rooms.room', room=room + 1)} {flask.request.blueprint}")

    @ws.route("/lobby")
    def lobby(client: WebsocketClient) -> None:
        client.send_text(f"lobby {flask.current_app.name} {flask.request.endpoint}")

    app = make_app()
    app.register_blueprint(rooms)
    ws.init_app(app)
    assert app.extensions["geventws"] is ws
    running = serve(app)
    client = running.connect("/rooms/7")
    assert client.recv() == "7 /rooms/8 rooms"
    client.close()
    client = running.connect("/lobby")
    assert client.recv() == f"lobby {app.name} lobby"
    client.close()


def test_before_request_refuses_with_its_response_and_teardown_runs_when_the_connection_ends(serve: Any) -> None:
    app = make_app()
    ws = Websockets(app)
    torn_down = Event()
    seen: dict[str, Any] = {}

    @app.before_request
    def require_token() -> Any:
        flask.g.token = flask.request.args.get("token")
        if flask.g.token != "secret":
            return flask.redirect("/login")
        return None

    @app.teardown_request
    def teardown(error: BaseException | None) -> None:
        if "client" in seen:
            seen["closed_before_teardown"] = seen["client"].is_closed
            torn_down.set()

    @ws.route("/feed")
    def feed(client: WebsocketClient) -> None:
        seen["client"] = client
        client.send_text(f"token {flask.g.token}")
        client.receive()

    running = serve(app)
    status, headers, _ = raw_exchange(running.port, _handshake(running.port, "/feed"))
    assert (status, headers["location"]) == (302, "/login")
    client = running.connect("/feed?token=secret")
    assert client.recv() == "token secret"
    assert not torn_down.is_set()  # the request context lives as long as the connection
    client.close()
    assert torn_down.wait(5)
    assert seen["closed_before_teardown"] is True


def test_after_request_headers_and_the_session_cookie_go_out_with_the_101(serve: Any) -> None:
    app = make_app()
    ws = Websockets(app)

    @app.after_request
    def stamp(response: flask.Response) -> flask.Response:
        response.headers["X-Stamp"] = "yes"
        return response

    @ws.route("/visit")
    def visit(client: WebsocketClient) -> None:
        client.send_text("hi")

    @app.before_request
    def count_visits() -> None:
        flask.session["visits"] = flask.session.get("visits", 0) + 1

    running = serve(app)
    client = running.connect("/visit")
    assert client.recv() == "hi"
    assert client.getheaders()["x-stamp"] == "yes"
    assert "session=" in client.getheaders()["set-cookie"]
    client.close()


def test_per_route_settings_override_the_extension_defaults(serve: Any) -> None:
    app = make_app()
    ws = Websockets(app, origins=["http://good.example"], subprotocols=["chat.v1"], compression=True)

    @ws.route("/default")
    def default(client: WebsocketClient) -> None:
        client.send_text(f"{client.subprotocol} {client.is_compression_enabled}")

    @ws.route(
        "/custom",
        origins=["http://other.example"],
        subprotocols=["chat.v2"],
        compression=False,
        client_factory=Rfc6455ClientFactory(message_size_limit=10),
    )
    def custom(client: WebsocketClient) -> None:
        client.send_text(f"{client.subprotocol} {client.is_compression_enabled}")
        client.receive()

    running = serve(app)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        running.connect("/default", origin="http://evil.example")
    assert refused.value.status_code == 403
    client = running.connect(
        "/default", origin="http://good.example", subprotocols=["chat.v2", "chat.v1"], header=[DEFLATE_OFFER]
    )
    assert client.recv() == "chat.v1 True"
    client.close()
    client = running.connect("/custom", origin="http://other.example", subprotocols=["chat.v2"], header=[DEFLATE_OFFER])
    assert client.recv() == "chat.v2 False"
    client.send("longer than ten bytes")
    assert client.recv_data(control_frame=True)[1][:2] == (1009).to_bytes(2, "big")
    client.close()


def test_explicit_compression_factory_is_used(serve: Any) -> None:
    app = make_app()
    ws = Websockets(app)

    @ws.route("/deflate", compression=Rfc7692CompressionFactory(server_max_window_bits=10))
    def deflate(client: WebsocketClient) -> None:
        client.send_text(str(client.is_compression_enabled))

    running = serve(app)
    client = running.connect("/deflate", header=[DEFLATE_OFFER])
    assert client.recv() == "True"  # shorter than the compression threshold: sent as is
    assert "server_max_window_bits=10" in client.getheaders()["sec-websocket-extensions"]
    client.close()


def test_handler_errors_close_with_1011_and_are_logged(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    ws = Websockets(app)

    @ws.route("/boom")
    def boom(client: WebsocketClient) -> None:
        raise RuntimeError("handler bug")

    running = serve(app)
    client = running.connect("/boom")
    opcode, data = client.recv_data(control_frame=True)
    assert int.from_bytes(data[:2], "big") == 1011
    client.close()
    # Logged before the 1011 is written: no wait needed.
    assert any("handler bug" in (record.exc_text or str(record.exc_info)) for record in caplog.records)


def test_post_to_a_websocket_route_is_405_and_plain_get_is_426(serve: Any) -> None:
    app = make_app()
    ws = Websockets(app)

    @ws.route("/only-ws")
    def only(client: WebsocketClient) -> None:
        pass

    running = serve(app)
    status, headers, body = raw_exchange(
        running.port, b"POST /only-ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    assert status == 405 and "GET" in headers["allow"]
    status, headers, body = raw_exchange(
        running.port, b"GET /only-ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 426 and headers["upgrade"] == "websocket"


def test_proxy_fix_address_reaches_the_client_and_the_access_log(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    app = make_app()
    ws = Websockets(app)

    @ws.route("/whoami")
    def whoami(client: WebsocketClient) -> None:
        client.send_text(json.dumps([client.remote_address[0], flask.request.remote_addr]))

    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    running = serve(app)
    caplog.set_level(logging.INFO, logger="tests.server.access")
    client = running.connect("/whoami", header=["X-Forwarded-For: 203.0.113.9"])
    assert json.loads(client.recv()) == ["203.0.113.9", "203.0.113.9"]
    client.close()
    direct = running.connect("/whoami")
    assert json.loads(direct.recv()) == ["127.0.0.1", "127.0.0.1"]
    direct.close()
    # Access lines of upgrades are written at the upgrade, before the handler runs.
    lines = [record.getMessage() for record in caplog.records if record.name == "tests.server.access"]
    assert any(line.startswith("203.0.113.9 ") and '"GET /whoami HTTP/1.1" 101' in line for line in lines), lines


def _handshake(port: int, path: str) -> bytes:
    from conftest import handshake_request

    return handshake_request(port, path=path)
