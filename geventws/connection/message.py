"""A received message, readable as a stream of chunks while it still arrives."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator

from gevent.event import Event

from ..protocol.close import WebsocketClosedException


class MessageBufferLimitError(Exception):
    """Raised by :meth:`WebsocketMessage.buffer` when the message is longer than the limit given."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"Message exceeds the buffer limit of {limit}")
        self.limit = limit


class MessageDiscardedError(Exception):
    """Raised on reading a message that was still arriving when the handler asked for the next one."""

    def __init__(self) -> None:
        super().__init__("The handler asked for the next message before reading this one: its rest was discarded")


class WebsocketMessage:
    """One text or binary message.

    Chunks are handed over by the connection's reader as frames arrive,
    so a handler can start working on a large message before it is complete.
    Reading a chunk gives its size back to the connection's receive window:
    a message nobody reads eventually stops the reader (TCP then pushes back on
    the peer) instead of growing in memory.  Asking the client for the next
    message gives back what is left of this one: a message whose last frame had
    arrived stays readable, while the rest of one still arriving is discarded (reading
    it then raises :class:`MessageDiscardedError`), so a handler that skips a
    message neither stalls its reader nor keeps the message in memory.  Text
    chunks are ``str``, binary chunks ``bytes``.
    """

    __slots__ = ("is_binary", "_chunks", "_finished", "_error", "_ready", "_consumed", "_value", "_unpaid")

    def __init__(self, is_binary: bool, consumed: Callable[[int], None], cost: int = 0) -> None:
        self.is_binary = is_binary
        self._chunks: deque[str | bytes] = deque()
        self._finished = False
        self._error: Exception | None = None
        self._ready: Event | None = None  # made only when a reader has to wait
        #: Gives bytes back to the receive window; ``None`` once the handler moved on (nothing counts any more).
        self._consumed: Callable[[int], None] | None = consumed
        self._value: str | bytes | None = None
        #: What this message counts against the receive window and the handler has not read yet.
        self._unpaid = cost

    @classmethod
    def complete(
        cls, is_binary: bool, payload: str | bytes, consumed: Callable[[int], None], unpaid: int
    ) -> WebsocketMessage:
        """A message that arrived whole in one chunk: the common case, built in one step, without a chunk queue."""
        message = cls.__new__(cls)
        message.is_binary = is_binary
        message._chunks = None  # type: ignore[assignment]
        message._finished = True
        message._error = None
        message._ready = None
        message._consumed = consumed
        message._value = payload
        message._unpaid = unpaid
        return message

    @property
    def is_text(self) -> bool:
        """Whether this is a text message (chunks are ``str``)."""
        return not self.is_binary

    @property
    def is_complete(self) -> bool:
        """Whether the last frame has arrived (not whether it has been read)."""
        return self._finished

    def read(self, timeout: float | None = None) -> str | bytes | None:
        """The next chunk, waiting for it if needed; ``None`` at the end of the message.

        Raises :class:`WebsocketClosedException` when the connection closed
        before the message was complete, and :class:`TimeoutError` on timeout.
        """
        if self._chunks is None:  # complete on arrival
            return self._take_whole()
        while not self._chunks:
            if self._error is not None:  # failed, or discarded (then finished later, but not whole)
                raise self._error
            if self._finished:
                self._pay(self._unpaid)  # read whole: the message's own cost too
                return None
            if self._ready is None:
                self._ready = Event()
            self._ready.clear()
            if not self._ready.wait(timeout):
                raise TimeoutError("No message data within the timeout")
        chunk = self._chunks.popleft()
        self._pay(len(chunk))
        return chunk

    def __iter__(self) -> Iterator[str | bytes]:
        while (chunk := self.read()) is not None:
            yield chunk

    def buffer(self, limit: int | None = None) -> str | bytes:
        """The whole message (the rest of it, if chunks were read already).

        ``limit`` bounds the length buffered, raising :class:`MessageBufferLimitError`
        before more is kept; the connection's message size limit applies anyway.
        """
        if self._value is not None:
            unpaid = self._unpaid
            if unpaid:  # not taken yet
                self._unpaid = 0
                consumed = self._consumed
                if consumed is not None:
                    consumed(unpaid)
                if limit is not None and len(self._value) > limit:
                    raise MessageBufferLimitError(limit)
            return self._value
        if self._finished and len(self._chunks) == 1:  # whole already: no join, no copy
            chunk = self._chunks.popleft()
            self._pay(self._unpaid)
            if limit is not None and len(chunk) > limit:
                raise MessageBufferLimitError(limit)
            self._value = chunk
            return chunk
        chunks = []
        length = 0
        for chunk in self:
            length += len(chunk)
            if limit is not None and length > limit:
                raise MessageBufferLimitError(limit)
            chunks.append(chunk)
        self._value = "".join(chunks) if self.is_text else b"".join(chunks)  # type: ignore[arg-type]
        return self._value

    def _take_whole(self) -> str | bytes | None:
        """read() of a message complete on arrival: its payload as one chunk (if any), then the end."""
        if not self._unpaid:
            return None  # taken already, by read() or buffer()
        self._pay(self._unpaid)
        value = self._value
        self._value = value[:0]  # type: ignore[index]
        return value or None

    def _pay(self, size: int) -> None:
        """``size`` bytes were read: give them back to the receive window (unless released, which did)."""
        self._unpaid -= size
        if size and self._consumed is not None:
            self._consumed(size)

    def __str__(self) -> str:
        value = self.buffer()
        return value if isinstance(value, str) else value.decode("utf-8")

    def __bytes__(self) -> bytes:
        value = self.buffer()
        return value if isinstance(value, bytes) else value.encode("utf-8")

    def __repr__(self) -> str:
        kind = "binary" if self.is_binary else "text"
        state = "complete" if self._finished else "arriving"
        return f"<WebsocketMessage {kind} {state}>"

    # Called by the connection's reader only.

    def _feed(self, chunk: str | bytes) -> bool:
        """Queue a chunk; whether it counts against the receive window (a discarded message keeps none)."""
        if self._consumed is None:
            return False
        self._chunks.append(chunk)
        self._unpaid += len(chunk)
        if self._ready is not None:
            self._ready.set()
        return True

    def _release(self) -> None:
        """The handler asked for the next message: give back what this one counts, and discard its unread rest.

        A message complete on arrival is in memory already and stays readable.
        One still arriving would otherwise keep filling the receive window
        (or memory) with data nobody waits for.
        """
        consumed, self._consumed = self._consumed, None
        if self._unpaid and consumed is not None:
            consumed(self._unpaid)
        if self._chunks is not None and not self._finished and self._error is None:
            self._chunks.clear()
            self._unpaid = 0
            self._error = MessageDiscardedError()

    def _finish(self) -> None:
        self._finished = True
        if self._ready is not None:
            self._ready.set()

    def _fail(self, error: WebsocketClosedException) -> None:
        if not self._finished:
            self._error = error
            if self._ready is not None:
                self._ready.set()
