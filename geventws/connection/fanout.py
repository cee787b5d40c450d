"""One encoded message written to many connections at the cost of the sends themselves.

A broadcast to thousands of idle clients is, per client, one non-blocking
``send`` of the same bytes.  :func:`write_clients_nowait` does for a list of
clients what :meth:`.Writer.write_nowait` does for one, but hands every
socket that can take a write now to one C call (``send_each`` in
``geventws/protocol/_speedups.c``; :func:`python_send_each` below is its
fallback), so Python runs per client only to pick the sockets and count what
they took.

Guarantees, the same as :meth:`.Writer.write_nowait`'s, per writer:

- Only a writer that could start a write now is written to: no write or
  multi-frame message in progress, nothing left of an earlier one, the
  connection open, a plain socket (TLS is left to the caller, as are
  writers it skips: their entry is -1).
- A socket that takes part of the message leaves the rest with its writer,
  to be written before any other frame (:meth:`.Writer.flush`); a failed send
  drops the connection as any failed write does, and its entry is -1, so the
  caller's own :meth:`.Writer.write_nowait` then reports the close.
- No greenlet switch happens in between: the checks and the sends are one
  atomic step for every other greenlet.
- A client with compression, or whose writer is wrapped (a client served on
  another thread's hub, :mod:`.threads`), is left to the caller (-1).
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..protocol.engine import EngineState
from ..protocol.speedups import speedups
from .writer import Writer

if TYPE_CHECKING:
    from ..protocol.frames import EncodedMessage
    from .client import WebsocketClient

_OPEN = EngineState.OPEN


def python_send_each(data: bytes, sockets: list[Any]) -> list[int] | None:
    """One non-blocking send of ``data`` to each socket: ``None`` when all took all of it.

    Otherwise, per socket: the bytes written, 0 when it was full, ``-errno``
    when the send failed.  The C version (``send_each``) does the same.
    """
    results: list[int] | None = None
    size = len(data)
    for index, sock in enumerate(sockets):
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as error:
            sent = -(error.errno or errno.EIO)
        if sent != size:
            if results is None:
                results = [size] * len(sockets)
            results[index] = sent
    return results


send_each = speedups.send_each if speedups is not None else python_send_each


def write_clients_nowait(
    message: EncodedMessage, clients: Sequence[WebsocketClient]
) -> tuple[list[int], list[tuple[int, int]]]:
    """:meth:`.Writer.write_nowait` for many clients at once: the ids of those that took it whole, and the others.

    The others come as (index in ``clients``, what :meth:`.Writer.write_nowait`
    would have returned: the bytes written, the writer keeping the rest, or
    -1 when nothing was written: busy, TLS, closed, or the send failed and
    dropped the connection).  A client with compression is never written to
    here (-1): its frames are compressed in its own context.
    """
    data = message.wire
    size = len(data)
    frames = message.frame_count
    ready: list[WebsocketClient] = []  # clients whose socket may take a write now
    sockets: list[Any] = []
    skipped: list[tuple[int, int]] = []
    for index, client in enumerate(clients):
        writer = client.writer
        # Writer.write_nowait's checks, inline for the same reason as the counters below.
        if type(writer) is not Writer:  # a wrapper (a thread-served client): its own write_nowait decides
            skipped.append((index, -1))
            continue
        raw = writer._raw
        if (
            raw is None
            or client.is_compression_enabled
            or writer._partial is not None
            or writer._lost
            or writer._engine.state is not _OPEN
            or (writer._write_lock is not None and writer._write_lock.locked())
            or (writer._message_lock is not None and writer._message_lock.locked())
        ):
            skipped.append((index, -1))
        else:
            ready.append(client)
            sockets.append(raw)
    sent = send_each(data, sockets) if sockets else None
    now = time.time()
    done = []
    # The writers' counters, kept as Writer._send_now keeps them, inline: a call
    # per client costs as much as the rest of the loop.  The common case, every
    # socket took it all, has a loop of its own for the same reason.
    if sent is None:
        for client in ready:
            stats = client.stats
            stats.bytes_sent += size
            stats.frames_sent += frames
            stats.messages_sent += 1
            stats.last_send = stats.last_data_send = now
            done.append(client.id)
        return done, skipped
    not_ready = {index for index, _ in skipped}  # derived here, off the common path
    positions = [index for index in range(len(clients)) if index not in not_ready]
    rest = skipped
    for position, client, written in zip(positions, ready, sent, strict=True):
        writer = client.writer
        stats = client.stats
        if written == size:
            stats.bytes_sent += size
            stats.frames_sent += frames
            stats.messages_sent += 1
            stats.last_send = stats.last_data_send = now
            done.append(client.id)
            continue
        if written > 0:
            stats.bytes_sent += written
            stats.last_send = now
            writer._keep_partial(memoryview(data)[written:], frames, True)
        elif written < 0:
            writer._fail(OSError(-written, os.strerror(-written)))
            written = -1
        rest.append((position, written))
    return done, rest
