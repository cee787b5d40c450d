"""The one reader of a connection: socket -> protocol engine -> the client's messages.

Exactly one reader reads a client's socket.  It feeds the engine, has the
client write what the engine queued in answer (pongs, the close echo, the
close of a failure) and hands messages to the client's queue, so pings and
closes are answered while the handler is busy elsewhere.  Two kinds share
that work behind one interface (:class:`Reader`, here): the event-loop
callback of a plain socket (:mod:`.loop_reader`) and the greenlet of a TLS
one (:mod:`.greenlet_reader`).

Flow control lives here too.  What arrives is kept until the handler reads
it, up to a receive window; past that the reader stops reading and TCP pushes
back on the peer.  The rate limit pauses parsing; while paused, what arrives
is moved into held bytes (up to the window) so that a peer that hangs up is
noticed at once and, after a close, its answer is read within the close
period.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ..protocol.close import WebsocketClosedException
from ..protocol.engine import ProtocolEngine
from ..protocol.events import Close, Data, Ping, Pong
from .inbox import Inbox
from .message import WebsocketMessage

if TYPE_CHECKING:
    import socket as stdlib_socket

    from .client import WebsocketClient
    from .rate_limit import RateLimit

logger = logging.getLogger("geventws.client")

#: 1 MiB of received, unread message data per connection before the reader pauses.
DEFAULT_RECEIVE_WINDOW = 1024 * 1024
#: What a queued message counts against the receive window besides its data, so
#: a flood of empty messages is bounded too.
MESSAGE_COST = 64
#: Read in large chunks: one recv may carry many frames, or much of a large one.
READ_SIZE = 256 * 1024

# Every reader receives into one shared buffer: a parked reader holds no
# buffer (an idle connection costs none) and nothing is allocated per read.
# This is safe because the engine parses a chunk completely, copying what it
# keeps, before anything can switch greenlets; readers on the hubs of other
# threads use a buffer of their thread's own (see .threads).
_READ_BUFFER = memoryview(bytearray(READ_SIZE))


class Reader:
    """What both readers share: parsing, the receive window, the rate limit's pause, the end of the stream."""

    __slots__ = (
        "_client",
        "_inbox",
        "_socket",
        "_engine",
        "_rate_limit",
        "_held",
        "_current",
        "unread",
        "receive_window",
        "window_full",
        "throttled_until",
        "at_eof",
        "_buffer",
    )

    def __init__(
        self,
        client: WebsocketClient,
        inbox: Inbox,
        sock: stdlib_socket.socket,
        engine: ProtocolEngine,
        held: bytes,
        receive_window: int,
        rate_limit: RateLimit | None,
    ) -> None:
        self._client = client
        self._inbox = inbox
        self._socket = sock
        self._engine = engine
        self._rate_limit = rate_limit
        self._held = held  # what came with the handshake, or arrived while throttled
        self._current: WebsocketMessage | None = None  # a message whose last frame is still to come
        #: Bytes (and message costs) received and not read by the handler yet.
        self.unread = 0
        self.receive_window = receive_window
        #: The reader paused on a full receive window.
        self.window_full = False
        #: ``time.monotonic()`` until which the rate limit paused parsing, or 0.
        self.throttled_until = 0.0
        #: The peer closed its side of TCP (or the connection was aborted).
        self.at_eof = False
        #: What reads land in: the process's shared buffer, or a thread's own (:mod:`.threads`).
        self._buffer = _READ_BUFFER

    # ------------------------------------------------------------- interface

    def start(self) -> None:
        """Start reading; the client calls this once the 101 is written."""
        raise NotImplementedError

    def resume(self) -> None:
        """Reading may go on (room in the window, a pause over, a close begun): wake the paused reader."""
        raise NotImplementedError

    def abort(self) -> None:
        """The socket is about to be dropped: stop watching it at once."""

    def is_current(self) -> bool:
        """Whether the calling greenlet is this reader (which must never wait for itself)."""
        return False

    def consumed(self, size: int) -> None:
        """The handler read ``size`` bytes (or a message's cost): room in the receive window again."""
        self.unread -= size
        if self.window_full and self.unread < self.receive_window:
            self.window_full = False
            self.resume()

    def on_close(self, error: WebsocketClosedException) -> None:
        """The close began: fail the message still arriving, and read the peer's answer unthrottled."""
        self.unthrottle()
        if self._current is not None:
            self._current._fail(error)
            self._current = None

    def unthrottle(self) -> None:
        """End a rate-limit pause now."""
        self.throttled_until = 0.0
        self.resume()

    @property
    def is_assembling(self) -> bool:
        """Whether a message has begun to arrive and its last frame has not."""
        return self._current is not None

    @property
    def is_throttled(self) -> bool:
        """Whether the rate limit has paused reading right now."""
        return self.throttled_until > time.monotonic()

    # ---------------------------------------------------------------- bytes

    def _received(self, data: memoryview) -> None:
        """Bytes read: parsed now, or held unparsed while throttled (paid for when the pause ends)."""
        if self.throttled_until and self._client._close_info is None:
            self._held += data  # copied before anything can switch greenlets
        else:
            self._on_data(data)

    def _eof(self) -> None:
        """The peer is gone: parse what is held, unthrottled, then finish."""
        self.at_eof = True
        self.throttled_until = 0.0
        self._rate_limit = None

    def _must_pause(self) -> bool:
        return self._client._close_info is None and (bool(self.throttled_until) or self.unread >= self.receive_window)

    def _on_data(self, data: bytes | memoryview) -> None:
        client = self._client
        stats = client.stats
        stats.bytes_received += len(data)
        stats.last_read = time.time()
        client.missed_heartbeats = 0
        frames_before = stats.frames_received
        answer = False  # the engine queued control frames to write
        for event in self._engine.receive(data):
            kind = type(event)
            if kind is Data:
                if event.message_finished and self._current is None and client._close_info is None:  # type: ignore[union-attr]
                    # Whole in one chunk, the hot path: inline, a call fewer per message.
                    payload = event.payload  # type: ignore[union-attr]
                    cost = len(payload) + MESSAGE_COST
                    self.unread += cost
                    self._inbox.put(WebsocketMessage.complete(event.is_binary, payload, self.consumed, cost))  # type: ignore[union-attr]
                    stats.frames_received += 1
                    stats.messages_received += 1
                    stats.last_data_read = stats.last_read
                else:
                    self._on_message_data(event)  # type: ignore[arg-type]
            elif kind is Ping:
                stats.frames_received += 1
                stats.pings_received += 1
                answer = True
            elif kind is Pong:
                stats.frames_received += 1
                client._on_pong(event.payload)  # type: ignore[union-attr,arg-type]
            elif kind is Close:
                # The engine queued the echo; both close frames are then exchanged.
                stats.frames_received += 1
                client._on_close_frame(event)  # type: ignore[arg-type]
                answer = True
            else:
                client._on_failure(event)  # type: ignore[arg-type]
                answer = True
        if answer:
            self._answer()
        if self._rate_limit is not None and client._close_info is None:
            delay = self._rate_limit.throttle(client, len(data), stats.frames_received - frames_before)
            if delay:
                self.throttled_until = time.monotonic() + delay

    def _on_message_data(self, event: Data) -> None:
        client = self._client
        stats = client.stats
        if event.frame_finished:
            stats.frames_received += 1
        if client._close_info is not None:
            return  # closing: data that still arrives is dropped
        payload = event.payload
        message = self._current
        if message is None:
            message = self._current = WebsocketMessage(event.is_binary, self.consumed, MESSAGE_COST)
            self.unread += MESSAGE_COST
            self._inbox.put(message)
        if payload and message._feed(payload):
            self.unread += len(payload)
        if event.message_finished:
            message._finish()
            self._current = None
            stats.messages_received += 1
            stats.last_data_read = stats.last_read

    def _answer(self) -> None:
        """Have the client write what the engine queued in answer."""
        self._client._answer_blocking()
