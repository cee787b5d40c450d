"""One WebSocket connection after the handshake: the reader, the writer, the close.

Concurrency guarantees:

- One reader reads the socket, started by :meth:`WebsocketClient.start`.  It
  feeds the protocol engine, writes what the engine queued in answer (pongs,
  the close echo, the close of a failure) and hands messages to the handler,
  so pings and closes are answered while the handler is busy elsewhere.
- On a plain socket the reader is no greenlet but an event-loop callback: the
  loop calls it when the socket is readable, it reads what is there without
  blocking and returns.  A handler waiting for a message is woken straight
  from the loop (one greenlet switch each way per message, not two), and an
  idle connection holds no reader stack.  Answers the socket cannot take at
  once, and close callbacks, run in a greenlet of their own.  Under TLS,
  where a readable socket does not mean a readable record, a reader
  greenlet blocks in ``recv`` instead.
- Any greenlet may send; every frame goes through the connection's one
  :class:`~.writer.Writer` (see there for the ordering guarantees).
- What arrives is kept until the handler reads it, up to a receive window;
  past that the reader stops reading and TCP pushes back on the peer.
- The close period holds whatever else is going on: once a close starts, a
  timer drops TCP after ``close_period`` seconds, and a reader paused by the
  rate limit wakes up to read the peer's answer.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket as stdlib_socket
import struct
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from typing import Protocol as TypingProtocol

import gevent
import greenlet
from gevent.event import Event
from gevent.hub import Waiter

from ..protocol.close import CloseCode, WebsocketClosedException, WebsocketCloseInfo, is_sendable_code
from ..protocol.engine import EngineState, ProtocolEngine
from ..protocol.events import Close, Data, Ping, Pong, ProtocolFailure
from ..protocol.frames import EncodedMessage
from .message import WebsocketMessage
from .stats import ClientStats, WebsocketCount, WebsocketTimestamp
from .writer import DEFAULT_WRITE_TIMEOUT, Writer

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
    """Keeps idle connections alive and finds dead ones (:class:`~geventws.PeriodicHeartbeat`)."""

    def register(self, client: WebsocketClient) -> None:
        """Start watching ``client`` (called when its reader starts)."""
        ...

    def unregister(self, client: WebsocketClient) -> None:
        """Stop watching ``client`` (called once it is closed)."""
        ...


class RateLimit(TypingProtocol):
    """Slows down how fast a client's data is read (:class:`~geventws.ConstantRateLimit`)."""

    def throttle(self, client: WebsocketClient, nbytes: int, nframes: int) -> float:
        """Account for a read of ``nbytes`` holding ``nframes`` frames; return how long to pause reading."""
        ...


@dataclass(frozen=True)
class TlsInfo:
    """What the TLS layer of a ``wss://`` connection negotiated."""

    version: str | None
    cipher: str | None
    alpn_protocol: str | None
    peer_certificate: dict[str, Any] | None


CloseCallback = Callable[["WebsocketClient", WebsocketCloseInfo], Any]


