"""One WebSocket connection after the handshake, as the handler sees it: messages in, messages out, the close.

Concurrency guarantees:

- One reader reads the socket (:mod:`.reader`), started by
  :meth:`WebsocketClient.start`; it answers pings and closes while the
  handler is busy elsewhere, and queues messages here for :meth:`receive`.
- Any greenlet may send; every frame goes through the connection's one
  :class:`~.writer.Writer` (see there for the ordering guarantees).
- The close period holds whatever else is going on: once a close starts, a
  timer drops TCP after ``close_period`` seconds, and a reader paused by the
  rate limit wakes up to read the peer's answer.
"""

from __future__ import annotations

import contextlib
import logging
import socket as stdlib_socket
import struct
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import Event

from ..protocol.close import CloseCode, WebsocketClosedException, WebsocketCloseInfo, is_sendable_code
from ..protocol.engine import ProtocolEngine
from ..protocol.events import Close, ProtocolFailure
from ..protocol.frames import EncodedMessage
from .close_callbacks import CloseCallback, run_close_callbacks, run_close_callbacks_off_the_loop
from .greenlet_reader import GreenletReader
from .ids import client_ids as client_ids  # re-exported: where ids come from
from .inbox import Inbox
from .loop_reader import LoopReader
from .message import WebsocketMessage
from .peer import address, local_address, tls_info
from .reader import DEFAULT_RECEIVE_WINDOW, Reader
from .stats import ClientStats, WebsocketCount, WebsocketTimestamp
from .writer import DEFAULT_WRITE_TIMEOUT, Writer

if TYPE_CHECKING:
    from .heartbeat import Heartbeat
    from .rate_limit import RateLimit

logger = logging.getLogger("geventws.client")

