"""One read or one small message's write without Python between: ``recv_nowait`` and ``send_frame``.

Each in C and in Python, and the reader and writer around them.  Real socket
pairs throughout: a full socket is filled until the kernel says so, a closed
one is closed, and the peer reads back the bytes it got.
"""

import socket

import gevent
import gevent.socket
import pytest
from conftest import read_frame

from geventws import WebsocketClient
from geventws.connection import nonblocking, writer
from geventws.protocol.engine import LeanEngine
from geventws.protocol.frames import single_frame
from geventws.protocol.limits import MessageLimits
from geventws.protocol.speedups import speedups

IMPLEMENTATIONS = [pytest.param(nonblocking.python_send_frame, id="python")]
READERS = [pytest.param(nonblocking.python_recv_nowait, id="python")]
if speedups is not None:
    IMPLEMENTATIONS.append(pytest.param(speedups.send_frame, id="c"))
    READERS.append(pytest.param(speedups.recv_nowait, id="c"))


@pytest.fixture(params=IMPLEMENTATIONS)
def send_frame(request):
    return request.param


@pytest.fixture(params=READERS)
def recv_nowait(request):
    return request.param


@pytest.fixture
def sockets():
    """(non-blocking stdlib socket, its peer), closed afterwards."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    yield ours, theirs
    ours.close()
    theirs.close()


def received(sock):
    """Everything the peer can read now."""
    data = b""
    sock.setblocking(False)
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
    except BlockingIOError:
        pass
    return data


BUFFER = memoryview(bytearray(256 * 1024))


@pytest.mark.parametrize("size", [1, 100, 4096, 4097, 200_000])
def test_a_read_returns_what_arrived(recv_nowait, sockets, size):
    """Small reads come as copies, large ones as views of the buffer: the same bytes either way."""
    ours, theirs = sockets
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    payload = bytes(index % 251 for index in range(size))
    theirs.sendall(payload)
    got = b""
    while len(got) < size:
        data = recv_nowait(ours, BUFFER)
        assert data is not None and len(data) > 0
        got += bytes(data)
    assert got == payload
    assert recv_nowait(ours, BUFFER) is None  # nothing more there: no exception, no wait


def test_the_end_of_the_stream_reads_empty(recv_nowait, sockets):
    ours, theirs = sockets
    theirs.sendall(b"last")
    theirs.close()
    assert bytes(recv_nowait(ours, BUFFER)) == b"last"
    data = recv_nowait(ours, BUFFER)
    assert data is not None and len(data) == 0


def test_a_failed_read_raises_oserror(recv_nowait, sockets):
    ours, _ = sockets
    ours.close()
    with pytest.raises(OSError):  # fileno() is -1: EBADF
        recv_nowait(ours, BUFFER)


@pytest.mark.skipif(speedups is None, reason="C speedups not built")
def test_the_c_read_checks_its_arguments(sockets):
    ours, _ = sockets
    with pytest.raises(TypeError, match=r"recv_nowait\(\) takes exactly 2 arguments \(1 given\)"):
        speedups.recv_nowait(ours)
    with pytest.raises(BufferError):
        speedups.recv_nowait(ours, b"read-only")
    with pytest.raises(TypeError):
        speedups.recv_nowait(object(), BUFFER)


@pytest.mark.parametrize(
    "data",
    ["", "hello", "drei €", "x" * 125, "y" * 126, b"", b"\x00\xff", bytes(70000), bytearray(b"ab"), memoryview(b"cd")],
    ids=["empty text", "ascii", "utf-8", "125", "126", "empty binary", "binary", "64-bit length", "bytearray", "view"],
)
def test_a_whole_message_goes_out_as_the_frame_single_frame_makes(send_frame, sockets, data):
    ours, theirs = sockets
    limit = 1 << 20
    expected = single_frame(bytes(data) if not isinstance(data, str) else data, limit)
    if isinstance(data, bytes) and len(data) > 65535:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    assert send_frame(ours, data, limit) == len(expected)
    assert received(theirs) == expected


def test_a_payload_over_the_limit_is_left_to_the_caller(send_frame, sockets):
    ours, theirs = sockets
    assert send_frame(ours, b"x" * 11, 10) is None
    assert send_frame(ours, "é" * 6, 10) is None  # 6 characters, 12 bytes of UTF-8
    assert send_frame(ours, "x" * 11, 10) is None
    assert send_frame(ours, b"x" * 10, 10) == 12
    assert received(theirs) == b"\x82\x0a" + b"x" * 10


def test_a_full_socket_takes_nothing_and_the_whole_frame_is_returned(send_frame, sockets):
    ours, theirs = sockets
    while True:
        try:
            ours.send(bytes(65536))
        except BlockingIOError:
            break
    while True:  # what the kernel still takes in smaller pieces
        sent = send_frame(ours, b"x", 10)
        if sent != 3:
            break
    assert sent == (0, b"\x82\x01x")


@pytest.mark.parametrize("size", [100, 1000, 16000])
def test_what_a_short_write_leaves_is_the_rest_of_the_frame(send_frame, sockets, size):
    """Frames go out until the socket takes only part: what the peer got and the rest make them up exactly."""
    ours, theirs = sockets
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    frames = [bytes([index % 256]) * size for index in range(200)]
    wire = b""
    for payload in frames:
        sent = send_frame(ours, payload, 1 << 20)
        expected = single_frame(payload, 1 << 20)
        if sent == len(expected):
            wire += expected
            continue
        written, rest = sent
        assert 0 <= written < len(expected) and rest == expected[written:]
        wire += expected[:written]
        break
    else:
        pytest.fail("the socket never filled")
    assert received(theirs) == wire


def test_a_failed_send_raises_oserror(send_frame, sockets):
    ours, theirs = sockets
    theirs.close()
    with pytest.raises(OSError):
        send_frame(ours, b"x", 10)
    ours.close()
    with pytest.raises(OSError):  # fileno() is -1: EBADF, not a write to another socket
        send_frame(ours, b"x", 10)


@pytest.mark.skipif(speedups is None, reason="C speedups not built")
def test_the_c_send_checks_its_arguments(sockets):
    ours, _ = sockets
    with pytest.raises(TypeError, match=r"send_frame\(\) takes exactly 3 arguments \(2 given\)"):
        speedups.send_frame(ours, b"x")
    with pytest.raises(TypeError):
        speedups.send_frame(ours, b"x", "10")
    with pytest.raises(TypeError):
        speedups.send_frame(ours, 42, 10)
    with pytest.raises(TypeError):
        speedups.send_frame(object(), b"x", 10)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_small_messages_through_a_socket_that_fills_arrive_whole_and_in_order(monkeypatch, implementation):
    """The writer finishes what a short send_frame left before the next message, and counts every message once."""
    monkeypatch.setattr(writer, "send_frame", implementation)
    server_end, peer_end = gevent.socket.socketpair()
    server_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    client = WebsocketClient(server_end, LeanEngine(MessageLimits(1 << 20, 1 << 20)))
    client.start()
    # 1,000 and 12,000 bytes: sends that find no room, and sends that find room for part.
    payloads = [index.to_bytes(4, "big") * (250 if index % 2 else 3000) for index in range(2000)]

    def send_all():
        for payload in payloads:
            client.send_binary(payload)
        client.send_text("done")

    sender = gevent.spawn(send_all)
    buffer = b""

    def read(size):
        nonlocal buffer
        while len(buffer) < size:
            buffer += peer_end.recv(4096)  # slower than the sender: the socket fills over and over
        data, buffer = buffer[:size], buffer[size:]
        return data

    try:
        with gevent.Timeout(20):
            got = [read_frame(read) for _ in range(len(payloads) + 1)]
        sender.join(5)
        assert sender.successful()
        assert got == [(0x82, payload) for payload in payloads] + [(0x81, b"done")]
        assert client.stats.messages_sent == client.stats.frames_sent == len(payloads) + 1
        assert client.stats.bytes_sent == sum(len(single_frame(payload, 1 << 20)) for payload in payloads) + 6
    finally:
        client.abort()
        peer_end.close()
