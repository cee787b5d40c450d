"""Limits, compression, heartbeat, rate limit and close rules, over real sockets."""

import socket
import struct
import time
import zlib

import gevent
import psutil
import pytest
import websocket
from conftest import factory, handshake_request, masked_frame, raw_exchange, read_frame
from gevent.event import AsyncResult
from websockets.sync.client import connect as websockets_connect

import geventws
from geventws import CloseCode


def start(serve, handler=None, compression=None, **options):
    options.setdefault("rate_limit", None)
    client_factory = geventws.Rfc6455ClientFactory(**options)
    handler = handler or echo

    return serve(factory(lambda server: geventws.Websocket(
                server, None, None, handler, compression_factory=compression, client_factory=client_factory
            )))


def echo(client, request, response):
    for message in client:
        data = message.buffer()
        (client.send_text if isinstance(data, str) else client.send_binary)(data)


class RawClient:
    """A hand-driven client: a socket, the handshake, frames built byte by byte."""

    def __init__(self, port, headers=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(handshake_request(port, headers=headers))
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        self.head = head.decode("latin-1")
        self.buffer = b""

    def send(self, data):
        self.sock.sendall(data)

    def _read(self, size):
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def frame(self):
        """(first byte, payload) of the next server frame."""
        return read_frame(self._read)

    def close_code(self):
        """Read until a close frame; return its code (1005 if empty)."""
        while True:
            first, payload = self.frame()
            if first & 0x0F == 0x8:
                return struct.unpack("!H", payload[:2])[0] if payload else 1005, payload[2:]

    def at_eof(self, timeout=5):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def test_frame_header_claiming_2_to_the_62_bytes_is_refused_at_once(serve):
    running = start(serve)
    client = RawClient(running.port)
    rss_before = psutil.Process().memory_info().rss
    client.send(struct.pack("!BBQ", 0x82, 0x80 | 127, 2**62) + b"mask")
    code, reason = client.close_code()
    assert code == CloseCode.MESSAGE_TOO_LARGE
    assert b"exceeds the limit" in reason
    assert psutil.Process().memory_info().rss - rss_before < 8 * 1024 * 1024
    assert client.at_eof()


def test_message_over_the_limit_is_refused_with_1009(serve):
    running = start(serve)  # default limit: 10 MiB
    client = websocket.create_connection(running.url, timeout=10)
    try:
        client.send_binary(b"x" * (20 * 1024 * 1024))
    except (OSError, websocket.WebSocketConnectionClosedException):
        pass  # refused while still sending
    opcode, frame = client.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert struct.unpack("!H", frame.data[:2])[0] == CloseCode.MESSAGE_TOO_LARGE


def deflate(data, bits=15):
    compressor = zlib.compressobj(9, zlib.DEFLATED, -bits)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def zeros_bomb(mebibytes):
    """Deflate of ``mebibytes`` MiB of zeros: after a full flush every MiB compresses to the same bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    one = compressor.compress(bytes(1024 * 1024)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return one * mebibytes


@pytest.mark.parametrize("engine", ["fast", "wsproto"])
def test_compression_bomb_is_closed_with_1009_without_spending_the_memory(serve, engine):
    running = start(serve, compression=geventws.Rfc7692CompressionFactory(), engine=engine)
    bomb = zeros_bomb(1024)  # 1 GiB of zeros, ~1 MiB on the wire
    assert len(bomb) < 2 * 1024 * 1024
    client = RawClient(running.port, headers={"Sec-WebSocket-Extensions": "permessage-deflate"})
    assert "permessage-deflate" in client.head
    process = psutil.Process()
    rss_before = process.memory_info().rss
    peak = [rss_before]

    def sample():
        while True:
            peak[0] = max(peak[0], process.memory_info().rss)
            gevent.sleep(0.005)

    sampler = gevent.spawn(sample)
    frame = masked_frame(0x2, bomb, rsv=0x40)
    try:
        client.send(frame)
    except OSError:
        pass  # the server may drop us before it read everything
    code, reason = client.close_code()
    sampler.kill()
    assert code == CloseCode.MESSAGE_TOO_LARGE
    assert b"inflates beyond" in reason
    growth = peak[0] - rss_before
    assert growth < 64 * 1024 * 1024, f"RSS grew by {growth / 2**20:.0f} MiB"


@pytest.mark.parametrize("engine", ["fast", "wsproto"])
@pytest.mark.parametrize("options", [{}, {"server_no_context_takeover": True, "client_no_context_takeover": True}])
def test_websockets_client_with_compression_round_trips(serve, options, engine):
    running = start(serve, compression=geventws.Rfc7692CompressionFactory(**options), engine=engine)
    with websockets_connect(running.url, compression="deflate") as client:
        assert "permessage-deflate" in client.response.headers["Sec-WebSocket-Extensions"]
        for message in ["small", "repetitive " * 5000, bytes(range(256)) * 400, "ünïcödé " * 300]:
            for _ in range(3):
                client.send(message)
                assert client.recv() == message


def test_websocket_client_without_compression_against_a_compressing_server(serve):
    running = start(serve, compression=geventws.Rfc7692CompressionFactory())
    client = websocket.create_connection(running.url, timeout=10)
    client.send("plain " * 1000)
    assert client.recv() == "plain " * 1000
    client.close()


def test_compressed_fragments_with_a_ping_in_between(serve):
    running = start(serve, compression=geventws.Rfc7692CompressionFactory())
    client = RawClient(running.port, headers={"Sec-WebSocket-Extensions": "permessage-deflate"})
    compressed = deflate(b"hello fragmented world" * 10)
    client.send(masked_frame(0x1, compressed[:5], fin=False, rsv=0x40))
    client.send(masked_frame(0x9, b"ping!"))
    client.send(masked_frame(0x0, compressed[5:]))
    assert client.frame() == (0x8A, b"ping!")
    first, payload = client.frame()
    assert first == 0xC1
    assert zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff") == b"hello fragmented world" * 10


def test_heartbeat_closes_a_silent_peer_with_1008(serve):
    heartbeat = geventws.PeriodicHeartbeat(period=0.2, queued_ping_limit=2)
    infos = AsyncResult()

    def handler(client, request, response):
        client.receive()
        infos.set(client.close_info)

    running = start(serve, handler, heartbeat=heartbeat)
    client = RawClient(running.port)  # never answers pings
    pings = 0
    while True:
        first, _ = client.frame()
        if first == 0x89:
            pings += 1
        elif first == 0x88:
            break
    assert pings == 2
    info = infos.get(5)
    assert (info.code, info.by_peer) == (CloseCode.POLICY_VIOLATION, False)


def test_heartbeat_keeps_an_answering_peer_and_measures_latency(serve):
    heartbeat = geventws.PeriodicHeartbeat(period=0.1, queued_ping_limit=1)
    seen = AsyncResult()

    def handler(client, request, response):
        seen.set(client)
        client.receive()

    running = start(serve, handler, heartbeat=heartbeat)
    client = websocket.create_connection(running.url, timeout=5)  # answers pings in recv
    server_side = seen.get(5)
    with pytest.raises(gevent.Timeout), gevent.Timeout(1.5):
        client.recv()  # answers each ping while waiting for a message that never comes
    assert not server_side.is_closed
    assert server_side.stats.pings_sent >= 3
    assert server_side.latency is not None
    client.close()


def test_rate_limit_slows_a_fast_sender_without_disconnecting_it(serve):
    limit = geventws.ConstantRateLimit(bytes_per_second=256 * 1024, frames_per_second=10_000, burst=0.1)
    running = start(serve, rate_limit=limit)
    client = websocket.create_connection(running.url, timeout=10)
    payload = b"r" * (64 * 1024)
    started = time.monotonic()
    for _ in range(16):  # 1 MiB at 256 KiB/s: about 4 s
        client.send_binary(payload)
        assert client.recv() == payload
    elapsed = time.monotonic() - started
    assert elapsed > 3.0
    client.close()


def test_frame_rate_limit_applies_to_small_frames(serve):
    limit = geventws.ConstantRateLimit(bytes_per_second=10**9, frames_per_second=50, burst=0.1)
    running = start(serve, rate_limit=limit)
    client = websocket.create_connection(running.url, timeout=10)
    started = time.monotonic()
    for index in range(100):
        client.send(str(index))
        assert client.recv() == str(index)
    assert time.monotonic() - started > 1.5


def test_default_factory_has_heartbeat_and_rate_limit():
    factory_ = geventws.Rfc6455ClientFactory()
    assert isinstance(factory_.heartbeat, geventws.PeriodicHeartbeat)
    assert (factory_.heartbeat.period, factory_.heartbeat.queued_ping_limit) == (10.0, 3)
    assert isinstance(factory_.rate_limit, geventws.ConstantRateLimit)
    assert (factory_.rate_limit.bytes_per_second, factory_.rate_limit.frames_per_second) == (1024 * 1024, 100)
    assert geventws.Rfc6455ClientFactory(heartbeat=None, rate_limit=None).rate_limit is None


def test_an_invalid_close_code_gets_1002_over_a_real_socket(serve):
    code = 1005  # the whole table is in test_engine.py
    running = start(serve)
    client = RawClient(running.port)
    client.send(masked_frame(0x8, struct.pack("!H", code)))
    assert client.close_code()[0] == CloseCode.PROTOCOL_ERROR


def test_a_valid_close_code_is_echoed_and_tcp_closed(serve):
    code = 4000  # the whole table is in test_engine.py
    running = start(serve)
    client = RawClient(running.port)
    client.send(masked_frame(0x8, struct.pack("!H", code) + b"reason"))
    assert client.close_code() == (code, b"")
    assert client.at_eof()


@pytest.mark.parametrize(
    "frame",
    [masked_frame(0x3, b""), b"\x81\x05hello"],  # every violation is in test_engine.py
    ids=["reserved-opcode", "unmasked"],
)
def test_protocol_errors_close_with_1002_not_by_peer(serve, frame):
    infos = AsyncResult()

    def handler(client, request, response):
        client.receive()
        client.wait_closed(5)
        infos.set(client.close_info)

    running = start(serve, handler)
    client = RawClient(running.port)
    client.send(frame)
    assert client.close_code()[0] == CloseCode.PROTOCOL_ERROR
    assert client.at_eof(), "failing the connection: close frame, then the server ends TCP"
    client.sock.close()
    info = infos.get(5)
    assert (info.code, info.by_peer) == (CloseCode.PROTOCOL_ERROR, False)


def test_messages_before_a_bad_frame_are_answered_before_the_close(serve):
    running = start(serve)
    client = RawClient(running.port)
    burst = masked_frame(0x1, b"first") + masked_frame(0x2, b"second") + masked_frame(0x1, b"bad", rsv=0x40)
    client.send(burst + masked_frame(0x1, b"never parsed"))
    assert client.frame() == (0x81, b"first")
    assert client.frame() == (0x82, b"second")
    assert client.close_code()[0] == CloseCode.PROTOCOL_ERROR
    assert client.at_eof()


def test_a_message_taken_before_the_bad_frame_arrived_is_still_answered(serve):
    bad = masked_frame(0x1, b"bad", rsv=0x40)

    def handler(client, request, response):
        message = client.receive()
        before = client.stats.bytes_received
        while client.stats.bytes_received < before + len(bad):  # the failing frame is read meanwhile
            gevent.sleep(0.01)
        client.send_text(message.buffer())
        client.receive()

    running = start(serve, handler)
    client = RawClient(running.port)
    client.send(masked_frame(0x1, b"hello"))
    gevent.sleep(0.05)  # two reads: the message, then the failing frame
    client.send(bad)
    assert client.frame() == (0x81, b"hello")
    assert client.close_code()[0] == CloseCode.PROTOCOL_ERROR


def test_a_failure_closes_within_the_close_period_when_the_handler_does_not_come_back(serve):
    infos = AsyncResult()

    def handler(client, request, response):
        client.receive()  # one of the two messages before the bad frame, then busy elsewhere
        started = time.monotonic()
        client.wait_closed(5)
        infos.set((client.close_info, time.monotonic() - started))

    running = start(serve, handler, close_period=0.5)
    client = RawClient(running.port)
    client.send(masked_frame(0x1, b"one") + masked_frame(0x1, b"two") + masked_frame(0x3, b""))
    assert client.close_code()[0] == CloseCode.PROTOCOL_ERROR
    info, waited = infos.get(5)
    assert (info.code, info.by_peer) == (CloseCode.PROTOCOL_ERROR, False)
    assert 0.3 < waited < 2.5


def test_a_handler_that_returns_after_a_failure_closes_with_the_failures_code(serve):
    def handler(client, request, response):
        client.receive()  # returns at once: the endpoint's close must not turn 1007 into 1000

    running = start(serve, handler)
    client = RawClient(running.port)
    client.send(masked_frame(0x1, b"ok") + masked_frame(0x1, b"\xff"))
    assert client.close_code()[0] == CloseCode.INCONSISTENT_FRAME_DATA_TYPE


def test_close_period_bounds_a_close_the_peer_never_answers(serve):
    done = AsyncResult()

    def handler(client, request, response):
        started = time.monotonic()
        client.close(1000)
        done.set(time.monotonic() - started)

    running = start(serve, handler, close_period=0.5)
    client = RawClient(running.port)
    assert client.close_code()[0] == 1000
    elapsed = done.get(5)
    assert 0.4 < elapsed < 2
    assert client.at_eof()


def test_slow_request_head_is_dropped_after_the_request_timeout():
    server = geventws.Server(request_timeout=0.5)
    server.expose(("127.0.0.1", 0))
    server.start(geventws.Websocket(server, None, None, echo))
    try:
        sock = socket.create_connection(server.addresses[0], timeout=5)
        started = time.monotonic()
        with pytest.raises((ConnectionError, OSError, AssertionError)):
            for byte in b"GET / HTTP/1.1\r\nHost: x\r\n":
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
            assert sock.recv(1) != b""
        assert time.monotonic() - started < 4
    finally:
        server.stop()


def test_oversized_request_head_gets_431(serve):
    running = start(serve)
    request = handshake_request(running.port, headers={"X-Big": "a" * 20_000})
    assert raw_exchange(running.port, request)[0] == 431
