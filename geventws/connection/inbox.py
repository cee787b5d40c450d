"""Messages received and not yet taken by the handler, and the handler waiting for them.

The reader puts messages in as their first frame arrives; the handler takes
them with :meth:`Inbox.get`.  Under the event-loop reader the loop switches
straight to the one waiting handler once it parsed a message (no event, no
callback round: one greenlet switch each way per message); a second waiter,
and the reader greenlet of a TLS connection, wait on an event instead.  What
bounds the inbox is the reader's receive window, not the inbox itself.
"""

from __future__ import annotations

from collections import deque

import gevent
from gevent.event import Event
from gevent.hub import Hub
from greenlet import getcurrent, greenlet

from .message import WebsocketMessage

#: The hub is switched to as the greenlet it is, not through ``Hub.switch``:
#: an attribute of the hub (a Python subclass of gevent's compiled greenlet
#: types) is looked up through ``__getattribute__``, and ``Hub.switch`` only adds
#: the legacy ``switch_out`` hook of the greenlet switching away.
_switch = greenlet.switch


class Inbox:
    """The queue between one connection's reader and its handler."""

    __slots__ = ("_messages", "_ready", "_waiter", "_hub", "_closed")

    def __init__(self, direct_wakeup: bool) -> None:
        self._messages: deque[WebsocketMessage] | None = None  # made with the first message
        self._ready: Event | None = None  # made when a waiter needs it
        self._waiter: greenlet | None = None  # the handler the loop switches to directly
        # The hub whose loop runs the reader and calls wake(), or None (no direct
        # wake-up): kept, as gevent.get_hub() looks up a thread-local, about 600
        # instructions of each message (bench/quiet.py echo, callgrind).
        self._hub: Hub | None = gevent.get_hub() if direct_wakeup else None
        self._closed = False

    def put(self, message: WebsocketMessage) -> None:
        """A message began to arrive (its reader-side bookkeeping is the reader's)."""
        if self._messages is None:
            self._messages = deque()
        self._messages.append(message)
        if self._ready is not None:
            self._ready.set()

    @property
    def has_messages(self) -> bool:
        """Whether a message is waiting to be taken."""
        return bool(self._messages)

    def get(self, timeout: float | None = None) -> WebsocketMessage | None:
        """The next message; ``None`` once :meth:`close` was called and none is left.

        Raises :class:`TimeoutError` when ``timeout`` seconds pass first.
        """
        messages = self._messages
        while not messages:
            if self._closed:
                return None
            self._wait(timeout)
            messages = self._messages
        return messages.popleft()

    def wake(self) -> None:
        """After a read from the loop: switch to the handler waiting here if it has something to take."""
        waiter = self._waiter
        if waiter is not None and (self._messages or self._closed):
            self._waiter = None
            waiter.switch(None)

    def close(self) -> None:
        """No message will come any more: every waiter wakes (what is queued can still be taken)."""
        self._closed = True
        if self._ready is not None:
            self._ready.set()
        if self._waiter is not None:
            gevent.get_hub().loop.run_callback(self._wake_closed, self._waiter)

    def _wake_closed(self, waiter: greenlet) -> None:
        waiting = self._waiter
        if waiting is not None and waiting is waiter:  # not woken meanwhile (it may wait elsewhere by now)
            self._waiter = None
            waiting.switch(None)

    def _wait(self, timeout: float | None) -> None:
        hub = self._hub
        if hub is None or self._waiter is not None:
            if self._ready is None:
                self._ready = Event()
            self._ready.clear()
            if not self._ready.wait(timeout):
                raise TimeoutError("No message within the timeout")
            return
        # The hub is switched to directly, not through gevent's Waiter: each
        # C frame between the handler and the switch is kept, copied off the
        # stack, by every idle connection (Waiter.get's is about 700 bytes).
        waiter = self._waiter = getcurrent()
        timer = gevent.Timeout.start_new(timeout) if timeout is not None else None
        try:
            _switch(hub)
        except gevent.Timeout as expired:
            if expired is not timer:
                raise
            raise TimeoutError("No message within the timeout") from None
        finally:
            if self._waiter is waiter:
                self._waiter = None
            if timer is not None:
                timer.close()
