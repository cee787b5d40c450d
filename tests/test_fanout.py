"""One encoded message to many sockets: ``send_each`` in C and in Python, and the writers around it.

Real socket pairs throughout: full sockets are filled until the kernel says
so, closed ones are closed, and every peer reads back the frames it got.
"""

import errno
import socket

import gevent
import gevent.socket
import pytest
from conftest import read_frame

import geventws
from geventws import WebsocketClient, WebsocketClientGateway
from geventws.connection import fanout
from geventws.protocol.engine import LeanEngine
from geventws.protocol.frames import EncodedMessage
from geventws.protocol.limits import MessageLimits
from geventws.protocol.speedups import speedups

IMPLEMENTATIONS = [pytest.param(fanout.python_send_each, id="python")]
if speedups is not None:
    IMPLEMENTATIONS.append(pytest.param(speedups.send_each, id="c"))


@pytest.fixture
def pairs():
    """``pairs(n)`` -> n (non-blocking stdlib socket, peer socket) pairs, closed afterwards."""
    made = []

    def make(count, sndbuf=None):
        result = []
        for _ in range(count):
            ours, theirs = socket.socketpair()
            if sndbuf is not None:
                ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            ours.setblocking(False)
            made.extend((ours, theirs))
            result.append((ours, theirs))
        return result

    yield make
    for sock in made:
        sock.close()


def fill(sock):
    """Write zeros until the kernel takes no more; how many it took."""
    total = 0
    while True:
        try:
            total += sock.send(bytes(65536))
        except BlockingIOError:
            return total


def read_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk
        data += chunk
    return data


@pytest.mark.parametrize("send_each", IMPLEMENTATIONS)
def test_every_socket_takes_the_message_whole(pairs, send_each):
    made = pairs(5)
    assert send_each(b"hello", [ours for ours, _ in made]) is None
    assert [read_exactly(theirs, 5) for _, theirs in made] == [b"hello"] * 5
    assert send_each(b"x", []) is None


@pytest.mark.parametrize("send_each", IMPLEMENTATIONS)
def test_full_short_closed_and_broken_sockets_each_report_what_they_took(pairs, send_each):
    (idle, idle_peer), (full, _), (short, short_peer), (closed, _), (broken, broken_peer) = pairs(5, sndbuf=4096)
    fill(full)
    broken_peer.close()
    closed.close()
    data = bytes(range(256)) * 4096  # 1 MiB: more than a small send buffer takes
    results = send_each(data, [idle, full, closed, broken, short])
    assert results is not None and len(results) == 5
    assert results[1] == 0  # full
    assert results[2] == -errno.EBADF  # closed: fileno() is -1
    assert results[3] in (-errno.EPIPE, -errno.ECONNRESET)
    assert 0 < results[0] < len(data) and 0 < results[4] < len(data)  # a short write, not an error
    assert read_exactly(short_peer, results[4]) == data[: results[4]]
    assert read_exactly(idle_peer, results[0]) == data[: results[0]]


@pytest.fixture
def clients():
    """``clients(n)`` -> n started clients over socket pairs, each with its peer socket."""
    made = []

    def make(count):
        result = []
        for _ in range(count):
            server_end, peer_end = gevent.socket.socketpair()
            client = WebsocketClient(server_end, LeanEngine(MessageLimits(1 << 20, 1 << 20), 32 * 1024))
            client.start()
            made.append((client, peer_end))
            result.append((client, peer_end))
        return result

    yield make
    for client, peer_end in made:
        client.abort()
        peer_end.close()


def peer_reader(sock):
    buffer = bytearray()

    def read(size):
        while len(buffer) < size:
            chunk = sock.recv(1 << 20)
            assert chunk
            buffer.extend(chunk)
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    return lambda: read_frame(read)


