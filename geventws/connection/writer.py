"""The one write path of a connection: every frame any greenlet sends goes through a :class:`Writer`.

Concurrency guarantees:

- Frames never interleave: each write happens under the write lock, or, for
  a message of one buffer when no write or message is in progress, as one
  non-blocking ``send`` that completes before any other greenlet can run (if
  the socket takes only part, the rest is finished under the lock).  The
  frames of one message never interleave with another message's either:
  a message of several frames (and a streamed message, for its whole life)
  also holds the message lock, while control frames (pongs, the close) may
  go in between its writes.
- Encoding happens under the same locks as the write, so with
  permessage-deflate the compressor sees messages in the order the peer
  receives them.
- A write that fails, or makes no progress for ``write_timeout`` seconds, is
  handled one way: the connection is dropped (the reader then records 1006)
  and the sender gets :class:`~geventws.WebsocketClosedException`.
- A broadcast may write "now, without blocking" (:meth:`Writer.write_nowait`);
  if the socket takes only part of the message, the writer keeps the rest and
  writes it before any other frame, so the caller holds no lock across
  greenlets.

Why the fast paths: gevent's ``sendall`` is a Python loop and its socket
wrapper costs a method call per send; a socket with room takes a frame in one
non-blocking ``send`` on the OS socket, which is the common case; a message
of at most 16 KiB is encoded and sent by one C call (``send_frame``).  A large
message goes out as gathered ``sendmsg`` writes of about 256 KiB (no join
copy), one per lock round trip, so a pong still gets through between them.
"""

from __future__ import annotations

import contextlib
import logging
import socket as stdlib_socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import gevent
import gevent.socket
from gevent.lock import Semaphore

from ..protocol.close import CloseCode, WebsocketClosedException
from ..protocol.engine import EngineState, ProtocolEngine
from .blocking_write import WriteTimeoutError, send_nowait, sendall
from .nonblocking import send_frame

logger = logging.getLogger("geventws.client")

if TYPE_CHECKING:
    from ..protocol.frames import EncodedMessage
    from .stats import ClientStats

#: Gathered writes of about this size: fewer syscalls and lock round trips than one per frame.
WRITE_BATCH = 256 * 1024
#: 60 s without progress on a blocked write drops the peer (nginx's ``send_timeout`` default).
DEFAULT_WRITE_TIMEOUT = 60.0
#: Messages up to this many characters or bytes (at most 4 bytes of UTF-8 each) fit one batch:
#: written whole under the write lock alone, without the message lock's round trip.
_SINGLE_WRITE = WRITE_BATCH // 4
_PONG_FIN = 0x8A


