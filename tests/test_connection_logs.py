"""Connection logs: what an operator reads when a WebSocket opens, closes, is throttled or stops answering."""

import logging
import re

import gevent
import pytest
from gevent.event import Event

import geventws
from geventws.testing import serve

LOGGER = "tests.chat"


class Awaited(logging.Handler):
    """Wakes a waiting test when a record whose message contains ``text`` is logged."""

    def __init__(self, logger_name, text):
        super().__init__(logging.DEBUG)
        self.text = text
        self.records = []
        self.seen = Event()
        self.logger = logging.getLogger(logger_name)

    def emit(self, record):
        if self.text in record.getMessage():
            self.records.append(record)
            self.seen.set()

    def __enter__(self):
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc_info):
        self.logger.removeHandler(self)

    def wait(self, timeout=5):
        assert self.seen.wait(timeout), f"no log line containing {self.text!r}"
        return self.records[-1].getMessage()


def echo(client, request, response):
    for message in client:
        client.send_text(str(message))


def messages(caplog, name):
    return [record.getMessage() for record in caplog.records if record.name == name]


def test_open_and_close_lines_tell_who_where_how_and_how_much(caplog):
    caplog.set_level(logging.INFO)
    endpoint = geventws.Websocket(
        None,
        logging.getLogger(LOGGER),
        geventws.Rfc6455Acceptor(subprotocols=["chat"]),
        echo,
        compression_factory=geventws.Rfc7692CompressionFactory(),
    )
    router = geventws.Router()
    router.add_route("GET", "/rooms/lobby", endpoint)
    with serve(router) as running, Awaited(LOGGER, "closed by") as closed:
        client = running.connect("/rooms/lobby", subprotocols=["chat"])
        local_port = client.sock.getsockname()[1]
        for text in ("hello", "world"):
            client.send(text)  # 5-byte text frames: 2 header + 4 mask + 5 payload = 11 bytes each
            assert client.recv() == text  # echoed: 2 header + 5 payload = 7 bytes each
        client.close(1000, "bye")  # 2 + 4 + 2 code + 3 reason = 11 bytes; echoed with the code only: 2 + 2
        line = closed.wait()

    opened = [message for message in messages(caplog, LOGGER) if "accepted" in message]
    assert len(opened) == 1
    match = re.fullmatch(r"WebSocket #(\d+) accepted from 127\.0\.0\.1:(\d+) on (\S+) \((.*)\)", opened[0])
    assert match, opened[0]
    client_id = match[1]
    assert int(match[2]) == local_port
    assert match[3] == "/rooms/lobby"
    assert match[4] == "subprotocol chat, compression off"  # websocket-client offers no compression

    assert line.startswith(f"WebSocket #{client_id} closed by the peer with 1000 'bye' after ")
    assert line.endswith("received 2 messages (33 bytes), sent 2 messages (18 bytes)")


def test_compression_and_a_server_close_are_logged(caplog):
    caplog.set_level(logging.INFO)

    def closes_with_1008(client, request, response):
        client.close(geventws.CloseCode.POLICY_VIOLATION, "No guests")

    endpoint = geventws.Websocket(
        None,
        logging.getLogger(LOGGER),
        None,
        closes_with_1008,
        compression_factory=geventws.Rfc7692CompressionFactory(),
    )
    with serve(endpoint) as running, Awaited(LOGGER, "closed by") as closed:
        client = running.connect("/", header=["Sec-WebSocket-Extensions: permessage-deflate"])
        client.recv()  # the close frame; websocket-client answers it
        line = closed.wait()
    assert any(message.endswith("(subprotocol none, compression on)") for message in messages(caplog, LOGGER))
    assert " closed by the server with 1008 'No guests' after " in line
    assert line.endswith("received 0 messages (8 bytes), sent 0 messages (13 bytes)")


def test_a_dropped_connection_is_logged_as_1006(caplog):
    caplog.set_level(logging.INFO)
    endpoint = geventws.Websocket(None, logging.getLogger(LOGGER), None, echo)
    with serve(endpoint) as running, Awaited(LOGGER, "closed by") as closed:
        running.connect().sock.close()
        line = closed.wait()
    assert "closed by the peer with 1006 'Connection lost without a close frame'" in line


def test_the_101_access_line_is_written_at_upgrade_time(caplog):
    caplog.set_level(logging.INFO)
    server_logger = logging.getLogger("tests.server")
    endpoint = geventws.Websocket(None, logging.getLogger(LOGGER), None, echo)
    with serve(endpoint, logger=server_logger) as running:
        with Awaited(LOGGER, "accepted") as accepted:
            client = running.connect("/chat?room=1")
            accepted.wait()
        client.send("still open")
        assert client.recv() == "still open"
        access = messages(caplog, "tests.server.access")
        assert len(access) == 1
        assert '"GET /chat?room=1 HTTP/1.1" 101 ' in access[0]
        with Awaited(LOGGER, "closed by") as closed:
            client.close()
            closed.wait()
    assert len(messages(caplog, "tests.server.access")) == 1  # not again when the connection ends


def test_throttling_is_logged_once_per_episode(caplog):
    caplog.set_level(logging.DEBUG, logger="geventws.rate_limit")
    limit = geventws.ConstantRateLimit(frames_per_second=100, burst=0.05)
    factory = geventws.Rfc6455ClientFactory(rate_limit=limit, heartbeat=None)
    with serve(geventws.Websocket(None, None, None, echo, client_factory=factory)) as running:
        client = running.connect()

        def burst():
            for number in range(20):  # 0.2 s worth of frames, four times the burst
                client.send(str(number))
            for number in range(20):
                assert client.recv() == str(number)

        burst()
        throttled = messages(caplog, "geventws.rate_limit")
        assert len(throttled) == 1
        assert re.fullmatch(
            r"<WebsocketClient #\d+ .*>: rate limit reached \(1048576 bytes/s, 100 frames/s\), reading slowed down",
            throttled[0],
        )
        gevent.sleep(0.4)  # the episode ends: the client pauses until the reader is well past its debt
        client.send("one")
        assert client.recv() == "one"
        assert len(messages(caplog, "geventws.rate_limit")) == 1
        burst()
        assert len(messages(caplog, "geventws.rate_limit")) == 2


@pytest.mark.timeout(20)
def test_a_heartbeat_close_is_logged(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    caplog.set_level(logging.DEBUG, logger="geventws.heartbeat")  # the last call sets the capture level
    heartbeat = geventws.PeriodicHeartbeat(period=0.1, queued_ping_limit=1)
    factory = geventws.Rfc6455ClientFactory(heartbeat=heartbeat, rate_limit=None, close_period=0.2)
    endpoint = geventws.Websocket(None, logging.getLogger(LOGGER), None, echo, client_factory=factory)
    with serve(endpoint) as running, Awaited(LOGGER, "closed by") as closed:
        running.connect()  # never reads, so never answers a ping
        line = closed.wait()
    beats = messages(caplog, "geventws.heartbeat")
    assert len(beats) == 1 and beats[0].endswith(": 1 pings unanswered, closing with 1008")
    assert "closed by the server with 1008 'No answer to pings'" in line
