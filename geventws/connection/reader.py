"""The one reader of a connection: socket -> protocol engine -> the client's messages.

Exactly one reader reads a client's socket.  It feeds the engine, has the
client write what the engine queued in answer (pongs, the close echo, the
close of a failure) and hands messages to the client's queue, so pings and
closes are answered while the handler is busy elsewhere.  Two kinds share
that work behind one interface (:class:`Reader`):

- :class:`LoopReader`, on a plain socket: no greenlet but an event-loop
  callback.  The loop calls it when the socket is readable; it reads what is
  there without blocking and returns.  A handler waiting for a message is
  woken straight from the loop (one greenlet switch each way per message, not
  two), and an idle connection holds no reader stack.  Answers the socket
  cannot take at once run in a greenlet of their own.
- :class:`GreenletReader`, under TLS, where a readable socket does not mean a
  readable record: a bare greenlet blocks in ``recv``.

Flow control lives here too.  What arrives is kept until the handler reads
it, up to a receive window; past that the reader stops reading and TCP pushes
back on the peer.  The rate limit pauses parsing; while paused, what arrives
is moved into held bytes (up to the window) so that a peer that hangs up is
noticed at once and, after a close, its answer is read within the close
period.
"""

from __future__ import annotations

import logging
import socket as stdlib_socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
import greenlet
from gevent.event import Event

from ..protocol.close import WebsocketClosedException
from ..protocol.engine import EngineState, ProtocolEngine
from ..protocol.events import Close, Data, Ping, Pong
from ..protocol.speedups import speedups
from .inbox import Inbox
from .message import WebsocketMessage

if TYPE_CHECKING:
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


