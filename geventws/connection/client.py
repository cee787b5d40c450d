"""One WebSocket connection after the handshake: the reader greenlet, serialized writes, the close.

Concurrency guarantees:

- Exactly one greenlet (the reader, started by :meth:`WebsocketClient.start`)
  reads the socket.  It answers pings and completes the close handshake on
  its own, so they happen while the handler is busy elsewhere.
- Any greenlet may send.  Each frame is serialized and written under the
  write lock with ``sendall``, so frames never interleave; a whole message is
  also held under the message lock, so the frames of two messages never
  interleave either, while control frames (pong, close) may go in between.
- What arrives is kept until the handler reads it, up to a receive window;
  past that the reader stops reading and TCP pushes back on the peer.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket as stdlib_socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from typing import Protocol as TypingProtocol

import gevent
import gevent.socket
import greenlet
from gevent.event import Event
from gevent.lock import Semaphore

from ..protocol.close import CloseCode, WebsocketClosedException, WebsocketCloseInfo, is_sendable_code
from ..protocol.events import Close, Data, Ping, Pong, ProtocolFailure
from ..protocol.frames import EncodedMessage
from ..protocol.wsproto_engine import ProtocolEngine
from .message import WebsocketMessage
from .stats import ClientStats, WebsocketCount, WebsocketTimestamp

logger = logging.getLogger("geventws.client")

#: 3 s: how long a close waits for the peer's close frame before dropping TCP.
DEFAULT_CLOSE_PERIOD = 3.0
#: 1 MiB of received, unread message data per connection before the reader pauses.
DEFAULT_RECEIVE_WINDOW = 1024 * 1024
#: What a queued message counts against the receive window besides its data, so
#: a flood of empty messages is bounded too.
MESSAGE_COST = 64
#: Read in large chunks: one recv may carry many frames, or much of a large one.
#: The buffer exists only while recv runs (an idle connection holds none).
READ_SIZE = 256 * 1024



class _IdSource:
    """Client ids unique across processes and machines, so a gateway shared through Redis can address them.

    An id is a random 21-bit node number drawn per process (again in every
    forked child, so gunicorn workers differ) above a 32-bit counter: ids stay
    below 2**53 and so survive a trip through JavaScript numbers.  Two
    processes draw the same node number with probability about n**2 / 2**22
    for n processes; :mod:`geventws.redis` claims node numbers in Redis to
    rule that out among the processes that share it.
    """

    def __init__(self) -> None:
        self.reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.reset)

    def reset(self, node: int | None = None) -> None:
        """Start a new id sequence, under ``node`` or a random node number."""
        self.node = node if node is not None else int.from_bytes(os.urandom(3), "big") & 0x1FFFFF
        self._counter = itertools.count(1)

    def next(self) -> int:
        return (self.node << 32) | (next(self._counter) & 0xFFFFFFFF)


client_ids = _IdSource()
_READ_BUFFER = memoryview(bytearray(READ_SIZE))


class Heartbeat(TypingProtocol):
    def register(self, client: WebsocketClient) -> None: ...
    def unregister(self, client: WebsocketClient) -> None: ...


class RateLimit(TypingProtocol):
    def throttle(self, client: WebsocketClient, nbytes: int, nframes: int) -> None: ...


@dataclass(frozen=True)
class TlsInfo:
    version: str | None
    cipher: str | None
    alpn_protocol: str | None
    peer_certificate: dict[str, Any] | None


CloseCallback = Callable[["WebsocketClient", WebsocketCloseInfo], Any]


class WebsocketClient:
    """The server's side of one WebSocket connection."""

    # Slots: tens of thousands of idle connections each save a dict.
    __slots__ = (
        "id",
        "subprotocol",
        "is_compression_enabled",
        "remote_address",
        "local_address",
        "tls_info",
        "stats",
        "latency",
        "missed_heartbeats",
        "_socket",
        "_raw_socket",
        "_leftover",
        "_protocol",
        "_close_period",
        "_receive_window",
        "_heartbeat",
        "_rate_limit",
        "_write_lock",
        "_message_lock",
        "_incoming",
        "_incoming_ready",
        "_current",
        "_unread",
        "_room",
        "_discarding",
        "_failed",
        "_close_info",
        "_close_timer",
        "_closed",
        "_close_callbacks",
        "_pings",
        "_ping_counter",
        "_reader",
        "_small_message",
        "__weakref__",
    )

    def __init__(
        self,
        sock: stdlib_socket.socket,
        protocol: ProtocolEngine,
        *,
        leftover: bytes = b"",
        subprotocol: str | None = None,
        compression_enabled: bool = False,
        close_period: float = DEFAULT_CLOSE_PERIOD,
        receive_window: int = DEFAULT_RECEIVE_WINDOW,
        heartbeat: Heartbeat | None = None,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self.id: int = client_ids.next()
        self.subprotocol = subprotocol
        self.is_compression_enabled = compression_enabled
        self.remote_address = _address(sock.getpeername)
        self.local_address = _address(sock.getsockname)
        self.tls_info = _tls_info(sock)
        self._socket = sock
        # The OS socket under a plain gevent socket, for non-blocking writes;
        # never under TLS, where it would carry plaintext.
        self._raw_socket = sock._sock if type(sock) is gevent.socket.socket else None  # type: ignore[attr-defined]
        self._leftover = leftover  # what arrived with the handshake
        self._protocol = protocol
        # Text up to a quarter of the split threshold is one frame however it encodes.
        self._small_message = protocol.frame_split_threshold // 4
        self._close_period = close_period
        self._receive_window = receive_window
        self._heartbeat = heartbeat
        self._rate_limit = rate_limit
        self.stats = ClientStats()

        self._write_lock = Semaphore()
        self._message_lock = Semaphore()
        self._incoming: deque[WebsocketMessage] = deque()
        self._incoming_ready = Event()
        self._current: WebsocketMessage | None = None
        self._unread = 0
        self._room = Event()
        self._room.set()
        self._discarding = False  # closing: received data messages are dropped
        self._failed = False  # protocol error: nothing more is parsed
        self._close_info: WebsocketCloseInfo | None = None
        self._close_timer: gevent.Greenlet | None = None
        self._closed = Event()
        self._close_callbacks: list[CloseCallback] = []
        self._pings: list[tuple[bytes, float]] = []  # sent, not yet answered (the last 32)
        self._ping_counter = 0
        self.latency: float | None = None
        #: Heartbeat pings sent since data last arrived.
        self.missed_heartbeats = 0
        self._reader: greenlet.greenlet | None = None

    def __repr__(self) -> str:
        return f"<WebsocketClient #{self.id} {self.remote_address}>"

    # ----------------------------------------------------------------- state

    @property
    def is_closed(self) -> bool:
        """True from the moment either side starts the close: nothing can be sent any more."""
        return self._close_info is not None

    @property
    def close_info(self) -> WebsocketCloseInfo | None:
        """How the connection closed, or ``None`` while it is open."""
        return self._close_info

    @property
    def unanswered_pings(self) -> int:
        return len(self._pings)

    def count(self, which: WebsocketCount) -> int:
        return self.stats.count(which)

    def timestamp(self, which: WebsocketTimestamp) -> float:
        return self.stats.timestamp(which)

    def on_close(self, callback: CloseCallback) -> None:
        """Call ``callback(client, close_info)`` once the connection is closed (at once if it is)."""
        if self._closed.is_set():
            self._run_close_callback(callback)
        else:
            self._close_callbacks.append(callback)

    def wait_closed(self, timeout: float | None = None) -> bool:
        return bool(self._closed.wait(timeout))

    # --------------------------------------------------------------- receive

    def start(self) -> None:
        """Start the reader greenlet; the endpoint calls this once the 101 is written."""
        # A bare greenlet, not a gevent.Greenlet: nothing joins or kills it (it
        # ends when the socket does), and it costs a third of the memory, which
        # counts with tens of thousands of idle connections.
        hub = gevent.get_hub()
        self._reader = greenlet.greenlet(self._read_loop, parent=hub)
        hub.loop.run_callback(self._reader.switch)
        if self._heartbeat is not None:
            self._heartbeat.register(self)

    def receive(self, timeout: float | None = None) -> WebsocketMessage | None:
        """The next message, as soon as its first frame arrived; ``None`` once the connection closed."""
        while not self._incoming:
            if self._close_info is not None:
                return None
            self._incoming_ready.clear()
            if not self._incoming_ready.wait(timeout):
                raise TimeoutError("No message within the timeout")
        self._consumed(MESSAGE_COST)
        return self._incoming.popleft()

    def __iter__(self) -> Iterator[WebsocketMessage]:
        while (message := self.receive()) is not None:
            yield message

    # ------------------------------------------------------------------ send

    def send_text(self, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"send_text() takes str, not {type(text).__name__}")
        self._send_message(text)

    def send_binary(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send_binary() takes bytes, not {type(data).__name__}")
        self._send_message(bytes(data))

    def stream_text(self, chunks: Iterable[str]) -> None:
        """Send one text message made of ``chunks`` as they come (one or more frames each)."""
        self._stream(chunks, str)

    def stream_binary(self, chunks: Iterable[bytes]) -> None:
        """Send one binary message made of ``chunks`` as they come (one or more frames each)."""
        self._stream(chunks, bytes)

    def ping(self) -> None:
        """Send a ping; its pong updates :attr:`latency`."""
        self._ping_counter += 1
        payload = struct.pack("!Q", self._ping_counter)
        with self._write_lock:
            self._check_open()
            if len(self._pings) >= 32:
                del self._pings[0]
            self._pings.append((payload, time.monotonic()))
            self._sendall(self._protocol.ping(payload))
            self.stats.pings_sent += 1
            self.stats.last_heartbeat = time.time()

    def heartbeat_ping(self) -> bool:
        """Ping unless a write is in progress (then the peer is busy reading, not gone); for heartbeats."""
        if self._write_lock.locked() or self._close_info is not None:
            return False
        try:
            self.ping()
        except WebsocketClosedException:
            return False
        self.missed_heartbeats += 1
        return True

    def close(self, code: int = CloseCode.NORMAL_CLOSE, reason: str = "") -> None:
        """Start the close handshake and wait (up to the close period) until it is done.

        The first close wins: later calls, and calls after the peer closed,
        only wait.  Called from the reader greenlet (a close callback), it does
        not wait.
        """
        if not is_sendable_code(code):
            raise ValueError(f"Close code {code} may not be sent (use 1000-1003, 1007-1014 or 3000-4999)")
        if len(reason.encode("utf-8")) > 123:
            raise ValueError("A close reason is at most 123 bytes of UTF-8")
        self._initiate_close(code, reason)
        if gevent.getcurrent() is not self._reader:
            self._closed.wait()

    def send_encoded(self, message: EncodedMessage) -> None:
        """Send a message serialized once for many clients (see :mod:`.gateway`)."""
        if self.is_compression_enabled:
            self._send_message(message.data)  # compressed frames depend on this connection's context
            return
        with self._message_lock, self._write_lock:
            self._check_open()
            self._sendall(message.wire)
            self._count_encoded(message)

    def begin_encoded(self, message: EncodedMessage) -> int:
        """Write as much of ``message`` as the socket takes right now, without blocking.

        For broadcasts: most sockets take a message at once, and then no
        greenlet is needed.  Returns the number of bytes written, or -1 when it
        cannot start now (another send is in progress, the connection uses
        compression or TLS).  When only part was written, the message and write
        locks stay held so nothing can slip into the middle of the frame, and
        the caller must call :meth:`finish_encoded` with that offset.
        """
        if self.is_compression_enabled or self._write_lock.locked() or self._message_lock.locked():
            return -1
        self._check_open()
        wire = message.wire
        try:
            written = self._send_nowait(wire)
        except OSError as error:
            raise self._lost(error) from error
        if written < 0:
            return -1
        if written:
            self.stats.bytes_sent += written
            self.stats.last_send = time.time()
        if written == len(wire):
            self._count_encoded(message)
        elif written:
            self._message_lock.acquire()
            self._write_lock.acquire()
        return written

    def finish_encoded(self, message: EncodedMessage, offset: int) -> None:
        """Write the rest of a message :meth:`begin_encoded` started, then release the locks."""
        try:
            self._sendall(memoryview(message.wire)[offset:])
            self._count_encoded(message)
        finally:
            self._write_lock.release()
            self._message_lock.release()

    def abandon_encoded(self) -> None:
        """Give up a message :meth:`begin_encoded` started: part of a frame went out, so the connection is dropped."""
        self.abort()
        self._write_lock.release()
        self._message_lock.release()

    def _count_encoded(self, message: EncodedMessage) -> None:
        self._count_message(message.frame_count)

    def _count_message(self, frames: int) -> None:
        """A whole message went out (after its last write, which set ``last_send``); ``frames`` not yet counted."""
        stats = self.stats
        stats.frames_sent += frames
        stats.messages_sent += 1
        stats.last_data_send = stats.last_send

    def _send_message(self, data: str | bytes) -> None:
        if len(data) <= self._small_message and not self._message_lock.locked():
            # One frame, and no streamed message in progress: the write lock is enough.
            with self._write_lock:
                self._check_open()
                self._sendall(self._protocol.small_message(data))
                self._count_message(1)
            return
        with self._message_lock:
            writes = self._protocol.message_frames(data)
            while True:
                with self._write_lock:
                    self._check_open()
                    write = next(writes, None)
                    if write is None:
                        break
                    self._sendall_parts(write[0])
                    self.stats.frames_sent += write[1]
            self._count_message(0)

    def _stream(self, chunks: Iterable[Any], kind: type[str] | type[bytes]) -> None:
        with self._message_lock:
            self._check_open()
            pending: str | bytes | None = None
            try:
                for chunk in chunks:
                    if not isinstance(chunk, kind):
                        raise TypeError(f"stream chunks must be {kind.__name__}, not {type(chunk).__name__}")
                    if pending:
                        self._send_frame(pending, False)
                    pending = chunk
            except WebsocketClosedException:
                raise
            except BaseException:
                # The peer saw part of a message: the connection cannot carry another.
                self._initiate_close(CloseCode.UNEXPECTED_SERVER_ERROR, "Message stream failed")
                raise
            self._send_frame(pending if pending is not None else kind(), True)
            self._count_message(0)

    def _send_frame(self, data: str | bytes, fin: bool) -> None:
        """Send one streamed chunk (as several frames if it is large)."""
        for piece, piece_fin in _pieces(data, self._protocol.frame_split_threshold, fin):
            with self._write_lock:
                self._check_open()
                self._sendall(self._protocol.frame(piece, piece_fin))
                self.stats.frames_sent += 1

    def _check_open(self) -> None:
        info = self._close_info
        if info is not None:
            raise WebsocketClosedException(info.code, info.reason)

    def _sendall(self, data: bytes | memoryview) -> None:
        """Write one serialized frame; the caller holds the write lock."""
        try:
            # gevent's sendall is a Python loop; a socket with room takes the
            # frame in one non-blocking send, the common case.
            sent = self._send_nowait(data)
            if sent < len(data):
                self._socket.sendall(memoryview(data)[max(sent, 0) :])
        except OSError as error:
            raise self._lost(error) from error
        self.stats.bytes_sent += len(data)
        self.stats.last_send = time.time()

    def _sendall_parts(self, parts: list[bytes | memoryview]) -> None:
        """Write several buffers as one: gathered by sendmsg when the socket has room, joined otherwise."""
        if len(parts) == 1:
            self._sendall(parts[0])
            return
        total = sum(map(len, parts))
        raw = self._raw_socket
        try:
            sent = -1
            if raw is not None:
                try:
                    sent = raw.sendmsg(parts)
                except BlockingIOError:
                    sent = 0
            if sent < total:
                self._socket.sendall(memoryview(b"".join(parts))[max(sent, 0) :])
        except OSError as error:
            raise self._lost(error) from error
        self.stats.bytes_sent += total
        self.stats.last_send = time.time()

    def _lost(self, error: OSError) -> WebsocketClosedException:
        """A write failed: drop TCP (the reader records 1006) and tell the sender."""
        self.abort()
        return WebsocketClosedException(CloseCode.ABNORMAL_CLOSE, "Connection lost", str(error))

    def _send_nowait(self, data: bytes | memoryview) -> int:
        """One non-blocking send on the OS socket under gevent's: bytes written, or -1 without one (TLS)."""
        raw = self._raw_socket
        if raw is None:
            return -1
        try:
            return int(raw.send(data))
        except BlockingIOError:
            return 0

    def _send_control(self, frame: bytes) -> None:
        with self._write_lock:
            try:
                self._socket.sendall(frame)
            except OSError:
                self.abort()
                return
            self.stats.bytes_sent += len(frame)
            self.stats.frames_sent += 1

    # ----------------------------------------------------------------- close

    def _initiate_close(self, code: int, reason: str) -> None:
        if self._close_info is not None:
            return
        self._record_close(code, reason, by_peer=False)
        self._stop_receiving()
        # Armed first: if a stalled peer blocks the write below, the abort frees it.
        self._close_timer = gevent.spawn_later(self._close_period, self.abort)
        if self._protocol.is_open:
            self._send_control(self._protocol.close(code, reason))

    def _record_close(self, code: int, reason: str, by_peer: bool) -> None:
        now = time.time()
        self._close_info = WebsocketCloseInfo(code, reason, now, by_peer)
        self.stats.closed = now

    def _stop_receiving(self) -> None:
        """Closing: drop further data, fail a half-received message, wake every waiter."""
        self._discarding = True
        self._room.set()
        self._incoming_ready.set()
        if self._current is not None:
            info = self._close_info
            assert info is not None
            self._current._fail(WebsocketClosedException(info.code, info.reason))
            self._current = None

    def abort(self) -> None:
        """Drop TCP: the reader sees end of file and finishes."""
        with contextlib.suppress(OSError):
            self._socket.shutdown(stdlib_socket.SHUT_RDWR)

    # ---------------------------------------------------------------- reader

    def _read_loop(self) -> None:
        # Every reader receives into one shared buffer: a parked reader holds no
        # buffer (an idle connection costs none) and nothing is allocated per
        # read.  This is safe because the engine parses a chunk completely,
        # copying what it keeps, before anything can switch greenlets.
        read_into = self._socket.recv_into
        buffer = _READ_BUFFER
        try:
            if self._leftover:
                data, self._leftover = self._leftover, b""
                self._on_data(data)
            while not self._protocol.is_closed:
                if self._unread >= self._receive_window and not self._discarding:
                    self._room.clear()
                    self._room.wait()
                    continue
                size = read_into(buffer)
                if not size:
                    break
                self._on_data(buffer[:size])
        except OSError as error:
            logger.debug("%r: read failed: %s", self, error)
        except Exception:
            logger.exception("%r: reader failed", self)
        finally:
            self._finish()

    def _on_data(self, data: bytes | memoryview) -> None:
        stats = self.stats
        stats.bytes_received += len(data)
        stats.last_read = time.time()
        self.missed_heartbeats = 0
        if self._failed:
            return
        frames_before = stats.frames_received
        for event in self._protocol.receive(data):
            kind = type(event)
            if kind is Data:
                self._on_message_data(event)  # type: ignore[arg-type]
            elif kind is Ping:
                self._on_ping(event)  # type: ignore[arg-type]
            elif kind is Pong:
                self._on_pong(event)  # type: ignore[arg-type]
            elif kind is Close:
                self._on_close_frame(event)  # type: ignore[arg-type]
            else:
                self._on_failure(event)  # type: ignore[arg-type]
        if self._rate_limit is not None:
            self._rate_limit.throttle(self, len(data), stats.frames_received - frames_before)

    def _on_message_data(self, event: Data) -> None:
        if event.frame_finished:
            self.stats.frames_received += 1
        if self._discarding:
            return
        payload = event.payload
        message = self._current
        if message is None:
            if event.message_finished:  # whole in one chunk: the hot path
                message = WebsocketMessage.complete(event.is_binary, payload, self._consumed)
                self._unread += len(payload) + MESSAGE_COST
                self._incoming.append(message)
                self._incoming_ready.set()
                self.stats.messages_received += 1
                self.stats.last_data_read = self.stats.last_read
                return
            message = self._current = WebsocketMessage(event.is_binary, self._consumed)
            self._unread += MESSAGE_COST
            self._incoming.append(message)
            self._incoming_ready.set()
        if payload:
            self._unread += len(payload)
            message._feed(payload)
        if event.message_finished:
            message._finish()
            self._current = None
            self.stats.messages_received += 1
            self.stats.last_data_read = self.stats.last_read

    def _consumed(self, size: int) -> None:
        self._unread -= size
        if self._unread < self._receive_window:
            self._room.set()

    def _on_ping(self, event: Ping) -> None:
        self.stats.frames_received += 1
        self.stats.pings_received += 1
        if self._protocol.is_open:
            self._send_control(self._protocol.pong(event.payload))
            self.stats.pongs_sent += 1

    def _on_pong(self, event: Pong) -> None:
        self.stats.frames_received += 1
        self.stats.pongs_received += 1
        payload = event.payload
        for index, (sent, at) in enumerate(self._pings):
            if sent == payload:
                self.latency = time.monotonic() - at
                del self._pings[: index + 1]  # earlier pings are answered by this one too
                break

    def _on_close_frame(self, event: Close) -> None:
        self.stats.frames_received += 1
        if self._close_info is None:
            self._record_close(event.code, event.reason, by_peer=True)
            self._stop_receiving()
            echo = event.code if is_sendable_code(event.code) else None
            self._send_control(self._protocol.close(echo))
        # Either way both close frames are now exchanged: the reader loop ends
        # and the server closes TCP first, as RFC 6455 section 7.1.1 asks.

    def _on_failure(self, failure: ProtocolFailure) -> None:
        """Fail the connection (RFC 6455 section 7.1.7): close frame, then TCP without waiting to parse more."""
        logger.info("%r: closing with %d: %s", self, failure.code, failure.reason)
        self._failed = True
        if self._close_info is None:
            self._record_close(failure.code, failure.reason, by_peer=False)
            self._stop_receiving()
            if self._protocol.is_open:
                self._send_control(self._protocol.close(failure.code, failure.reason))
        # Half-close so our close frame is delivered, then drain until the peer closes too.
        with contextlib.suppress(OSError):
            self._socket.shutdown(stdlib_socket.SHUT_WR)
        if self._close_timer is None:
            self._close_timer = gevent.spawn_later(self._close_period, self.abort)

    def _finish(self) -> None:
        if self._close_info is None:
            self._record_close(CloseCode.ABNORMAL_CLOSE, "Connection lost without a close frame", by_peer=True)
        self._stop_receiving()
        if self._close_timer is not None:
            self._close_timer.kill(block=False)
        if self._heartbeat is not None:
            self._heartbeat.unregister(self)
        with contextlib.suppress(OSError):
            self._socket.close()
        self._closed.set()
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            self._run_close_callback(callback)

    def _run_close_callback(self, callback: CloseCallback) -> None:
        info = self._close_info
        assert info is not None
        try:
            callback(self, info)
        except Exception:
            logger.exception("%r: close callback %r failed", self, callback)


def _pieces(data: str | bytes, size: int, fin: bool) -> Iterator[tuple[str | bytes, bool]]:
    """Split one streamed chunk into frames of at most ``size``; only the last may carry FIN."""
    if len(data) <= size:
        yield data, fin
        return
    for start in range(0, len(data), size):
        end = start + size
        yield data[start:end], fin and end >= len(data)


def _address(getter: Callable[[], Any]) -> Any:
    try:
        return getter()
    except OSError:
        return None


def _tls_info(sock: Any) -> TlsInfo | None:
    if not hasattr(sock, "version") or not hasattr(sock, "cipher"):
        return None
    cipher = sock.cipher()
    return TlsInfo(
        version=sock.version(),
        cipher=cipher[0] if cipher else None,
        alpn_protocol=sock.selected_alpn_protocol(),
        peer_certificate=sock.getpeercert() or None,
    )
