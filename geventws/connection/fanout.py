"""One encoded message written to many connections at the cost of the sends themselves.

A broadcast to thousands of idle clients is, per client, one non-blocking
``send`` of the same bytes.  :func:`write_nowait_each` does for a list of
writers what :meth:`.Writer.write_nowait` does for one, but hands every
socket that can take a write now to one C call (``send_each`` in
``geventws/protocol/_speedups.c``; :func:`send_each` below is its Python
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
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..protocol.engine import EngineState
from ..protocol.speedups import speedups

if TYPE_CHECKING:
    from ..protocol.frames import EncodedMessage
    from .client import WebsocketClient
    from .writer import Writer

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


def write_nowait_each(message: EncodedMessage, writers: Sequence[Writer]) -> list[int] | None:
    """For each writer, what :meth:`.Writer.write_nowait` would return; ``None`` when every one took it whole.

    Returns, per writer: the bytes written (``len(message.wire)`` when whole;
    fewer when the writer keeps the rest), or -1 when no write was started
    (busy, TLS, closed, or the send failed and dropped the connection).
    """
    data = message.wire
    size = len(data)
    frames = message.frame_count
    ready: list[Writer] = []  # writers whose socket may take a write now
    sockets: list[Any] = []
    results: list[int] | None = None
    for index, writer in enumerate(writers):
        raw = writer._raw
        if (
            raw is None
            or writer._partial is not None
            or writer._lost
            or writer._engine.state is not _OPEN
            or (writer._write_lock is not None and writer._write_lock.locked())
            or (writer._message_lock is not None and writer._message_lock.locked())
        ):
            if results is None:
                results = [size] * len(writers)
            results[index] = -1
        else:
            ready.append(writer)
            sockets.append(raw)
    sent = send_each(data, sockets) if sockets else None
    now = time.time()
    if sent is None:  # the common case: every socket took it all
        for writer in ready:
            stats = writer._stats
            stats.bytes_sent += size
            stats.frames_sent += frames
            stats.messages_sent += 1
            stats.last_send = stats.last_data_send = now
        return results
    if results is None:
        results = [size] * len(writers)
    position = 0  # the index in ``writers`` of ready[i]
    for writer, written in zip(ready, sent, strict=True):
        while results[position] < 0:
            position += 1
        stats = writer._stats
        if written == size:
            stats.bytes_sent += size
            stats.frames_sent += frames
            stats.messages_sent += 1
            stats.last_send = stats.last_data_send = now
        elif written > 0:
            stats.bytes_sent += written
            stats.last_send = now
            writer._keep_partial(memoryview(data)[written:], frames, True)
        elif written < 0:
            writer._fail(OSError(-written, os.strerror(-written)))
            written = -1
        results[position] = written
        position += 1
    return results


def write_clients_nowait(
    message: EncodedMessage, clients: Sequence[WebsocketClient]
) -> tuple[list[int], list[tuple[int, int]]]:
    """:func:`write_nowait_each` for clients: the ids of those that took ``message`` whole, and the others.

    The others come as (index in ``clients``, what :meth:`.Writer.write_nowait`
    would have returned: bytes written, the writer keeping the rest, or -1
    when nothing was written).  A client with compression is never written
    to here (-1): its frames are compressed in its own context.
    """
    plain = [client for client in clients if not client.is_compression_enabled]
    if len(plain) < len(clients):
        skipped = [(index, -1) for index, client in enumerate(clients) if client.is_compression_enabled]
        done, rest = write_clients_nowait(message, plain)
        where = [index for index, client in enumerate(clients) if not client.is_compression_enabled]
        return done, [(where[index], written) for index, written in rest] + skipped
    written = write_nowait_each(message, [client.writer for client in clients]) if clients else None
    if written is None:  # the common case: every socket took it all
        return [client.id for client in clients], []
    size = len(message.wire)
    done = [client.id for client, count in zip(clients, written, strict=True) if count == size]
    return done, [(index, count) for index, count in enumerate(written) if count != size]
