"""The reader of a plain socket: no greenlet but an event-loop callback.

The loop calls it when the socket is readable; it reads what is there without
blocking and returns.  A handler waiting for a message is woken straight from
the loop (one greenlet switch each way per message, not two), and an idle
connection holds no reader stack.  Answers the socket cannot take at once run
in a greenlet of their own.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import gevent

from ..protocol.engine import EngineState
from .nonblocking import recv_nowait
from .reader import Reader, logger

if TYPE_CHECKING:
    from .client import WebsocketClient


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
