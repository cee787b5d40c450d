"""Writing buffers whole, blocking as needed: gathered sends on the OS socket, with a progress timeout.

gevent's ``sendall`` costs a Python loop and a wrapper call per send and
takes one buffer only (a join, a copy of the whole batch).  Here the OS
socket gets gathered non-blocking sends that advance over the buffers
without joining them, waiting for writability in between.  A wait that sees
no progress for the write timeout fails the write: a peer that stops reading
cannot hold a sender forever.
"""

from __future__ import annotations

import socket as stdlib_socket
from collections.abc import Sequence

import gevent
import gevent.socket

#: At most this many buffers per ``sendmsg`` (Linux's ``IOV_MAX``).
IOV_MAX = 1024


class WriteTimeoutError(TimeoutError):
    """A blocked write made no progress within the write timeout: the peer stopped reading."""


def send_nowait(raw: stdlib_socket.socket, buffers: Sequence[bytes | memoryview]) -> int:
    """One non-blocking send (gathered for several buffers) on the OS socket: the bytes written, 0 when full."""
    try:
        return int(raw.send(buffers[0]) if len(buffers) == 1 else raw.sendmsg(buffers[:IOV_MAX]))
    except BlockingIOError:
        return 0


def sendall(
    sock: stdlib_socket.socket,
    raw: stdlib_socket.socket | None,
    buffers: Sequence[bytes | memoryview],
    timeout: float | None,
) -> int:
    """Write every buffer to ``sock``, through its OS socket ``raw`` if not TLS; returns the bytes written."""
    total = sum(map(len, buffers)) if len(buffers) > 1 else len(buffers[0])
    if raw is None:  # TLS: the SSL object must do the writing
        data = buffers[0] if len(buffers) == 1 else b"".join(buffers)
        with gevent.Timeout._start_new_or_dummy(timeout, WriteTimeoutError("No progress writing to the peer")):
            sock.sendall(data)
        return total
    sent = send_nowait(raw, buffers)  # the common case: the socket takes it all in one send
    if sent == total:
        return total
    pending = [buffer for buffer in buffers if len(buffer)]  # an empty one would never count as sent
    first = 0
    while True:
        while sent:  # drop what went out; cut into the buffer it ended in
            size = len(pending[first])
            if sent >= size:
                sent -= size
                first += 1
            else:
                pending[first] = memoryview(pending[first])[sent:]
                sent = 0
        if first == len(pending):
            return total
        gevent.socket.wait_write(
            raw.fileno(), timeout=timeout, timeout_exc=WriteTimeoutError("No progress writing to the peer")
        )
        sent = send_nowait(raw, pending[first:])