def test_write_clients_nowait_counts_what_went_out_and_skips_busy_and_closed_clients(clients):
    (idle, idle_peer), (busy, busy_peer), (closing, _), (other, other_peer) = clients(4)
    closing.close()
    message = EncodedMessage.encode(b"broadcast", 32 * 1024)
    with busy.writer._message_locked():  # a streamed message is under way: the broadcast must wait for it
        done, rest = fanout.write_clients_nowait(message, [idle, busy, closing, other])
    size = len(message.wire)
    assert done == [idle.id, other.id]
    assert sorted(rest) == [(1, -1), (2, -1)]
    for client, peer in ((idle, idle_peer), (other, other_peer)):
        assert peer_reader(peer)() == (0x82, b"broadcast")
        assert client.stats.messages_sent == 1 and client.stats.frames_sent == 1
        assert client.stats.bytes_sent == size and client.stats.last_data_send > 0
    assert busy.stats.messages_sent == 0
    assert fanout.write_clients_nowait(message, [idle, other]) == ([idle.id, other.id], [])
    busy_peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        busy_peer.recv(1)


def test_a_short_write_leaves_the_rest_with_the_writer_until_it_flushes(clients):
    (first, first_peer), (second, second_peer) = clients(2)
    first.writer.raw_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    payload = bytes(range(256)) * 256  # 64 KiB: more than the small socket takes at once
    message = EncodedMessage.encode(payload, 1 << 20)
    done, rest = fanout.write_clients_nowait(message, [first, second])
    assert done == [second.id]
    [(index, written)] = rest
    assert index == 0 and 0 < written < len(message.wire)
    assert second.stats.messages_sent == 1
    assert first.stats.messages_sent == 0  # counted once the rest is out
    assert first.stats.bytes_sent == written
    flusher = gevent.spawn(first.writer.flush)
    assert peer_reader(first_peer)() == (0x82, payload)
    flusher.join(timeout=5)
    assert flusher.successful()
    assert first.stats.messages_sent == 1 and first.stats.bytes_sent == len(message.wire)
    assert peer_reader(second_peer)() == (0x82, payload)


def test_a_failed_send_drops_the_connection_and_the_writer_reports_the_close(clients):
    (gone, gone_peer), (other, other_peer) = clients(2)
    gone_peer.close()
    message = EncodedMessage.encode(b"x" * 10, 1024)
    assert fanout.write_clients_nowait(message, [gone, other]) == ([other.id], [(0, -1)])
    with pytest.raises(geventws.WebsocketClosedException) as caught:
        gone.writer.write_nowait(message)
    assert caught.value.code == 1006
    assert gone.wait_closed(5) and gone.close_info.code == 1006
    assert peer_reader(other_peer)() == (0x82, b"x" * 10)


def test_a_gateway_broadcast_reaches_every_client_in_order_while_one_socket_is_full(clients):
    made = clients(20)
    gateway = WebsocketClientGateway()
    for client, _ in made:
        gateway.add_client(client)
    stalled_client, stalled_peer = made[0]
    filled = fill(stalled_client.writer.raw_socket)
    results = [gateway.broadcast_binary(bytes([index]) * 100) for index in range(10)]
    expected = [(0x82, bytes([index]) * 100) for index in range(10)]
    for _client, peer in made[1:]:
        read = peer_reader(peer)
        assert [read() for _ in range(10)] == expected
    assert len(results[0].successes) == 19 and not results[0].done  # the stalled one is queued
    assert read_exactly(stalled_peer, filled) == bytes(filled)
    read = peer_reader(stalled_peer)
    assert [read() for _ in range(10)] == expected
    for result in results:
        result.wait(5)
        assert not result.errors and len(result.successes) == 20
    assert gateway.deliveries == 200


class WrappedWriter:
    """A writer behind a wrapper, as a client served on another thread's hub has one."""

    def __init__(self, writer):
        self._writer = writer

    def __getattr__(self, name):
        return getattr(self._writer, name)


def test_a_wrapped_writer_is_left_to_its_own_write_nowait(clients):
    (wrapped, wrapped_peer), (plain, plain_peer) = clients(2)
    wrapped.writer = WrappedWriter(wrapped.writer)
    message = EncodedMessage.encode(b"hello", 1024)
    assert fanout.write_clients_nowait(message, [wrapped, plain]) == ([plain.id], [(0, -1)])
    assert peer_reader(plain_peer)() == (0x82, b"hello")
    assert wrapped.stats.messages_sent == 0
    wrapped_peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        wrapped_peer.recv(1)