class Writer:
    """Serializes, counts and writes every frame of one connection."""

    __slots__ = (
        "_socket",
        "_raw",
        "_engine",
        "_stats",
        "_closed_error",
        "write_timeout",
        "_write_lock",
        "_message_lock",
        "_partial",
        "_partial_frames",
        "_partial_message",
        "_lost",
    )

    def __init__(
        self,
        sock: stdlib_socket.socket,
        engine: ProtocolEngine,
        stats: ClientStats,
        closed_error: Callable[[], WebsocketClosedException],
        write_timeout: float | None = DEFAULT_WRITE_TIMEOUT,
    ) -> None:
        self._socket = sock
        # The OS socket under a plain gevent socket, for non-blocking writes;
        # never under TLS, where it would carry plaintext.
        self._raw = sock._sock if type(sock) is gevent.socket.socket else None  # type: ignore[attr-defined]
        self._engine = engine
        self._stats = stats
        self._closed_error = closed_error
        self.write_timeout = write_timeout
        # Made on first use: a connection that never sends holds no lock.
        self._write_lock: Semaphore | None = None
        self._message_lock: Semaphore | None = None
        self._partial: memoryview | None = None  # the rest of a frame write_nowait() began
        self._partial_frames = 0
        self._partial_message = False  # the partial write is a message (counted when done), not control frames
        self._lost = False

    @property
    def raw_socket(self) -> stdlib_socket.socket | None:
        """The OS socket under a plain gevent socket (non-blocking), or ``None`` under TLS."""
        return self._raw

    @property
    def is_busy(self) -> bool:
        """Whether a write or a multi-frame message is in progress (the peer is busy reading, not gone)."""
        return _held(self._write_lock) or _held(self._message_lock)

    # ------------------------------------------------------------- messages

    def send_message(self, data: str | bytes) -> None:
        """Encode and write one whole message."""
        if len(data) <= _SINGLE_WRITE:
            if (
                self._partial is None
                and self._raw is not None
                and (self._write_lock is None or not self._write_lock.locked())
                and (self._message_lock is None or not self._message_lock.locked())
            ):
                # Nothing switches greenlets before the send: no lock needed. The
                # write lock's acquire and release cost about 1,500 instructions
                # a message, 3 % of an echo's (bench/quiet.py echo).
                engine = self._engine
                if engine.state is not EngineState.OPEN or self._lost:
                    raise self._closed_error()
                limit = engine.single_frame_limit
                if len(data) <= limit:  # encoded and sent in one call: see send_frame
                    try:
                        sent = send_frame(self._raw, data, limit)
                    except OSError as error:
                        raise self._fail(error) from error
                    if type(sent) is int:  # _sent(), frames_sent and _count_message(), inline: the hot path
                        stats = self._stats
                        stats.bytes_sent += sent
                        stats.frames_sent += 1
                        stats.messages_sent += 1
                        stats.last_send = stats.last_data_send = time.time()
                        return
                    if isinstance(sent, tuple):  # the socket took part, or nothing
                        written, rest = sent
                        self._finish_later(written, memoryview(rest), 1)
                        return
                buffers, frames = engine.encode(data)
                if len(buffers) <= 2:  # one frame (its header and payload apart over 16 KiB)
                    self._write_message_now(buffers, frames)
                    return
                with self._write_locked():  # many small frames
                    self._write(buffers, frames)
                    self._count_message()
                return
            write_lock = self._write_lock
            if write_lock is None:
                write_lock = self._write_lock = Semaphore()
            with write_lock:
                # Rechecked under the write lock: a streamed message may have begun while we waited.
                if not _held(self._message_lock):
                    self._check_open()
                    buffers, frames = self._engine.encode(data)
                    self._write(buffers, frames)  # one write, however many frames: nothing gets between them
                    self._count_message()
                    return
        with self._message_locked():
            with self._write_locked():
                self._check_open()
                buffers, frames = self._engine.encode(data)
            for batch, batch_frames in _batches(buffers, frames):
                with self._write_locked():
                    self._check_open()
                    self._write(batch, batch_frames)
            self._count_message()

    def stream(self, chunks: Iterable[str] | Iterable[bytes], kind: type, on_error: Callable[[], None]) -> None:
        """Write one message made of ``chunks`` as they come, under the message lock (control frames may pass).

        If the iterable raises, the peer has seen part of a message and the
        connection cannot carry another: ``on_error`` runs (it starts the
        close), then the error propagates.
        """
        with self._message_locked():
            self._check_open()
            pending: str | bytes | None = None
            try:
                for chunk in chunks:
                    if not isinstance(chunk, kind):
                        raise TypeError(f"stream chunks must be {kind.__name__}, not {type(chunk).__name__}")
                    if pending:
                        self.send_chunk(pending, False)
                    pending = chunk
            except WebsocketClosedException:
                raise
            except BaseException:
                on_error()
                raise
            self.send_chunk(pending if pending is not None else kind(), True)

    def send_chunk(self, data: str | bytes, fin: bool) -> None:
        """Encode and write one chunk of the message :meth:`stream` writes (under its message lock)."""
        with self._write_locked():
            self._check_open()
            buffers, frames = self._engine.encode(data, fin)
        for batch, batch_frames in _batches(buffers, frames):
            with self._write_locked():
                self._check_open()
                self._write(batch, batch_frames)
        if fin:
            self._count_message()

    def send_encoded(self, message: EncodedMessage) -> None:
        """Write a message serialized once for many clients (see :mod:`geventws.gateway`)."""
        with self._message_locked(), self._write_locked():
            self._check_open()
            self._write([message.wire], message.frame_count)
            self._count_message()

    def write_nowait(self, message: EncodedMessage) -> int:
        """Write as much of ``message`` as the socket takes now, without blocking; for broadcasts.

        Returns the number of bytes written, or -1 when nothing could be
        started (a write or message in progress, or TLS).  When only part was
        written, the writer keeps the rest and writes it before any other
        frame; the caller makes sure :meth:`flush` runs (in a greenlet of its own).
        Raises :class:`~geventws.WebsocketClosedException` when closed.
        """
        if self._raw is None or self._partial is not None or _held(self._write_lock) or _held(self._message_lock):
            return -1
        self._check_open()
        return self._send_now(message.wire, message.frame_count, True)

    def flush(self) -> None:
        """Finish what :meth:`write_nowait` began, blocking as needed."""
        with self._write_locked():
            self._flush_partial()

    # --------------------------------------------------------------- control

    def send_control(self) -> None:
        """Write the control frames the engine queued (pongs, close frames), if any."""
        with self._write_locked():
            frames = self._engine.data_to_send()
            if frames:
                self._write([b"".join(frames)] if len(frames) > 1 else frames, len(frames))
                self._stats.pongs_sent += sum(frame[0] == _PONG_FIN for frame in frames)
            else:
                self._flush_partial()

    def send_control_nowait(self) -> bool:
        """Write the queued control frames now, without blocking; for the event-loop reader.

        False when :meth:`send_control` must finish the job from a greenlet:
        a write is in progress, the socket took only part (the writer keeps
        the rest, as for :meth:`write_nowait`), or the socket is TLS.
        """
        if _held(self._write_lock) or self._partial is not None or self._raw is None:
            return False
        frames = self._engine.data_to_send()
        if not frames:
            return True
        data = b"".join(frames)
        self._stats.pongs_sent += sum(frame[0] == _PONG_FIN for frame in frames)
        try:
            written = self._send_now(data, len(frames), False)
        except WebsocketClosedException:
            return True  # TCP is dropped: the reader finishes with 1006
        if not written:
            self._keep_partial(memoryview(data), len(frames), False)  # taken from the engine: the writer keeps it
        return written == len(data)

    def send_ping(self, payload: bytes) -> None:
        """Queue a ping in the engine and write it; raises :class:`~geventws.WebsocketClosedException` once closing."""
        with self._write_locked():
            self._check_open()
            self._engine.send_ping(payload)
            frames = self._engine.data_to_send()
            self._write(frames, len(frames))

    # ----------------------------------------------------------------- I/O

    def _write_locked(self) -> Semaphore:
        """The write lock, made on first use."""
        lock = self._write_lock
        if lock is None:
            lock = self._write_lock = Semaphore()
        return lock

    def _message_locked(self) -> Semaphore:
        """The message lock, made on first use."""
        lock = self._message_lock
        if lock is None:
            lock = self._message_lock = Semaphore()
        return lock

    def _check_open(self) -> None:
        if self._engine.state is not EngineState.OPEN or self._lost:
            raise self._closed_error()

    def _count_message(self) -> None:
        stats = self._stats
        stats.messages_sent += 1
        stats.last_data_send = stats.last_send

    def _write(self, buffers: Sequence[bytes | memoryview], frames: int) -> None:
        """Write ``buffers`` as one; the caller holds the write lock."""
        if self._partial is not None:
            self._flush_partial()
        try:
            total = sendall(self._socket, self._raw, buffers, self.write_timeout)
        except OSError as error:
            raise self._fail(error) from error
        stats = self._stats
        stats.bytes_sent += total
        stats.frames_sent += frames
        stats.last_send = time.time()

    def _write_message_now(self, buffers: list[bytes | memoryview], frames: int) -> None:
        """Write a message of one or two buffers in one non-blocking send, and what the socket leaves under the lock."""
        try:
            written = self._send_nowait(buffers)
        except OSError as error:
            raise self._fail(error) from error
        if written == sum(map(len, buffers)):
            self._sent(written)
            self._stats.frames_sent += frames
            self._count_message()
            return
        whole = buffers[0] if len(buffers) == 1 else b"".join(buffers)
        self._finish_later(written, memoryview(whole)[written:], frames)

    def _finish_later(self, written: int, rest: memoryview, frames: int) -> None:
        """The socket took ``written`` bytes of a message (maybe none): the rest goes out under the lock, first."""
        if written:
            self._sent(written)
        self._keep_partial(rest, frames, True)
        self.flush()

    def _send_now(self, data: bytes, frames: int, is_message: bool) -> int:
        """One non-blocking send of ``data`` (``frames`` frames); the rest, if any, is kept for :meth:`flush`.

        Returns the bytes written; raises :class:`~geventws.WebsocketClosedException` if the send failed.
        """
        try:
            written = self._send_nowait([data])
        except OSError as error:
            raise self._fail(error) from error
        if written:
            self._sent(written)
            if written == len(data):
                self._stats.frames_sent += frames
                if is_message:
                    self._count_message()
            else:
                self._keep_partial(memoryview(data)[written:], frames, is_message)
        return written

    def _keep_partial(self, rest: memoryview, frames: int, is_message: bool) -> None:
        self._partial = rest
        self._partial_frames = frames
        self._partial_message = is_message

    def _flush_partial(self) -> None:
        partial, self._partial = self._partial, None
        if partial is None:
            return
        try:
            sendall(self._socket, self._raw, [partial], self.write_timeout)
        except OSError as error:
            raise self._fail(error) from error
        self._sent(len(partial))
        self._stats.frames_sent += self._partial_frames
        if self._partial_message:
            self._count_message()

    def _send_nowait(self, buffers: Sequence[bytes | memoryview]) -> int:
        """One non-blocking send (gathered for several buffers) on the OS socket: bytes written, -1 under TLS."""
        return -1 if self._raw is None else send_nowait(self._raw, buffers)

    def _sent(self, nbytes: int) -> None:
        self._stats.bytes_sent += nbytes
        self._stats.last_send = time.time()

    def _fail(self, error: OSError) -> WebsocketClosedException:
        """A write failed or timed out: drop TCP (the reader records 1006) and tell the sender."""
        self._lost = True
        self._partial = None
        logger.debug("Write to %s failed, dropping the connection: %s", _peer(self._socket), error)
        with contextlib.suppress(OSError):
            self._socket.shutdown(stdlib_socket.SHUT_RDWR)
        reason = "Write timeout" if isinstance(error, WriteTimeoutError) else "Connection lost"
        return WebsocketClosedException(CloseCode.ABNORMAL_CLOSE, reason, f"{reason}: {error}")


def _batches(buffers: list[bytes | memoryview], frames: int) -> Iterator[tuple[list[bytes | memoryview], int]]:
    """Group the buffers of ``frames`` frames into writes of about :data:`WRITE_BATCH` bytes, with frame counts."""
    if frames <= 1:
        yield buffers, frames
        return
    step = len(buffers) // frames  # buffers per frame: header and payload, or the whole frame
    batch: list[bytes | memoryview] = []
    size = 0
    for index in range(0, len(buffers), step):
        frame = buffers[index : index + step]
        batch.extend(frame)
        size += sum(map(len, frame))
        if size >= WRITE_BATCH:
            yield batch, len(batch) // step
            batch, size = [], 0
    if batch:
        yield batch, len(batch) // step


def _held(lock: Semaphore | None) -> bool:
    """Whether ``lock`` exists and someone holds it."""
    return lock is not None and bool(lock.locked())


def _peer(sock: stdlib_socket.socket) -> object:
    try:
        return sock.getpeername()
    except OSError:
        return "a closed socket"
