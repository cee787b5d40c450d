"""The greenlets of a server's connections: the limit, the stop and what escapes, over real sockets."""

import logging
import socket
import time

import gevent
import pytest
import websocket
from conftest import handshake_request

import geventws
from geventws.http.connections import ConnectionGreenlets


def start_server(app, **options):
    server = geventws.Server(logging.getLogger("tests.connections"), **options)
    server.expose(("127.0.0.1", 0))
    server.start(app)
    return server, server.addresses[0][1]


def echo_endpoint(server):
    def handler(client, request, response):
        for message in client:
            client.send_text(str(message))

    return geventws.Websocket(server, None, None, handler)


def test_at_max_connections_the_next_one_waits_until_one_ends():
    server = geventws.Server(logging.getLogger("tests.connections"), max_connections=2)
    server.expose(("127.0.0.1", 0))
    server.start(echo_endpoint(server))
    port = server.addresses[0][1]
    try:
        first = websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=5)
        second = websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=5)
        waiting = socket.create_connection(("127.0.0.1", port), timeout=5)
        waiting.sendall(handshake_request(port))
        waiting.settimeout(0.5)
        with pytest.raises(TimeoutError):
            waiting.recv(1024)  # in the backlog: not accepted while two are open
        second.send("still served")
        assert second.recv() == "still served"
        first.close()
        waiting.settimeout(5)
        assert waiting.recv(1024).startswith(b"HTTP/1.1 101 ")
        waiting.close()
        second.close()
    finally:
        server.stop(timeout=2)


def test_stop_kills_a_connection_whose_handler_never_returns():
    ended = []

    def handler(client, request, response):
        try:
            gevent.sleep(60)  # deaf to the close: only a kill ends it
        finally:
            ended.append(True)

    server, port = start_server(geventws.Websocket(None, None, None, handler))
    deaf = websocket.create_connection(f"ws://127.0.0.1:{port}/", timeout=5)
    started = time.monotonic()
    server.stop(timeout=0.5)
    assert time.monotonic() - started < 3
    assert ended == [True]
    deaf.settimeout(5)
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        deaf.recv()  # the endpoint has no server to close it with 1001: the kill drops the connection
    deaf.close()


def test_an_error_escaping_a_connection_is_logged_and_the_others_go_on(caplog):
    def failing():
        raise RuntimeError("escaped")

    served = []
    connections = ConnectionGreenlets(None, logging.getLogger("tests.connections"))
    with caplog.at_level(logging.ERROR, "tests.connections"):
        connections.spawn(failing)
        connections.spawn(served.append, "served")
        assert connections.join(timeout=2)
    assert served == ["served"] and len(connections) == 0
    assert [record.getMessage() for record in caplog.records] == ["Unexpected error serving a connection"]
    assert caplog.records[0].exc_info[1].args == ("escaped",)


def test_join_and_kill_report_whether_every_connection_ended():
    connections = ConnectionGreenlets(1, logging.getLogger("tests.connections"))
    freed = []
    connections.rawlink(freed.append)
    connections.rawlink(freed.append)  # linked once however often linked
    sleeper = connections.spawn(gevent.sleep, 60)
    assert connections.full()
    assert not connections.join(timeout=0.1)
    assert connections.kill(timeout=2)
    assert sleeper.dead and len(connections) == 0 and not connections.full()
    assert freed == [connections]