class WebsocketClient:
    """The server's side of one WebSocket connection, handed to the client handler."""

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
        "writer",
        "_socket",
        "_leftover",
        "_engine",
        "_close_period",
        "_receive_window",
        "_heartbeat",
        "_rate_limit",
        "_incoming",
        "_incoming_ready",
        "_waiter",
        "_current",
        "_unread",
        "_room",
        "_close_info",
        "_close_timer",
        "_closed",
        "_closed_event",
        "_close_callbacks",
        "_pings",
        "_ping_counter",
        "_reader",
        "_watcher",
        "_raw",
        "_throttle_timer",
        "_throttled_until",
        "_window_full",
        "_at_eof",
        "__weakref__",
    )

    def __init__(
        self,
        sock: stdlib_socket.socket,
        engine: ProtocolEngine,
        *,
        leftover: bytes = b"",
        subprotocol: str | None = None,
        compression_enabled: bool = False,
        close_period: float = DEFAULT_CLOSE_PERIOD,
        receive_window: int = DEFAULT_RECEIVE_WINDOW,
        heartbeat: Heartbeat | None = None,
        rate_limit: RateLimit | None = None,
        write_timeout: float | None = DEFAULT_WRITE_TIMEOUT,
    ) -> None:
        #: Unique across processes and machines (see :data:`client_ids`).
        self.id: int = client_ids.next()
        #: The subprotocol the handshake agreed on, or ``None``.
        self.subprotocol = subprotocol
        #: Whether permessage-deflate was negotiated.
        self.is_compression_enabled = compression_enabled
        #: The peer's address as the socket sees it (behind a proxy, see the endpoint's ``remote_addr``).
        self.remote_address = _address(sock.getpeername)
        self.local_address = _address(sock.getsockname)
        #: What TLS negotiated, or ``None`` on a plain connection.
        self.tls_info = _tls_info(sock)
        #: Counters and timestamps: the one place to read them.
        self.stats = ClientStats()
        #: Seconds between the last answered ping and its pong, or ``None``.
        self.latency: float | None = None
        #: Heartbeat pings sent since data last arrived.
        self.missed_heartbeats = 0
        self._socket = sock
        self._leftover = leftover  # what arrived with the handshake
        self._engine = engine
        self._close_period = close_period
        self._receive_window = receive_window
        self._heartbeat = heartbeat
        self._rate_limit = rate_limit
        #: The one write path (the gateway writes through it too).
        self.writer = Writer(sock, engine, self.stats, self._closed_error, write_timeout)
        self._incoming: deque[WebsocketMessage] | None = None  # made with the first message
        self._incoming_ready: Event | None = None  # made when a second waiter, or the reader greenlet's, needs it
        self._waiter: Waiter[Any] | None = None  # the handler waiting for a message, woken by the event loop
        self._current: WebsocketMessage | None = None
        self._unread = 0
        self._room: Event | None = None  # the reader greenlet's: set while it may read
        self._close_info: WebsocketCloseInfo | None = None
        self._close_timer: gevent.Greenlet | None = None
        self._closed = False  # the socket is released
        self._closed_event: Event | None = None  # made when someone waits for that
        self._close_callbacks: list[CloseCallback] = []
        self._pings: list[tuple[bytes, float]] = []  # sent, not yet answered (the last 32)
        self._ping_counter = 0
        self._reader: greenlet.greenlet | None = None
        self._watcher: Any = None  # the event loop's read watcher, on a plain socket
        self._raw = self.writer.raw_socket
        self._throttle_timer: Any = None
        self._throttled_until = 0.0
        self._window_full = False  # the reader paused on a full receive window
        self._at_eof = False

    def __repr__(self) -> str:
        return f"<WebsocketClient #{self.id} {self.remote_address}>"

    # ----------------------------------------------------------------- state

    @property
    def is_closed(self) -> bool:
        """True from the moment either side starts the close: nothing can be sent any more."""
        return self._close_info is not None

    @property
    def close_info(self) -> WebsocketCloseInfo | None:
        """How the connection closed (code, reason, when, which side), or ``None`` while it is open."""
        return self._close_info

    @property
    def unanswered_pings(self) -> int:
        """Pings sent and not answered yet (at most the last 32 are remembered)."""
        return len(self._pings)

    @property
    def is_throttled(self) -> bool:
        """Whether the rate limit has paused reading from this client right now."""
        return self._throttled_until > time.monotonic()

    def count(self, which: WebsocketCount) -> int:
        """Deprecated: read ``client.stats.<name>`` instead."""
        warnings.warn("count() is deprecated; read client.stats instead", DeprecationWarning, stacklevel=2)
        return self.stats.count(which)

    def timestamp(self, which: WebsocketTimestamp) -> float:
        """Deprecated: read ``client.stats.<name>`` instead."""
        warnings.warn("timestamp() is deprecated; read client.stats instead", DeprecationWarning, stacklevel=2)
        return self.stats.timestamp(which)

    def on_close(self, callback: CloseCallback) -> None:
        """Call ``callback(client, close_info)`` once the connection is closed (at once if it is).

        Callbacks run after the socket is closed, in the reader greenlet or
        (with the event-loop reader) a greenlet of their own; an exception is
        logged and does not stop the other callbacks.
        """
        if self._closed:
            self._run_close_callback(callback)
        else:
            self._close_callbacks.append(callback)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the connection is closed and its socket released; False on timeout."""
        if self._closed:
            return True
        if self._closed_event is None:
            self._closed_event = Event()
        return bool(self._closed_event.wait(timeout))

    # --------------------------------------------------------------- receive

    def start(self) -> None:
        """Start reading; the endpoint calls this once the 101 is written."""
        hub = gevent.get_hub()
        raw = self._raw
        if raw is not None:
            self._watcher = hub.loop.io(raw.fileno(), 1)
            self._watcher.start(self._on_readable)
            if self._leftover:  # what came with the handshake: parse it without waiting for more
                hub.loop.run_callback(self._on_readable)
        else:
            # A bare greenlet, not a gevent.Greenlet: nothing joins or kills it
            # (it ends when the socket does), and it costs a third of the memory.
            self._room = Event()
            self._room.set()
            self._reader = greenlet.greenlet(self._read_loop, parent=hub)
            hub.loop.run_callback(self._reader.switch)
        if self._heartbeat is not None:
            self._heartbeat.register(self)

    def receive(self, timeout: float | None = None) -> WebsocketMessage | None:
        """The next message, as soon as its first frame arrived; ``None`` once the connection closed.

        Raises :class:`TimeoutError` when ``timeout`` seconds pass first.
        Messages that arrived before the close are still returned.
        """
        incoming = self._incoming
        while not incoming:
            if self._close_info is not None:
                return None
            self._wait_for_message(timeout)
            incoming = self._incoming
        message = incoming.popleft()
        self._consumed(MESSAGE_COST)
        return message

    def _wait_for_message(self, timeout: float | None) -> None:
        """Block until a message or the close arrives; :class:`TimeoutError` after ``timeout`` seconds.

        With the event-loop reader, the loop switches straight to the one
        waiting handler once it parsed a message (no event, no callback
        round); other waiters, and the reader greenlet, use an event.
        """
        if self._watcher is None or self._waiter is not None:
            if self._incoming_ready is None:
                self._incoming_ready = Event()
            self._incoming_ready.clear()
            if not self._incoming_ready.wait(timeout):
                raise TimeoutError("No message within the timeout")
            return
        waiter = self._waiter = Waiter()
        timer = gevent.Timeout.start_new(timeout) if timeout is not None else None
        try:
            waiter.get()
        except gevent.Timeout as expired:
            if expired is not timer:
                raise
            raise TimeoutError("No message within the timeout") from None
        finally:
            if self._waiter is waiter:
                self._waiter = None
            if timer is not None:
                timer.close()

    def __iter__(self) -> Iterator[WebsocketMessage]:
        """The messages until the connection closes."""
        while (message := self.receive()) is not None:
            yield message

    # ------------------------------------------------------------------ send

    def send_text(self, text: str) -> None:
        """Send one text message, split into frames at the split threshold.

        Blocks until the socket took it.  Raises :class:`TypeError` for
        anything but ``str``, and :class:`~geventws.WebsocketClosedException`
        once the connection is closing or lost.
        """
        if not isinstance(text, str):
            raise TypeError(f"send_text() takes str, not {type(text).__name__}")
        self.writer.send_message(text)

    def send_binary(self, data: bytes | bytearray | memoryview) -> None:
        """Send one binary message; as :meth:`send_text`, for bytes-like data."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"send_binary() takes bytes, not {type(data).__name__}")
        self.writer.send_message(bytes(data))

    def stream_text(self, chunks: Iterable[str]) -> None:
        """Send one text message made of ``chunks`` as they come (one or more frames each).

        Other messages wait until the stream ends; pings and pongs do not.  If
        the iterable raises, the peer has seen part of a message, so the
        connection is closed with 1011 and the error propagates.
        """
        self._stream(chunks, str)

    def stream_binary(self, chunks: Iterable[bytes]) -> None:
        """Send one binary message made of ``chunks`` as they come; as :meth:`stream_text`."""
        self._stream(chunks, bytes)

    def send_encoded(self, message: EncodedMessage) -> None:
        """Send a message serialized once for many clients (see :mod:`geventws.gateway`)."""
        if self.is_compression_enabled:
            self.writer.send_message(message.data)  # compressed frames depend on this connection's context
        else:
            self.writer.send_encoded(message)

    def ping(self) -> None:
        """Send a ping; its pong updates :attr:`latency`.  Raises :class:`~geventws.WebsocketClosedException`."""
        self._ping_counter += 1
        payload = struct.pack("!Q", self._ping_counter)
        if len(self._pings) >= 32:
            del self._pings[0]
        self._pings.append((payload, time.monotonic()))
        self.writer.send_ping(payload)
        self.stats.pings_sent += 1
        self.stats.last_heartbeat = time.time()

    def heartbeat_ping(self) -> bool:
        """Ping for the heartbeat; False, without counting a miss, when the peer cannot be judged.

        A write in progress means the peer is busy reading, not gone; a
        throttled client's pongs sit unread because we paused reading, not
        because it stopped answering.
        """
        if self.writer.is_busy or self._close_info is not None or self.is_throttled:
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
        only wait.  Called from the reader greenlet, it does not wait.  Raises
        :class:`ValueError` for a code that may not be sent or a reason over
        123 bytes of UTF-8.
        """
        if not is_sendable_code(code):
            raise ValueError(f"Close code {code} may not be sent (use 1000-1003, 1007-1014 or 3000-4999)")
        if len(reason.encode("utf-8")) > 123:
            raise ValueError("A close reason is at most 123 bytes of UTF-8")
        self._initiate_close(code, reason)
        if gevent.getcurrent() is not self._reader:
            self.wait_closed()

    def abort(self) -> None:
        """Drop TCP without a close frame: the reader finishes (1006) and the socket is released."""
        with contextlib.suppress(OSError):
            self._socket.shutdown(stdlib_socket.SHUT_RDWR)
        watcher = self._watcher
        if watcher is not None and not self._at_eof:
            # Stop watching at once, not when the loop next sees end of file:
            # whoever called abort() may close the socket next, and the event
            # loop must never watch a closed file descriptor (libev aborts the
            # process).  The reader finishes from the loop, as it would have.
            self._at_eof = True
            watcher.stop()
            watcher.loop.run_callback(self._on_readable)

    def _stream(self, chunks: Iterable[Any], kind: type[str] | type[bytes]) -> None:
        writer = self.writer
        with writer.message():
            self._check_open()
            pending: str | bytes | None = None
            try:
                for chunk in chunks:
                    if not isinstance(chunk, kind):
                        raise TypeError(f"stream chunks must be {kind.__name__}, not {type(chunk).__name__}")
                    if pending:
                        writer.send_chunk(pending, False)
                    pending = chunk
            except WebsocketClosedException:
                raise
            except BaseException:
                # The peer saw part of a message: the connection cannot carry another.
                self._initiate_close(CloseCode.UNEXPECTED_SERVER_ERROR, "Message stream failed")
                raise
            writer.send_chunk(pending if pending is not None else kind(), True)

    def _check_open(self) -> None:
        if self._close_info is not None:
            raise self._closed_error()

    def _closed_error(self) -> WebsocketClosedException:
        info = self._close_info
        if info is None:
            return WebsocketClosedException(CloseCode.ABNORMAL_CLOSE, "Connection lost")
        return WebsocketClosedException(info.code, info.reason)

    # ----------------------------------------------------------------- close

    def _initiate_close(self, code: int, reason: str) -> None:
        if self._close_info is not None:
            return
        self._record_close(code, reason, by_peer=False)
        # Armed first: if a stalled peer blocks the write below, the abort frees it.
        self._close_timer = gevent.spawn_later(self._close_period, self.abort)
        if self._engine.send_close(code, reason):
            self._send_control()

    def _record_close(self, code: int, reason: str, by_peer: bool) -> None:
        """The first close, whoever started it: nothing can be sent from now on; waiters wake up."""
        now = time.time()
        self._close_info = WebsocketCloseInfo(code, reason, now, by_peer)
        self.stats.closed = now
        if self._incoming_ready is not None:
            self._incoming_ready.set()
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            gevent.get_hub().loop.run_callback(waiter.switch, None)
        self._unthrottle()  # a paused reader must read the peer's answer within the close period
        if self._current is not None:
            self._current._fail(WebsocketClosedException(code, reason))
            self._current = None

    def _send_control(self) -> None:
        """Write what the engine queued; a failed write has dropped TCP already, so the reader will finish."""
        with contextlib.suppress(WebsocketClosedException):
            self.writer.send_control()

    # ------------------------------------------------------ reader: event loop

    def _on_readable(self) -> None:
        """The event loop's callback: the socket is readable (or held bytes wait); runs in the hub, never blocks."""
        if self._watcher is None:
            return  # a callback scheduled before the reading ended
        try:
            if self._leftover and not self._throttled_until:  # what came with the handshake, or was held
                data, self._leftover = self._leftover, b""
                self._on_data(data)
            elif not self._at_eof:
                try:
                    size = self._raw.recv_into(_READ_BUFFER)  # type: ignore[union-attr]
                except BlockingIOError:
                    return  # woken for nothing: the watcher calls again when data is there
                except OSError as error:
                    logger.debug("%r: read failed: %s", self, error)
                    size = 0
                if size:
                    self._received(_READ_BUFFER[:size])
                else:
                    self._eof()
            if self._must_stop_or_pause():
                self._after_read()
        except Exception:
            logger.exception("%r: reader failed", self)
            self._end_reading()
        waiter = self._waiter
        if waiter is not None and (self._incoming or self._close_info is not None):
            self._waiter = None
            waiter.switch(None)

    def _must_stop_or_pause(self) -> bool:
        """Whether :meth:`_after_read` has anything to do (a cheap check; otherwise the watcher just goes on)."""
        return bool(
            self._engine.state is not EngineState.OPEN
            or self._unread >= self._receive_window
            or self._throttled_until
            or self._leftover
            or self._at_eof
        )

    def _after_read(self) -> None:
        """Stop reading, pause, or go on, by the state the last read left."""
        engine = self._engine
        # Both close frames exchanged: stop and close TCP first (RFC 6455 section 7.1.1).
        # After a failure, drain until the peer closes or the close timer drops it.
        if (engine.state is EngineState.CLOSED and not engine.failed) or (self._at_eof and not self._leftover):
            self._end_reading()
            return
        watcher = self._watcher
        if self._throttled_until and self._throttle_timer is None:
            self._throttle_timer = gevent.get_hub().loop.timer(max(self._throttled_until - time.monotonic(), 0.0))
            self._throttle_timer.start(self._on_throttle_end)
        if self._must_pause() and (not self._throttled_until or len(self._leftover) >= self._receive_window):
            watcher.stop()  # TCP pushes back on the peer until the handler reads or the pause ends
            self._window_full = self._unread >= self._receive_window
            return
        if not watcher.active and not self._at_eof:  # after end of file (or abort) the socket is not watched again
            watcher.start(self._on_readable)
        if (self._leftover and not self._throttled_until) or self._at_eof:
            watcher.loop.run_callback(self._on_readable)  # held bytes: parse them without waiting for more

    def _on_throttle_end(self) -> None:
        self._throttle_timer = None
        self._throttled_until = 0.0
        self._resume()

    def _end_reading(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is None:
            return
        watcher.stop()
        watcher.close()
        if self._throttle_timer is not None:
            self._throttle_timer.stop()
            self._throttle_timer = None
        self._finish()

    # ---------------------------------------------------------- reader: greenlet

    def _read_loop(self) -> None:
        # Every reader receives into one shared buffer: a parked reader holds no
        # buffer (an idle connection costs none) and nothing is allocated per
        # read.  This is safe because the engine parses a chunk completely,
        # copying what it keeps, before anything can switch greenlets.
        read_into = self._socket.recv_into
        buffer = _READ_BUFFER
        engine = self._engine
        try:
            while engine.state is not EngineState.CLOSED or engine.failed:
                if self._must_pause():
                    self._pause()
                elif self._leftover:
                    data, self._leftover = self._leftover, b""
                    self._on_data(data)
                elif self._at_eof:
                    break
                else:
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

    def _pause(self) -> None:
        """One pause of the reader greenlet: the receive window is full, or the rate limit asked for a pause."""
        assert self._room is not None
        pause = self._throttled_until - time.monotonic()
        if self._throttled_until and pause <= 0:
            self._throttled_until = 0.0
            return
        if pause <= 0 or self._at_eof or len(self._leftover) >= self._receive_window:
            self._window_full = self._unread >= self._receive_window
            self._room.clear()
            self._room.wait(pause if pause > 0 else None)
            return
        size = -1
        with gevent.Timeout(pause, False):
            size = self._socket.recv_into(_READ_BUFFER)
        if size > 0:
            self._received(_READ_BUFFER[:size])
        elif size == 0:
            self._eof()

    # ------------------------------------------------------------- received

    def _received(self, data: memoryview) -> None:
        """Bytes read: parsed now, or held unparsed while throttled.

        While throttled the reader keeps moving what arrives into held bytes,
        up to the receive window: TCP still pushes back on the peer, but a
        peer that hangs up is noticed at once (its fd released), and after a
        close the peer's answer is read within the close period.  The held
        bytes are parsed, and paid for, when the pause ends.
        """
        if self._throttled_until and self._close_info is None:
            self._leftover += data  # copied before anything can switch greenlets
        else:
            self._on_data(data)

    def _eof(self) -> None:
        """The peer is gone: parse what is held, unthrottled, then finish."""
        self._at_eof = True
        self._throttled_until = 0.0
        self._rate_limit = None

    def _on_data(self, data: bytes | memoryview) -> None:
        stats = self.stats
        stats.bytes_received += len(data)
        stats.last_read = time.time()
        self.missed_heartbeats = 0
        frames_before = stats.frames_received
        answer = False  # the engine queued control frames to write
        for event in self._engine.receive(data):
            kind = type(event)
            if kind is Data:
                self._on_message_data(event)  # type: ignore[arg-type]
            elif kind is Ping:
                stats.frames_received += 1
                stats.pings_received += 1
                answer = True
            elif kind is Pong:
                self._on_pong(event)  # type: ignore[arg-type]
            elif kind is Close:
                self._on_close_frame(event)  # type: ignore[arg-type]
                answer = True
            else:
                self._on_failure(event)  # type: ignore[arg-type]
                answer = True
        if answer:
            self._answer()
        if self._rate_limit is not None and self._close_info is None:
            delay = self._rate_limit.throttle(self, len(data), stats.frames_received - frames_before)
            if delay:
                self._throttled_until = time.monotonic() + delay

    def _answer(self) -> None:
        """Write the pongs, the close echo or the close of a failure the engine queued.

        The event-loop reader may not block: what the socket does not take at
        once is finished by a greenlet of its own.
        """
        if self._watcher is None:
            self._answer_blocking()
        elif self.writer.send_control_nowait():
            self._half_close_if_failed()
        else:
            gevent.spawn(self._answer_blocking)

    def _answer_blocking(self) -> None:
        self._send_control()
        self._half_close_if_failed()

    def _half_close_if_failed(self) -> None:
        if self._engine.failed:
            self._half_close()

    def _on_message_data(self, event: Data) -> None:
        stats = self.stats
        if event.frame_finished:
            stats.frames_received += 1
        if self._close_info is not None:
            return  # closing: data that still arrives is dropped
        payload = event.payload
        message = self._current
        if message is None:
            if event.message_finished:  # whole in one chunk: the hot path
                message = WebsocketMessage.complete(event.is_binary, payload, self._consumed)
                self._unread += len(payload) + MESSAGE_COST
                self._queue(message)
                stats.messages_received += 1
                stats.last_data_read = stats.last_read
                return
            message = self._current = WebsocketMessage(event.is_binary, self._consumed)
            self._unread += MESSAGE_COST
            self._queue(message)
        if payload:
            self._unread += len(payload)
            message._feed(payload)
        if event.message_finished:
            message._finish()
            self._current = None
            stats.messages_received += 1
            stats.last_data_read = stats.last_read

    def _queue(self, message: WebsocketMessage) -> None:
        if self._incoming is None:
            self._incoming = deque()
        self._incoming.append(message)
        if self._incoming_ready is not None:
            self._incoming_ready.set()

    def _consumed(self, size: int) -> None:
        self._unread -= size
        if self._window_full and self._unread < self._receive_window:
            self._window_full = False
            self._resume()

    def _must_pause(self) -> bool:
        return self._close_info is None and (bool(self._throttled_until) or self._unread >= self._receive_window)

    def _unthrottle(self) -> None:
        self._throttled_until = 0.0
        if self._throttle_timer is not None:
            self._throttle_timer.stop()
            self._throttle_timer = None
        self._resume()

    def _resume(self) -> None:
        """Reading may go on (room in the window, a pause over, a close begun): wake the paused reader."""
        if self._room is not None:
            self._room.set()
        elif self._watcher is not None:
            if not self._watcher.active and not self._at_eof:
                # Watch again rather than read once: with nothing on the socket yet, a read
                # finds nothing and the stopped watcher would never call back.
                self._watcher.start(self._on_readable)
            if self._leftover or self._at_eof:
                self._watcher.loop.run_callback(self._on_readable)

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
        # The engine has queued (and _on_data written) the echo.  Both close
        # frames are now exchanged: the read loop ends and TCP is closed.
        self.stats.frames_received += 1
        if self._close_info is None:
            self._record_close(event.code, event.reason, by_peer=True)

    def _on_failure(self, failure: ProtocolFailure) -> None:
        """Fail the connection (RFC 6455 section 7.1.7); the engine queued its close frame."""
        logger.info("%r: closing with %d: %s", self, failure.code, failure.reason)
        if self._close_info is None:
            self._record_close(failure.code, failure.reason, by_peer=False)

    def _half_close(self) -> None:
        """After failing: our close frame is written; stop writing and drain until the peer closes too."""
        with contextlib.suppress(OSError):
            self._socket.shutdown(stdlib_socket.SHUT_WR)
        if self._close_timer is None:
            self._close_timer = gevent.spawn_later(self._close_period, self.abort)

    def _finish(self) -> None:
        if self._close_info is None:
            self._record_close(CloseCode.ABNORMAL_CLOSE, "Connection lost without a close frame", by_peer=True)
        if self._close_timer is not None:
            self._close_timer.kill(block=False)
        if self._heartbeat is not None:
            self._heartbeat.unregister(self)
        with contextlib.suppress(OSError):
            self._socket.close()
        self._closed = True
        if self._closed_event is not None:
            self._closed_event.set()
        callbacks, self._close_callbacks = self._close_callbacks, []
        if callbacks and gevent.getcurrent() is gevent.get_hub():
            gevent.spawn(self._run_close_callbacks, callbacks)  # they may block; the loop may not
        else:
            self._run_close_callbacks(callbacks)

    def _run_close_callbacks(self, callbacks: list[CloseCallback]) -> None:
        for callback in callbacks:
            self._run_close_callback(callback)

    def _run_close_callback(self, callback: CloseCallback) -> None:
        info = self._close_info
        assert info is not None
        try:
            callback(self, info)
        except Exception:
            logger.exception("%r: close callback %r failed", self, callback)


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