#: 3 s: how long a close waits for the peer's close frame before dropping TCP.
DEFAULT_CLOSE_PERIOD = 3.0


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
        "_engine",
        "_close_period",
        "_heartbeat",
        "_reader",
        "_inbox",
        "_close_info",
        "_failure",
        "_handled",
        "_close_timer",
        "_closed",
        "_closed_event",
        "_close_callbacks",
        "_pings",
        "_ping_counter",
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
        #: Counters and timestamps: the one place to read them.
        self.stats = ClientStats()
        #: The one write path (the gateway writes through it too).
        self.writer = Writer(sock, engine, self.stats, self._closed_error, write_timeout)
        raw = self.writer.raw_socket  # the OS socket of a plain connection, asked directly (no wrapper call)
        #: The peer's address as the socket sees it (behind a proxy, see the endpoint's ``remote_addr``).
        self.remote_address = address((raw or sock).getpeername)
        self.local_address = local_address(raw or sock)
        #: What TLS negotiated, or ``None`` on a plain connection.
        self.tls_info = tls_info(sock) if raw is None else None
        #: Seconds between the last answered ping and its pong, or ``None``.
        self.latency: float | None = None
        #: Heartbeat pings sent since data last arrived.
        self.missed_heartbeats = 0
        self._socket = sock
        self._engine = engine
        self._close_period = close_period
        self._heartbeat = heartbeat
        self._inbox = Inbox(direct_wakeup=raw is not None)
        args = (self._inbox, sock, engine, leftover, receive_window, rate_limit)
        self._reader: Reader = LoopReader(self, raw, *args) if raw is not None else GreenletReader(self, *args)
        self._close_info: WebsocketCloseInfo | None = None
        self._failure: ProtocolFailure | None = None  # held until the messages before it are handled
        #: The message receive() returned last, until it is called again.
        self._handled: WebsocketMessage | None = None
        self._close_timer: gevent.Greenlet | None = None
        self._closed = False  # the socket is released
        self._closed_event: Event | None = None  # made when someone waits for that
        self._close_callbacks: list[CloseCallback] = []
        self._pings: list[tuple[bytes, float]] | None = None  # sent, not yet answered (the last 32); made by ping()
        self._ping_counter = 0

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
        return len(self._pings) if self._pings is not None else 0

    @property
    def is_throttled(self) -> bool:
        """Whether the rate limit has paused reading from this client right now."""
        return self._reader.is_throttled

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
            assert self._close_info is not None
            run_close_callbacks(self, self._close_info, [callback])
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
        self._reader.start()
        if self._heartbeat is not None:
            self._heartbeat.register(self)

    def receive(self, timeout: float | None = None) -> WebsocketMessage | None:
        """The next message, as soon as its first frame arrived; ``None`` once the connection closed.

        Raises :class:`TimeoutError` when ``timeout`` seconds pass first.
        Messages that arrived before the close are still returned.  What the
        handler left unread of the message before no longer counts against the
        receive window; if that message was still arriving, its rest is
        discarded (see :class:`~geventws.WebsocketMessage`).
        """
        handled = self._handled
        if handled is not None:
            self._handled = None
            if handled._unpaid or not handled._finished:  # not read whole: it counts against the window no more
                handled._release()
        if self._failure is not None and not self._inbox.has_messages:
            self._end_failure()  # the messages before the failure are handled (and answered): close now
        message = self._handled = self._inbox.get(timeout)
        return message

    def __iter__(self) -> Iterator[WebsocketMessage]:
        """The messages until the connection closes (the client is its own iterator: one stream)."""
        # Neither a generator nor iter(receive, None): an idle handler's greenlet
        # then keeps no iterator object and a smaller saved stack (bench/quiet.py idle).
        return self

    def __next__(self) -> WebsocketMessage:
        message = self.receive()
        if message is None:
            raise StopIteration
        return message

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
        self.writer.send_message(data if type(data) is bytes else bytes(data))

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
        if self._pings is None:
            self._pings = []
        elif len(self._pings) >= 32:
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
        if not self._reader.is_current():
            self.wait_closed()

    def abort(self) -> None:
        """Drop TCP without a close frame: the reader finishes (1006) and the socket is released."""
        if self._closed:
            return  # released already (the endpoint aborts every client whose handler returned)
        try:  # not contextlib.suppress: three calls fewer on every connection's way out
            self._socket.shutdown(stdlib_socket.SHUT_RDWR)
        except OSError:
            pass
        self._reader.abort()

    def _stream(self, chunks: Iterable[Any], kind: type[str] | type[bytes]) -> None:
        # If the iterable fails, the peer saw part of a message: the connection cannot carry another.
        self.writer.stream(chunks, kind, self._fail_stream)

    def _fail_stream(self) -> None:
        self._initiate_close(CloseCode.UNEXPECTED_SERVER_ERROR, "Message stream failed")

    def _closed_error(self) -> WebsocketClosedException:
        info = self._close_info
        if info is None:
            return WebsocketClosedException(CloseCode.ABNORMAL_CLOSE, "Connection lost")
        return WebsocketClosedException(info.code, info.reason)

    # ----------------------------------------------------------------- close

    def _initiate_close(self, code: int, reason: str) -> None:
        if self._failure is not None:
            self._end_failure()  # a failed connection closes with the failure's code
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
        self._inbox.close()
        # A paused reader must read the peer's answer within the close period.
        self._reader.on_close(WebsocketClosedException(code, reason))

    def _send_control(self) -> None:
        """Write what the engine queued; a failed write has dropped TCP already, so the reader will finish."""
        with contextlib.suppress(WebsocketClosedException):
            self.writer.send_control()

    # ------------------------------------------------------ from the reader

    def _on_pong(self, payload: bytes) -> None:
        self.stats.pongs_received += 1
        pings = self._pings
        if pings is None:
            return  # an unsolicited pong (RFC 6455 5.5.3)
        for index, (sent, at) in enumerate(pings):
            if sent == payload:
                self.latency = time.monotonic() - at
                del pings[: index + 1]  # earlier pings are answered by this one too
                break

    def _on_close_frame(self, event: Close) -> None:
        if self._close_info is None:
            self._record_close(event.code, event.reason, by_peer=True)

    def _on_failure(self, failure: ProtocolFailure) -> None:
        """Fail the connection (RFC 6455 section 7.1.7), after the messages that arrived before the failing frame.

        Those messages are whole, in the inbox or taken by a handler that has
        not asked for the next one yet: the handler gets them and what it
        sends in answer goes out before the close frame, which is held (and
        nothing more is parsed) until the handler asks for the next message
        with none left, closes, or the close period passes.  A message still
        arriving cannot be delivered: then the close goes out at once.
        """
        logger.info("%r: closing with %d: %s", self, failure.code, failure.reason)
        if self._close_info is not None:
            return
        if (self._inbox.has_messages or self._handled is not None) and not self._reader.is_assembling:
            self._failure = failure
            self._close_timer = gevent.spawn_later(self._close_period, self._end_failure)
            return
        self._engine.send_failure_close()  # written by the reader with its other answers
        self._record_close(failure.code, failure.reason, by_peer=False)

    def _end_failure(self) -> None:
        """Send the held close frame of a failure and stop writing."""
        failure, self._failure = self._failure, None
        if failure is None:
            return
        timer, self._close_timer = self._close_timer, None
        if timer is not None and timer is not gevent.getcurrent():
            timer.kill(block=False)
        if self._close_info is None:
            self._record_close(failure.code, failure.reason, by_peer=False)
        self._engine.send_failure_close()
        self._answer_blocking()

    def _answer_blocking(self) -> None:
        """Write the pongs, the close echo or the close of a failure the engine queued."""
        self._send_control()
        self._half_close_if_failed()

    def _half_close_if_failed(self) -> None:
        if self._engine.failed and self._failure is None:  # our close frame of the failure is out
            self._half_close()

    def _half_close(self) -> None:
        """After failing: our close frame is written; stop writing and drain until the peer closes too."""
        with contextlib.suppress(OSError):
            self._socket.shutdown(stdlib_socket.SHUT_WR)
        if self._close_timer is None:
            self._close_timer = gevent.spawn_later(self._close_period, self.abort)

    def _finish(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None and self._close_info is None:
            self._record_close(failure.code, failure.reason, by_peer=False)
        if self._close_info is None:
            self._record_close(CloseCode.ABNORMAL_CLOSE, "Connection lost without a close frame", by_peer=True)
        if self._close_timer is not None:
            self._close_timer.kill(block=False)
        if self._heartbeat is not None:
            self._heartbeat.unregister(self)
        try:
            self._socket.close()
        except OSError:
            pass
        self._closed = True
        if self._closed_event is not None:
            self._closed_event.set()
        callbacks, self._close_callbacks = self._close_callbacks, []
        assert self._close_info is not None
        run_close_callbacks_off_the_loop(self, self._close_info, callbacks)
