"""The opening handshake: every refusal is a real HTTP response with the right status."""

import base64

import gevent.event
import pytest
import websocket
import werkzeug.wrappers
from conftest import factory, handshake_request, raw_exchange

import geventws


@pytest.mark.parametrize(
    ("kwargs", "status", "header"),
    [
        ({"method": "POST"}, 405, ("allow", "GET")),
        ({"version": "HTTP/1.0"}, 505, None),
        ({"body": b"hello"}, 400, None),
        ({"omit": ("Upgrade",)}, 426, ("upgrade", "websocket")),
        ({"headers": {"Upgrade": "h2c"}}, 426, None),
        ({"omit": ("Connection",)}, 426, None),
        ({"headers": {"Connection": "keep-alive"}}, 426, None),
        ({"omit": ("Sec-WebSocket-Key",)}, 400, None),
        ({"headers": {"Sec-WebSocket-Key": "not base64!"}}, 400, None),
        ({"headers": {"Sec-WebSocket-Key": base64.b64encode(b"x" * 15).decode()}}, 400, None),
        ({"headers": {"Sec-WebSocket-Version": "8"}}, 426, ("sec-websocket-version", "13")),
        ({"omit": ("Sec-WebSocket-Version",)}, 400, ("sec-websocket-version", "13")),
    ],
    ids=[
        "not-get",
        "http-1.0",
        "body",
        "no-upgrade",
        "wrong-upgrade",
        "no-connection",
        "connection-not-upgrade",
        "no-key",
        "key-not-base64",
        "key-15-bytes",
        "version-8",
        "no-version",
    ],
)
def test_invalid_handshakes_get_specific_http_errors(echo, kwargs, status, header):
    code, headers, body = raw_exchange(echo.port, handshake_request(echo.port, **kwargs))
    assert code == status
    assert headers["connection"] == "close"
    assert body, "a refusal carries a body explaining it"
    if header:
        assert headers[header[0]] == header[1]


def test_valid_handshake_answers_101_with_accept_key(echo):
    key = base64.b64encode(b"0123456789abcdef").decode()
    request = handshake_request(echo.port, headers={"Sec-WebSocket-Key": key, "Connection": "keep-alive, Upgrade"})
    code, headers, _ = raw_exchange(echo.port, request, read_until_close=False)
    assert code == 101
    assert headers["upgrade"] == "websocket"
    assert headers["sec-websocket-accept"] == geventws.http.acceptor.accept_key(key)
    assert "content-type" not in headers


def test_the_handler_gets_the_101_without_body_headers(serve):
    seen = gevent.event.AsyncResult()
    running = serve(factory(lambda server: geventws.Websocket(server, None, None, lambda *args: seen.set(args[2]))))
    running.connect().close()
    response = seen.get(timeout=5)
    assert (response.status_code, response.status) == (101, "101 SWITCHING PROTOCOLS")
    assert "Content-Type" not in response.headers
    assert response.headers["Upgrade"] == "websocket"
    assert list(response.response) == []


def test_the_101_is_what_werkzeugs_own_init_makes():
    # The 101 sets werkzeug's attributes itself (its __init__ raises and catches a
    # KeyError looking for a Content-Type): they must be the very ones werkzeug sets.
    ours = geventws.http.acceptor._SwitchingProtocols()
    theirs = geventws.http.acceptor._SwitchingProtocols.__new__(geventws.http.acceptor._SwitchingProtocols)
    werkzeug.wrappers.Response.__init__(theirs, (), "101 SWITCHING PROTOCOLS")
    assert vars(ours) == vars(theirs)
    assert type(ours.headers) is type(theirs.headers)
    ours.headers.add("Upgrade", "websocket")
    assert ours.get_wsgi_headers({"SERVER_NAME": "x"}).to_wsgi_list() == [("Upgrade", "websocket")]


@pytest.mark.parametrize(
    ("upgrade", "connection", "status"),
    [
        ("WebSocket", "keep-alive, UPGRADE", 101),
        ("h2c, websocket", "Upgrade", 101),
        ("websockets", "Upgrade", 426),
        ("websocket", "upgrades", 426),
        ("", "Upgrade", 426),
    ],
)
def test_upgrade_tokens_match_whole_and_ignore_case(echo, upgrade, connection, status):
    request = handshake_request(echo.port, headers={"Upgrade": upgrade, "Connection": connection})
    code, _, _ = raw_exchange(echo.port, request, read_until_close=status != 101)
    assert code == status


def test_accept_key_matches_rfc_example():
    # RFC 6455 section 1.3
    assert geventws.http.acceptor.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def origin_app(server):
    acceptor = geventws.AllowOriginAcceptor(["https://example.com", "http://localhost:1337"])
    return geventws.Websocket(server, None, acceptor, lambda client, request, response: None)


def test_allowed_origin_is_accepted(serve):
    running = serve(factory(origin_app))
    client = running.connect(origin="https://example.com")
    assert client.getstatus() == 101
    client.close()


@pytest.mark.parametrize("origin", [None, "https://evil.example", "null"])
def test_other_or_missing_origin_is_forbidden(serve, origin):
    running = serve(factory(origin_app))
    headers = {"Origin": origin} if origin else {}
    code, _, body = raw_exchange(running.port, handshake_request(running.port, headers=headers))
    assert code == 403
    assert b"Origin forbidden" in body


def subprotocol_app(subprotocols):
    def handler(client, request, response):
        client.send_text(repr(client.subprotocol))

    return factory(lambda server: geventws.Websocket(server, None, geventws.Rfc6455Acceptor(subprotocols), handler))


def test_subprotocol_is_chosen_by_server_preference(serve):
    running = serve(subprotocol_app(["chat.v2", "chat.v1"]))
    client = running.connect(subprotocols=["chat.v1", "chat.v2"])
    assert client.getsubprotocol() == "chat.v2"
    assert client.recv() == "'chat.v2'"
    client.close()


def test_no_common_subprotocol_connects_without_one(serve):
    running = serve(subprotocol_app(["chat.v2"]))
    code, headers, _ = raw_exchange(
        running.port, handshake_request(running.port, headers={"Sec-WebSocket-Protocol": "mqtt"}), False
    )
    assert code == 101
    assert "sec-websocket-protocol" not in headers


def test_subprotocol_selector_callable(serve):
    def select(request, offered):
        return offered[-1] if request.args.get("last") else None

    running = serve(subprotocol_app(select))
    client = running.connect("/?last=1", subprotocols=["a", "b"])
    assert client.recv() == "'b'"
    client.close()
    code, headers, _ = raw_exchange(
        running.port, handshake_request(running.port, headers={"Sec-WebSocket-Protocol": "a, b"}), False
    )
    assert code == 101
    assert "sec-websocket-protocol" not in headers


def test_rejection_keeps_server_running(echo):
    for _ in range(3):
        assert raw_exchange(echo.port, handshake_request(echo.port, method="PUT"))[0] == 405
    client = echo.connect()
    client.send("still here")
    assert client.recv() == "still here"
    client.close()


def test_websocket_client_gets_bad_status_on_refusal(serve):
    running = serve(factory(origin_app))
    with pytest.raises(websocket.WebSocketBadStatusException) as error:
        running.connect(origin="https://evil.example")
    assert error.value.status_code == 403
