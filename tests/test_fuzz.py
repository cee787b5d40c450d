"""Property tests on the frame path: arbitrary input never crashes or hangs; valid input round-trips."""

import logging
import os
import socket
import struct

import gevent
import pytest
from conftest import handshake_request, masked_frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import geventws
from geventws.protocol.close import is_sendable_code
from geventws.protocol.engine import EngineState, LeanEngine
from geventws.protocol.events import Close, ProtocolFailure
from geventws.protocol.limits import MessageLimits
from geventws.protocol.wsproto_engine import WsprotoEngine

FUZZ = settings(
    max_examples=int(os.environ.get("GEVENTWS_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def fuzz_server():
    seen = []

    def handler(client, request, response):
        seen.append(client)
        for message in client:
            data = message.buffer()
            (client.send_text if isinstance(data, str) else client.send_binary)(data)

    server = geventws.Server(logging.getLogger("tests.fuzz"))
    server.expose(("127.0.0.1", 0))
    client_factory = geventws.Rfc6455ClientFactory(
        rate_limit=None, heartbeat=None, message_size_limit=64 * 1024, close_period=0.5
    )
    compression = geventws.Rfc7692CompressionFactory()
    server.start(geventws.Websocket(
            server, None, None, handler, compression_factory=compression, client_factory=client_factory
        ))
    yield server.addresses[0][1], seen
    server.stop(timeout=1)


def connect(port, compress=False):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    headers = {"Sec-WebSocket-Extensions": "permessage-deflate"} if compress else None
    sock.sendall(handshake_request(port, headers=headers))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    return sock


def read_frames(sock, count=None):
    """Server frames as (first byte, payload): ``count`` of them, or all until EOF.

    The server splits nothing here (messages are below its split threshold),
    so each data message is one frame.
    """
    reader = sock.makefile("rb")
    frames = []
    while count is None or len(frames) < count:
        head = reader.read(2)
        if len(head) < 2:
            break
        first, length = head[0], head[1] & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", reader.read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", reader.read(8))
        frames.append((first, reader.read(length)))
    return frames


@FUZZ
@given(garbage=st.binary(min_size=1, max_size=4096), compress=st.booleans())
def test_arbitrary_bytes_end_in_a_proper_close(fuzz_server, caplog, garbage, compress):
    port, seen = fuzz_server
    count = len(seen)
    sock = connect(port, compress)
    with caplog.at_level(logging.ERROR):
        sock.sendall(garbage)
        sock.shutdown(socket.SHUT_WR)
        with gevent.Timeout(5, AssertionError("the server did not finish the connection")):
            frames = read_frames(sock)
            server_side = seen[count]
            assert server_side.wait_closed(5)
    sock.close()
    closes = [payload for first, payload in frames if first & 0x0F == 0x8]
    assert len(closes) <= 1
    if closes and len(closes[0]) >= 2:
        assert is_sendable_code(struct.unpack("!H", closes[0][:2])[0])
    assert server_side.close_info is not None
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=8), engine=st.sampled_from(["lean", "wsproto"]))
def test_engines_answer_any_input_with_events_or_one_failing_close(chunks, engine):
    """Arbitrary bytes never raise; a failure queues exactly one close frame with its code, and parsing stops."""
    limits = MessageLimits(4096, 4096)
    protocol = LeanEngine(limits) if engine == "lean" else WsprotoEngine(limits)
    for chunk in chunks:
        events = protocol.receive(chunk)
        sent = protocol.data_to_send()
        failures = [event for event in events if isinstance(event, ProtocolFailure)]
        if failures:
            assert failures == events[-1:]
            closes = [frame for frame in sent if frame[0] == 0x88]
            assert len(closes) == 1
            assert struct.unpack("!H", closes[0][2:4])[0] == failures[0].code
            assert protocol.failed and protocol.state is EngineState.CLOSED
            assert protocol.receive(b"\x81\x80abcd") == []
            break
        if protocol.state is EngineState.CLOSED:
            assert isinstance(events[-1], Close) and sent[-1][0] == 0x88  # the close echo
            break


message = st.one_of(st.text(max_size=3000), st.binary(max_size=3000))


@FUZZ
@given(messages=st.lists(st.tuples(message, st.integers(1, 4), st.booleans()), min_size=1, max_size=6))
def test_valid_fragmented_messages_round_trip(fuzz_server, messages):
    port, _ = fuzz_server
    sock = connect(port)
    expected = []
    for data, pieces, with_ping in messages:
        payload = data.encode() if isinstance(data, str) else data
        opcode = 0x1 if isinstance(data, str) else 0x2
        size = max(1, -(-len(payload) // pieces))
        parts = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        for index, part in enumerate(parts):
            sock.sendall(masked_frame(opcode if index == 0 else 0x0, part, fin=index == len(parts) - 1))
            if with_ping and index == 0:
                sock.sendall(masked_frame(0x9, b"p"))
        expected.append((0x80 | opcode, payload))
        if with_ping:
            expected.append((0x8A, b"p"))
    with gevent.Timeout(10, AssertionError("no complete answer")):
        frames = read_frames(sock, count=len(expected))
        sock.sendall(masked_frame(0x8, struct.pack("!H", 1000)))
        closing = read_frames(sock)
    sock.close()
    assert closing == [(0x88, struct.pack("!H", 1000))]
    data_frames = [frame for frame in frames if frame[0] != 0x8A]
    pongs = [frame for frame in frames if frame[0] == 0x8A]
    assert data_frames == [frame for frame in expected if frame[0] != 0x8A]
    assert pongs == [frame for frame in expected if frame[0] == 0x8A]