class LoopReader(Reader):
    """Reads from event-loop callbacks: no greenlet, no stack while idle (plain sockets)."""

    __slots__ = ("_raw", "_watcher", "_throttle_timer")

    def __init__(self, client: WebsocketClient, raw: Any, *args: Any) -> None:
        super().__init__(client, *args)
        self._raw = raw  # the OS socket beneath gevent's, for non-blocking reads from the loop
        self._watcher: Any = None
        self._throttle_timer: Any = None

    def start(self) -> None:
        loop = gevent.get_hub().loop
        # gevent's socket made a read watcher for its own blocking reads, which never
        # happen here (the loop does every read): watching with it saves one per connection.
        watcher = getattr(self._socket, "_read_event", None)
        self._watcher = watcher if watcher is not None else loop.io(self._raw.fileno(), 1)
        self._watcher.start(self._on_readable)
        if self._held:  # what came with the handshake: parse it without waiting for more
            loop.run_callback(self._on_readable)

    def throw(self, error: BaseException) -> None:
        """gevent's socket was closed under the reader: end reading, as when the connection is lost.

        Closing a gevent socket cancels whatever waits on its read watcher by
        throwing into the ``__self__`` of the watcher's callback (a greenlet,
        for its own reads).  This reader reads with that watcher (see
        :meth:`start`), so the throw lands here, in the hub, once gevent has
        closed the watcher; without this method the reader would never finish.
        """
        logger.debug("%r: the socket was closed under the reader (%r)", self._client, error)
        self.at_eof = True
        self._end_reading()

    def _on_readable(self) -> None:
        """The event loop's callback: the socket is readable (or held bytes wait); runs in the hub, never blocks."""
        if self._watcher is None:
            return  # a callback scheduled before the reading ended
        try:
            if self._held and not self.throttled_until:  # what came with the handshake, or was held
                held, self._held = self._held, b""
                self._on_data(held)
            elif not self.at_eof:
                try:
                    data = recv_nowait(self._raw, self._buffer)
                except OSError as error:
                    logger.debug("%r: read failed: %s", self._client, error)
                    data = b""
                if data is None:
                    return  # woken for nothing: the watcher calls again when data is there
                if not data:
                    self._eof()
                elif self.throttled_until and self._client._close_info is None:
                    self._held += data  # as in _received(), inline: a call fewer per read
                else:
                    self._on_data(data)
            if (  # anything for _after_read() to do (a cheap check; otherwise the watcher just goes on)
                self._engine.state is not EngineState.OPEN
                or self.unread >= self.receive_window
                or self.throttled_until
                or self._held
                or self.at_eof
            ):
                self._after_read()
        except Exception:
            logger.exception("%r: reader failed", self._client)
            self._end_reading()
        self._inbox.wake()

    def _after_read(self) -> None:
        """Stop reading, pause, or go on, by the state the last read left."""
        engine = self._engine
        # Both close frames exchanged: stop and close TCP first (RFC 6455 section 7.1.1).
        # After a failure, drain until the peer closes or the close timer drops it.
        if (engine.state is EngineState.CLOSED and not engine.failed) or (self.at_eof and not self._held):
            self._end_reading()
            return
        watcher = self._watcher
        if self.throttled_until and self._throttle_timer is None:
            self._throttle_timer = watcher.loop.timer(max(self.throttled_until - time.monotonic(), 0.0))
            self._throttle_timer.start(self._on_throttle_end)
        if self._must_pause() and (not self.throttled_until or len(self._held) >= self.receive_window):
            watcher.stop()  # TCP pushes back on the peer until the handler reads or the pause ends
            self.window_full = self.unread >= self.receive_window
            return
        if not watcher.active and not self.at_eof:  # after end of file (or abort) the socket is not watched again
            watcher.start(self._on_readable)
        if (self._held and not self.throttled_until) or self.at_eof:
            watcher.loop.run_callback(self._on_readable)  # held bytes: parse them without waiting for more

    def _on_throttle_end(self) -> None:
        self._throttle_timer = None
        self.throttled_until = 0.0
        self.resume()

    def _end_reading(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is None:
            return
        watcher.stop()
        watcher.close()
        if self._throttle_timer is not None:
            self._throttle_timer.stop()
            self._throttle_timer = None
        self._client._finish()

    def resume(self) -> None:
        watcher = self._watcher
        if watcher is None:
            return
        if not watcher.active and not self.at_eof:
            # Watch again rather than read once: with nothing on the socket yet, a read
            # finds nothing and the stopped watcher would never call back.
            watcher.start(self._on_readable)
        if self._held or self.at_eof:
            watcher.loop.run_callback(self._on_readable)

    def unthrottle(self) -> None:
        if self._throttle_timer is not None:
            self._throttle_timer.stop()
            self._throttle_timer = None
        super().unthrottle()

    def abort(self) -> None:
        watcher = self._watcher
        if watcher is not None and not self.at_eof:
            # Stop watching at once, not when the loop next sees end of file:
            # whoever called abort() may close the socket next, and the event
            # loop must never watch a closed file descriptor (libev aborts the
            # process).  The reader finishes from the loop, as it would have.
            self.at_eof = True
            watcher.stop()
            watcher.loop.run_callback(self._on_readable)

    def _answer(self) -> None:
        # The loop may not block: what the socket does not take at once is
        # finished by a greenlet of its own.
        client = self._client
        if client.writer.send_control_nowait():
            client._half_close_if_failed()
        else:
            gevent.spawn(client._answer_blocking)


class GreenletReader(Reader):
    """Reads in a greenlet of its own that blocks in ``recv`` (TLS, where readable is not a record)."""

    __slots__ = ("_greenlet", "_room")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._greenlet: greenlet.greenlet | None = None
        self._room = Event()  # set while the reader may read
        self._room.set()

    def start(self) -> None:
        # A bare greenlet, not a gevent.Greenlet: nothing joins or kills it
        # (it ends when the socket does), and it costs a third of the memory.
        hub = gevent.get_hub()
        self._greenlet = greenlet.greenlet(self._read_loop, parent=hub)
        hub.loop.run_callback(self._greenlet.switch)

    def is_current(self) -> bool:
        return gevent.getcurrent() is self._greenlet

    def resume(self) -> None:
        self._room.set()

    def _read_loop(self) -> None:
        read_into = self._socket.recv_into
        buffer = self._buffer
        engine = self._engine
        try:
            while engine.state is not EngineState.CLOSED or engine.failed:
                if self._must_pause():
                    self._pause()
                elif self._held:
                    data, self._held = self._held, b""
                    self._on_data(data)
                elif self.at_eof:
                    break
                else:
                    size = read_into(buffer)
                    if not size:
                        break
                    self._on_data(buffer[:size])
        except OSError as error:
            logger.debug("%r: read failed: %s", self._client, error)
        except Exception:
            logger.exception("%r: reader failed", self._client)
        finally:
            self._client._finish()

    def _pause(self) -> None:
        """One pause: the receive window is full, or the rate limit asked for a pause."""
        pause = self.throttled_until - time.monotonic()
        if self.throttled_until and pause <= 0:
            self.throttled_until = 0.0
            return
        if pause <= 0 or self.at_eof or len(self._held) >= self.receive_window:
            self.window_full = self.unread >= self.receive_window
            self._room.clear()
            self._room.wait(pause if pause > 0 else None)
            return
        size = -1
        with gevent.Timeout(pause, False):
            size = self._socket.recv_into(self._buffer)
        if size > 0:
            self._received(self._buffer[:size])
        elif size == 0:
            self._eof()
