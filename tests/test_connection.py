"""The connection layer over ``socketpair()``: the reader, the writer, the close, heartbeat and rate limit.

No server and no handshake: a :class:`WebsocketClient` on one end of a socket
pair, and a hand-driven peer on the other.
"""

import socket
import struct
import time

import gevent
import gevent.socket
import pytest
from conftest import masked_frame, read_frame

from geventws import (
    CloseCode,
    ConstantRateLimit,
    MessageDiscardedError,
    PeriodicHeartbeat,
    SlowConsumerPolicy,
    WebsocketClient,
    WebsocketClientGateway,
    WebsocketClosedException,
)
from geventws.protocol.engine import LeanEngine
from geventws.protocol.limits import MessageLimits


class Peer:
    """The other end: sends masked frames, reads the server's frames."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def send(self, data):
        self.sock.sendall(data)

    def _read(self, size, timeout):
        with gevent.Timeout(timeout):
            while len(self.buffer) < size:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError
                self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def frame(self, timeout=5):
        """(first byte, payload) of the next frame."""
        return read_frame(lambda size: self._read(size, timeout))

    def close_frame(self, timeout=5):
        """Skip to the next close frame: (code or None, reason)."""
        while True:
            first, payload = self.frame(timeout)
            if first == 0x88:
                return (struct.unpack("!H", payload[:2])[0] if payload else None), payload[2:]

    def at_eof(self, timeout=5):
        with gevent.Timeout(timeout):
            try:
                while self.sock.recv(65536):
                    pass
            except ConnectionResetError:
                pass
        return True


class WrappedSocket(gevent.socket.socket):
    """A socket the writer cannot see through (as under TLS): the client reads with a greenlet."""


@pytest.fixture(params=["event-loop reader", "reader greenlet"])
def pair(request):
    """``pair(**client_options)`` -> (started client, peer); both ends are closed afterwards.

    Every test runs with both readers: the event-loop callback of plain
    sockets and the greenlet of wrapped (TLS) ones.
    """
    made = []

    def make(limit=1 << 20, split=32 * 1024, **options):
        server_end, peer_end = gevent.socket.socketpair()
        if request.param == "reader greenlet":
            server_end = WrappedSocket(fileno=server_end.detach())
        client = WebsocketClient(server_end, LeanEngine(MessageLimits(limit, limit), split), **options)
        client.start()
        assert (client.writer.raw_socket is None) == (request.param == "reader greenlet")
        made.append((client, peer_end))
        return client, Peer(peer_end)

    yield make
    for client, peer_end in made:
        client.abort()
        peer_end.close()


def test_messages_arrive_in_order_with_their_type(pair):
    client, peer = pair()
    peer.send(masked_frame(0x1, b"one") + masked_frame(0x2, b"\x00two") + masked_frame(0x1, "drei €".encode()))
    assert [client.receive(5).buffer() for _ in range(3)] == ["one", b"\x00two", "drei €"]
    assert client.stats.messages_received == 3


def test_a_message_that_arrived_whole_reads_as_one_chunk_and_pays_back_the_window_once(pair):
    client, peer = pair(receive_window=1000)
    peer.send(masked_frame(0x2, bytes(600)) + masked_frame(0x1, b"after"))
    first = client.receive(5)
    assert first.is_complete
    assert first.read() == bytes(600)
    assert first.read() is None
    assert first.buffer() == b""  # the rest of it: nothing
    second = client.receive(5)
    assert second.buffer() == "after" and second.buffer() == "after"
    assert list(second) == []
    for _ in range(20):  # read messages give their room back: a leak would pause the reader within two
        peer.send(masked_frame(0x2, bytes(600)))
        assert len(client.receive(5).buffer()) == 600


def test_reading_resumes_once_a_full_window_is_read_though_nothing_waits_on_the_socket(pair):
    client, peer = pair(receive_window=1000)
    peer.send(masked_frame(0x2, bytes(1200)))  # one message over the window: the reader pauses
    message = client.receive(5)
    gevent.sleep(0.05)  # the socket has nothing more when the message is read
    assert len(message.buffer()) == 1200  # room again
    gevent.sleep(0.05)
    peer.send(masked_frame(0x2, b"later"))
    assert client.receive(5).buffer() == b"later"


def test_messages_the_handler_skips_give_their_room_back_when_it_asks_for_the_next(pair):
    client, peer = pair(receive_window=1000, rate_limit=None)
    skipped = []
    for _ in range(20):  # 20 x 600 unread bytes: counted, they would pause the reader within two
        peer.send(masked_frame(0x2, bytes(600)))
        message = client.receive(5)
        assert message is not None and message.is_binary
        skipped.append(message)
    assert skipped[0].buffer() == bytes(600)  # complete on arrival: still readable later
    assert skipped[1].read() == bytes(600) and skipped[1].read() is None
    peer.send(masked_frame(0x1, b"last"))
    assert client.receive(5).buffer() == "last"
    assert client._reader.unread == 0


def test_the_rest_of_a_message_the_handler_moved_on_from_is_discarded(pair):
    client, peer = pair(receive_window=1000, rate_limit=None)
    peer.send(masked_frame(0x2, b"head", fin=False))
    first = client.receive(5)
    assert first.read(5) == b"head"
    following = gevent.spawn(client.receive, 5)  # moves on while the first still arrives
    gevent.sleep(0.05)
    for _ in range(5):  # 3000 bytes more than the window: kept, they would pause the reader for good
        peer.send(masked_frame(0x0, bytes(600), fin=False))
    peer.send(masked_frame(0x0, b"tail") + masked_frame(0x1, b"next"))
    assert following.get(timeout=5).buffer() == "next"
    with pytest.raises(MessageDiscardedError, match="asked for the next message before reading this one"):
        first.read()
    with pytest.raises(MessageDiscardedError):
        first.buffer()
    assert client._reader.unread == 0
    assert client.stats.messages_received == 2


def test_a_ping_is_answered_while_nobody_reads(pair):
    client, peer = pair()
    peer.send(masked_frame(0x9, b"are you there"))
    assert peer.frame() == (0x8A, b"are you there")
    assert (client.stats.pings_received, client.stats.pongs_sent) == (1, 1)


def test_a_ping_that_arrives_during_a_blocked_write_is_answered_once_the_write_is_done(pair):
    """The reader may not wait for the write lock: a greenlet writes the pong when the message is out."""
    client, peer = pair()
    big = bytes(4 * 1024 * 1024)  # far more than the socket buffers hold: the sender blocks
    sender = gevent.spawn(client.send_binary, big)
    gevent.sleep(0.05)
    assert not sender.ready()
    peer.send(masked_frame(0x9, b"still there?"))
    gevent.sleep(0.05)
    received, pong = 0, None
    while pong is None:
        first, payload = peer.frame()
        if first == 0x8A:
            pong = payload
        else:
            received += len(payload)
    assert pong == b"still there?"
    while received < len(big):  # the rest of the message follows, whole
        first, payload = peer.frame()
        assert first in (0x00, 0x80)
        received += len(payload)
    assert received == len(big)
    sender.join(5)
    assert sender.successful()
    assert client.stats.pongs_sent == 1


def test_a_close_from_the_peer_is_echoed_then_tcp_closed(pair):
    client, peer = pair()
    peer.send(masked_frame(0x8, struct.pack("!H", 4001) + b"bye"))
    assert peer.close_frame() == (4001, b"")
    assert peer.at_eof()
    assert client.wait_closed(5)
    info = client.close_info
    assert (info.code, info.reason, info.by_peer) == (4001, "bye", True)
    with pytest.raises(WebsocketClosedException) as raised:
        client.send_text("too late")
    assert raised.value.code == 4001


def test_a_protocol_error_sends_the_close_then_half_closes(pair):
    client, peer = pair()
    peer.send(masked_frame(0x3, b""))  # reserved opcode
    assert peer.close_frame()[0] == CloseCode.PROTOCOL_ERROR
    assert peer.sock.recv(1) == b"", "the server stopped writing after its close frame"
    peer.sock.close()  # the peer closes too: the server releases the connection
    assert client.wait_closed(5)
    assert (client.close_info.code, client.close_info.by_peer) == (1002, False)


def test_our_close_waits_for_the_answer_then_closes(pair):
    client, peer = pair()
    closer = gevent.spawn(client.close, 1001, "going away")
    assert peer.close_frame() == (1001, b"going away")
    assert not closer.ready()
    peer.send(masked_frame(0x8, struct.pack("!H", 1001)))
    closer.get(timeout=5)
    assert client.close_info.by_peer is False
    assert peer.at_eof()


def test_the_close_period_bounds_a_close_the_peer_never_answers(pair):
    client, peer = pair(close_period=0.3)
    started = time.monotonic()
    client.close(1000)
    assert time.monotonic() - started < 2
    assert peer.close_frame()[0] == 1000
    assert peer.at_eof()


def test_a_message_being_received_fails_when_the_connection_closes(pair):
    client, peer = pair()
    peer.send(masked_frame(0x2, b"part", fin=False))
    message = client.receive(5)
    assert message.read(5) == b"part"
    peer.send(masked_frame(0x8, struct.pack("!H", 1000)))
    with pytest.raises(WebsocketClosedException):
        message.read(5)


def test_large_messages_are_split_into_frames_and_reassembled(pair):
    client, peer = pair(split=1000)
    sender = gevent.spawn(client.send_text, "é" * 1500)
    frames = [peer.frame() for _ in range(3)]
    sender.get(timeout=5)
    assert [first for first, _ in frames] == [0x01, 0x00, 0x80]
    assert [len(payload) for _, payload in frames] == [1000, 1000, 1000]
    assert b"".join(payload for _, payload in frames).decode() == "é" * 1500
    assert (client.stats.frames_sent, client.stats.messages_sent) == (3, 1)


def test_streamed_messages_never_interleave_with_other_messages(pair):
    client, peer = pair()

    def chunks():
        yield b"a"
        gevent.sleep(0.05)  # another greenlet sends meanwhile
        yield b"b"

    streamer = gevent.spawn(client.stream_binary, chunks())
    gevent.sleep(0.01)
    other = gevent.spawn(client.send_text, "other")
    gevent.joinall([streamer, other], timeout=5, raise_error=True)
    frames = [peer.frame() for _ in range(3)]
    assert frames == [(0x02, b"a"), (0x80, b"b"), (0x81, b"other")]


@pytest.mark.parametrize("size", [1000, 40000])  # one buffer; header and payload apart
def test_messages_a_full_socket_takes_in_part_arrive_whole_in_order_and_counted(pair, size):
    client, peer = pair(split=1 << 20)
    if client.writer.raw_socket is not None:
        client.writer.raw_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    count = 2_000_000 // size  # far more than the socket buffers hold: most sends are partial

    def send_all():
        for index in range(count):
            client.send_binary(index.to_bytes(4, "big") * (size // 4))

    senders = [gevent.spawn(send_all), gevent.spawn(client.send_text, "between")]
    received = [peer.frame() for _ in range(count + 1)]
    gevent.joinall(senders, timeout=10, raise_error=True)
    binary = [payload for first, payload in received if first == 0x82]
    assert [first for first, _ in received].count(0x81) == 1 and (0x81, b"between") in received
    assert binary == [index.to_bytes(4, "big") * (size // 4) for index in range(count)]
    assert (client.stats.messages_sent, client.stats.frames_sent) == (count + 1, count + 1)
    header = 2 if size < 126 else 4
    assert client.stats.bytes_sent == count * (header + size) + 2 + len("between")


def test_a_large_message_of_empty_and_full_frames_goes_out_whole_through_a_full_socket(pair):
    """Gathered writes advance over buffers the socket took in part, empty ones included."""
    client, peer = pair(split=1000)
    sender = gevent.spawn(client.stream_binary, [b"", bytes(3 * 1024 * 1024), b"", b"end"])
    received = b""
    fin = False
    while not fin:
        first, payload = peer.frame()
        received += payload
        fin = bool(first & 0x80)
    sender.join(5)
    assert sender.successful()
    assert received == bytes(3 * 1024 * 1024) + b"end"


def test_a_write_that_makes_no_progress_drops_the_peer(pair):
    """A peer that stops reading cannot hold a sender forever: the write timeout drops it (1006)."""
    client, peer = pair(write_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(WebsocketClosedException) as raised:
        for _ in range(1000):  # far more than the socket buffers hold
            client.send_binary(bytes(64 * 1024))
    assert raised.value.code == CloseCode.ABNORMAL_CLOSE and raised.value.reason == "Write timeout"
    assert time.monotonic() - started < 5
    assert client.wait_closed(5)
    assert client.close_info.code == CloseCode.ABNORMAL_CLOSE


def test_a_throttled_client_keeps_its_connection_through_heartbeats(pair):
    """The rate limit pauses reading; the heartbeat must not count the pongs we did not read as missed."""
    heartbeat = PeriodicHeartbeat(period=0.1, queued_ping_limit=1)
    limit = ConstantRateLimit(bytes_per_second=10**9, frames_per_second=100, burst=0.01)
    client, peer = pair(heartbeat=heartbeat, rate_limit=limit)
    peer.send(masked_frame(0x2, b"x") * 150)  # 1.5 s of frames at 100/s
    deadline = time.monotonic() + 5
    while client.stats.messages_received < 150 and time.monotonic() < deadline:
        try:  # a well-behaved peer: it answers every ping it gets
            first, payload = peer.frame(timeout=0.1)
        except gevent.Timeout:
            continue
        assert first != 0x88, "closed while throttled"
        if first == 0x89:
            peer.send(masked_frame(0xA, payload))
    assert client.stats.messages_received == 150
    assert not client.is_closed


def test_a_close_wakes_a_throttled_reader_within_the_close_period(pair):
    limit = ConstantRateLimit(bytes_per_second=10**9, frames_per_second=100, burst=0.01)
    client, peer = pair(rate_limit=limit, close_period=3)
    peer.send(masked_frame(0x9, b"") * 6000)  # a minute of frames at 100/s
    while client.stats.pings_received < 6000:
        gevent.sleep(0.01)
    assert client.is_throttled
    closer = gevent.spawn(client.close, 1000)
    assert peer.close_frame(timeout=5)[0] == 1000
    peer.send(masked_frame(0x8, struct.pack("!H", 1000)))
    started = time.monotonic()
    closer.get(timeout=5)
    assert time.monotonic() - started < 1, "the throttled reader read the answer at once"


def test_a_peer_that_hangs_up_while_throttled_releases_its_socket(pair):
    limit = ConstantRateLimit(bytes_per_second=10**9, frames_per_second=100, burst=0.01)
    client, peer = pair(rate_limit=limit, receive_window=64 << 20)
    sender = gevent.spawn(peer.send, masked_frame(0x2, b"") * 40_000)  # 400 s of frames at 100/s
    while not client.is_throttled:
        gevent.sleep(0.01)
    sender.get(timeout=5)
    peer.sock.close()
    assert client.wait_closed(3), "the fd is released within the close period, not after 400 s"
    assert client.close_info.code == CloseCode.ABNORMAL_CLOSE


def test_a_gateway_write_the_socket_takes_only_in_part_is_finished_before_anything_else(pair):
    client, peer = pair()
    gateway = WebsocketClientGateway(slow_consumer_policy=SlowConsumerPolicy.CLOSE)
    gateway.add_client(client)
    big = bytes(range(256)) * 16 * 1024  # 4 MiB: more than the socket buffers take at once
    result = gateway.broadcast_binary(big)
    after = gevent.spawn(client.send_text, "after")  # must not land inside the broadcast's frames
    received = b""
    while True:
        first, payload = peer.frame()
        received += payload
        if first & 0x80:
            break
    assert received == big
    assert peer.frame() == (0x81, b"after")
    after.get(timeout=5)
    assert result.wait(5).successes == [client.id]


def test_heartbeat_pings_an_idle_peer_and_measures_latency(pair):
    heartbeat = PeriodicHeartbeat(period=0.05, queued_ping_limit=2)
    client, peer = pair(heartbeat=heartbeat)
    first, payload = peer.frame()
    assert first == 0x89
    peer.send(masked_frame(0xA, payload))
    while client.latency is None:
        gevent.sleep(0.01)
    assert client.unanswered_pings == 0 and not client.is_closed


def test_heartbeat_closes_a_peer_that_never_answers(pair):
    heartbeat = PeriodicHeartbeat(period=0.05, queued_ping_limit=2)
    client, peer = pair(heartbeat=heartbeat)
    pings = 0
    while True:
        first, _ = peer.frame()
        if first == 0x88:
            break
        pings += first == 0x89
    assert pings == 2
    assert client.close_info.code == CloseCode.POLICY_VIOLATION
