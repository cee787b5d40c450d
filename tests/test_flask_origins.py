"""Same origin by default for Flask routes: another site's page cannot connect with the user's cookies.

A route accepts the app's own origin (its scheme and Host, as the app sees
them: after ProxyFix behind a proxy) and handshakes without ``Origin``; every
other origin gets 403 before the handler runs, and one log line names the
option that would allow it.  The bare ``Websocket`` endpoint accepts any
origin unless given an origin-checking acceptor.
"""

from __future__ import annotations

import logging
from typing import Any

import flask
import pytest
import websocket
from conftest import factory, handshake_request, raw_exchange
from werkzeug.middleware.proxy_fix import ProxyFix

import geventws
from geventws import SameOriginAcceptor, WebsocketClient
from geventws.flask import Websockets
from geventws.http.acceptor import normalize_origin


def chat_app(**options: Any) -> tuple[flask.Flask, list[str]]:
    """``/chat`` answers "hello"; ``/open`` allows any origin; the handler records each connection it ran for."""
    app = flask.Flask(__name__)
    app.secret_key = "test"
    ws = Websockets(app, **options)
    ran: list[str] = []

    @ws.route("/chat")
    def chat(client: WebsocketClient) -> None:
        ran.append("chat")
        client.send_text("hello")

    @ws.route("/open", origins="*")
    def open_to_all(client: WebsocketClient) -> None:
        ran.append("open")
        client.send_text("hello")

    return app, ran


def status_of(port: int, path: str = "/chat", **headers: str) -> int:
    status, _, _ = raw_exchange(port, handshake_request(port, path=path, headers=headers), read_until_close=False)
    return status


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "geventws.flask"]


def test_the_apps_own_origin_and_no_origin_are_accepted(serve: Any) -> None:
    app, ran = chat_app()
    running = serve(app)
    own = f"http://127.0.0.1:{running.port}"
    for origin in (own, own + "/"):
        client = running.connect("/chat", origin=origin)
        assert client.recv() == "hello"
        client.close()
    client = running.connect("/chat", suppress_origin=True)  # not a browser
    assert client.recv() == "hello"
    client.close()
    assert ran == ["chat"] * 3


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "null",
        "http://127.0.0.1.evil.example:{port}",
        "https://127.0.0.1:{port}",  # the right host with the wrong scheme
        "http://127.0.0.1:{other_port}",
        "http://127.0.0.1",  # the app is not on port 80
        "http://127.0.0.1:{port}.evil.example",
        "http://user@127.0.0.1:{port}",
        "http://127.0.0.1:{port}/path",
        "",
    ],
)
def test_other_origins_are_refused_with_403_before_the_handler_and_one_log_line(
    serve: Any, caplog: pytest.LogCaptureFixture, origin: str
) -> None:
    app, ran = chat_app()
    running = serve(app)
    origin = origin.format(port=running.port, other_port=running.port + 1)
    caplog.set_level(logging.WARNING, logger="geventws.flask")
    assert status_of(running.port, Origin=origin) == 403
    assert ran == []
    [line] = refusals(caplog)
    assert f"Origin {origin!r} is not this site's (http://127.0.0.1:{running.port})" in line
    assert f"allow it with origins=[{origin!r}]" in line and 'origins="*"' in line


def test_default_ports_are_the_same_origin(serve: Any) -> None:
    app, _ = chat_app()
    running = serve(app)
    assert status_of(running.port, Host="chat.example:80", Origin="http://chat.example") == 101
    assert status_of(running.port, Host="chat.example", Origin="http://chat.example:80") == 101
    assert status_of(running.port, Host="Chat.Example:8080", Origin="HTTP://CHAT.example:8080") == 101
    assert status_of(running.port, Host="chat.example:8080", Origin="http://chat.example") == 403


def test_behind_a_proxy_the_origin_is_the_one_proxyfix_shows_the_app(serve: Any) -> None:
    app, ran = chat_app()
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    running = serve(app)
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "chat.example:8443"}
    assert status_of(running.port, Origin="https://chat.example:8443", **forwarded) == 101
    assert status_of(running.port, Origin=f"http://127.0.0.1:{running.port}", **forwarded) == 403
    assert status_of(running.port, Origin="http://chat.example:8443", **forwarded) == 403
    assert ran == ["chat"]


def test_origins_allow_other_sites_on_the_extension_and_per_route(serve: Any) -> None:
    app, ran = chat_app(origins=["https://partner.example"])
    running = serve(app)
    assert status_of(running.port, Origin="https://partner.example") == 101
    assert status_of(running.port, Origin="https://PARTNER.example:443") == 101
    assert status_of(running.port, Origin=f"http://127.0.0.1:{running.port}") == 101  # its own pages still can
    assert status_of(running.port, Origin="https://evil.example") == 403
    assert status_of(running.port, "/open", Origin="https://evil.example") == 101  # origins="*"
    assert status_of(running.port, "/open", Origin="null") == 101
    assert ran == ["chat"] * 3 + ["open"] * 2


def test_the_bare_endpoint_accepts_any_origin_and_same_origin_acceptor_restricts_it(serve: Any) -> None:
    def hello(client: WebsocketClient, request: Any, response: Any) -> None:
        client.send_text("hello")

    @factory
    def app(server: geventws.Server) -> geventws.Router:
        router = geventws.Router()
        router.add_route("GET", "/any", geventws.Websocket(server, None, None, hello))
        router.add_route("GET", "/same", geventws.Websocket(server, None, SameOriginAcceptor(), hello))
        return router

    running = serve(app)
    assert status_of(running.port, "/any", Origin="https://evil.example") == 101
    assert status_of(running.port, "/same", Origin="https://evil.example") == 403
    assert status_of(running.port, "/same", Origin=f"http://127.0.0.1:{running.port}") == 101
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        running.connect("/same", origin="null")
    assert refused.value.status_code == 403


@pytest.mark.parametrize(
    ("origin", "normalized"),
    [
        ("http://a.example", "http://a.example"),
        ("HTTP://A.Example:80", "http://a.example"),
        ("https://a.example:443/", "https://a.example"),
        ("https://a.example:8443", "https://a.example:8443"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("wss://a.example", "https://a.example"),
        ("null", None),
        ("file://", None),
        ("ftp://a.example", None),
        ("http://a.example:99999", None),
        ("http://a.example:1x", None),
        ("http://u:p@a.example", None),
        ("http://a.example/x", None),
        ("http://a.example?q", None),
        ("", None),
    ],
)
def test_normalize_origin(origin: str, normalized: str | None) -> None:
    assert normalize_origin(origin) == normalized
