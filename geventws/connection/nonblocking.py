"""One read, or one small message's write, on the OS socket without blocking: in C where built.

The reader and the writer call these on every message.  Each has a pure
Python version, the reference the C one (``_speedups.c``) follows; the tests
run both.  The C versions keep the GIL for a call that never waits and skip
the socket methods' argument parsing and attribute lookups.
"""

from __future__ import annotations

import socket as stdlib_socket
from collections.abc import Callable

from ..protocol.frames import single_frame
from ..protocol.speedups import speedups


def python_recv_nowait(sock: stdlib_socket.socket, buffer: memoryview) -> bytes | memoryview | None:
    """One non-blocking read into ``buffer``, and what it read (the C ``recv_nowait`` is this).

    Empty at the end of the stream, ``None`` when nothing is there; a failed
    read raises :class:`OSError`.  (The C version returns a small read as a
    copy, which costs less than the slice.)
    """
    try:
        size = sock.recv_into(buffer)
    except BlockingIOError:
        return None
    return buffer[:size]


#: In C where built: no keyword parsing, no GIL hand-off for a read that never
#: blocks, and no slice for a small read.
recv_nowait: Callable[[stdlib_socket.socket, memoryview], bytes | memoryview | None] = (
    speedups.recv_nowait if speedups is not None else python_recv_nowait
)


def python_send_frame(sock: stdlib_socket.socket, data: str | bytes, limit: int) -> int | tuple[int, bytes] | None:
    """A whole message as one frame in one non-blocking send on ``sock`` (the C ``send_frame`` is this).

    ``None`` when its payload is over ``limit`` (nothing was written); the
    bytes written when the socket took the whole frame; ``(written, rest)``
    when it took part or nothing.  A failed send raises :class:`OSError`.
    """
    wire = single_frame(data, limit)
    if wire is None:
        return None
    try:
        written = sock.send(wire)
    except BlockingIOError:
        written = 0
    return written if written == len(wire) else (written, wire[written:])


#: In C where built: the encode and the send in one call, without Python
#: frames between them or the GIL given up for a send that never blocks
#: (bench/quiet.py echo: 40,800 -> 34,700 instructions per round trip).
send_frame: Callable[[stdlib_socket.socket, str | bytes, int], int | tuple[int, bytes] | None] = (
    speedups.send_frame if speedups is not None else python_send_frame
)
