"""The reference protocol engine, on wsproto; and the interface both engines share.

A thin layer over wsproto's :class:`~wsproto.connection.Connection` that adds
what a server needs and wsproto leaves out: size limits (see :mod:`.limits`),
a capped inflater (:class:`~.compression.BoundedPerMessageDeflate`), splitting
of large outgoing messages into frames, and telling a close sent by the peer
apart from a protocol error detected here (wsproto reports both as a
``CloseConnection`` event).  It reports the same :mod:`.events` as the lean
engine of :mod:`.framing`, which serves connections by default; the tests
feed both the same bytes and require the same events.  Choose it with
``Rfc6455ClientFactory(engine="wsproto")``.  Nothing here touches a socket.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from wsproto import events as wsproto_events
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.extensions import Extension

from .events import Close, Data, Event, Ping, Pong, ProtocolFailure
from .limits import MessageLimits

#: 32 KiB: frames this size keep per-frame overhead negligible while letting
#: control frames (pongs, the close) slip in between the frames of a long message.
DEFAULT_FRAME_SPLIT_THRESHOLD = 32 * 1024


class ProtocolEngine(Protocol):
    """What the connection needs of a protocol engine (:class:`WsprotoEngine` or ``LeanEngine``)."""

    frame_split_threshold: int

    @property
    def is_open(self) -> bool: ...
    @property
    def is_closed(self) -> bool: ...
    @property
    def close_received(self) -> bool: ...
    def receive(self, data: bytes | memoryview) -> list[Event]:
        """Parse ``data`` completely; keep no reference to it (its buffer is reused)."""
        ...

    def message_frames(self, data: str | bytes) -> Iterator[tuple[list[bytes | memoryview], int]]: ...
    def small_message(self, data: str | bytes) -> bytes: ...
    def frame(self, data: str | bytes, fin: bool) -> bytes: ...
    def ping(self, payload: bytes = b"") -> bytes: ...
    def pong(self, payload: bytes) -> bytes: ...
    def close(self, code: int | None, reason: str = "") -> bytes: ...


class WsprotoEngine:
    """One server-side connection with extensions, after the handshake."""

    def __init__(
        self,
        limits: MessageLimits,
        extensions: Sequence[Extension] = (),
        frame_split_threshold: int = DEFAULT_FRAME_SPLIT_THRESHOLD,
    ) -> None:
        self._limits = limits
        for extension in extensions:
            bind = getattr(extension, "bind_limits", None)
            if bind is not None:
                bind(limits)  # compression caps inflation at what the limits leave
        # Limits go last so that they see the payload after decompression.
        self._connection = Connection(ConnectionType.SERVER, [*extensions, limits])
        self.frame_split_threshold = frame_split_threshold

    @property
    def is_open(self) -> bool:
        """Whether data messages may still be sent."""
        return self._connection.state is ConnectionState.OPEN

    @property
    def is_closed(self) -> bool:
        """Whether both close frames have been exchanged."""
        return self._connection.state is ConnectionState.CLOSED

    @property
    def close_received(self) -> bool:
        return self._connection.state in (ConnectionState.REMOTE_CLOSING, ConnectionState.CLOSED)

    def receive(self, data: bytes | memoryview) -> list[Event]:
        """Feed bytes from the peer and return what they complete."""
        connection = self._connection
        connection.receive_data(bytes(data))  # wsproto keeps what it is given
        events: list[Event] = []
        for event in connection.events():
            if isinstance(event, wsproto_events.Message):
                is_binary = isinstance(event, wsproto_events.BytesMessage)
                events.append(Data(event.data, is_binary, event.frame_finished, event.message_finished))
            elif isinstance(event, wsproto_events.Ping):
                events.append(Ping(bytes(event.payload)))
            elif isinstance(event, wsproto_events.Pong):
                events.append(Pong(bytes(event.payload)))
            elif isinstance(event, wsproto_events.CloseConnection):
                if connection.state in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING):
                    # wsproto turns its ParseFailed into a CloseConnection without
                    # changing state; a close frame from the peer always does.
                    reason = event.reason or ""
                    if reason == "error in extension" and self._limits.violation:
                        reason = self._limits.violation
                    events.append(ProtocolFailure(event.code, reason))
                    break
                events.append(Close(event.code, event.reason or ""))
        return events

    def message_frames(self, data: str | bytes) -> Iterator[tuple[list[bytes | memoryview], int]]:
        """Serialize one whole message, one frame per write, split at the threshold."""
        threshold = self.frame_split_threshold
        if len(data) <= threshold // 4 or (isinstance(data, bytes) and len(data) <= threshold):
            yield [self.frame(data, True)], 1
            return
        pieces: list[str] | list[bytes] = (
            _split_text(data, threshold) if isinstance(data, str) else _split_bytes(data, threshold)
        )
        last = len(pieces) - 1
        for index in range(len(pieces)):
            yield [self.frame(pieces[index], index == last)], 1

    def small_message(self, data: str | bytes) -> bytes:
        """A message small enough for one frame, serialized (and compressed)."""
        return self.frame(data, True)

    def frame(self, data: str | bytes, fin: bool) -> bytes:
        """Serialize one data frame; a message is text or binary by the type of its first frame."""
        message: wsproto_events.Event
        if isinstance(data, str):
            message = wsproto_events.TextMessage(data=data, message_finished=fin)
        else:
            message = wsproto_events.BytesMessage(data=data, message_finished=fin)
        return self._connection.send(message)

    def ping(self, payload: bytes = b"") -> bytes:
        return self._connection.send(wsproto_events.Ping(payload=payload))

    def pong(self, payload: bytes) -> bytes:
        return self._connection.send(wsproto_events.Pong(payload=payload))

    def close(self, code: int | None, reason: str = "") -> bytes:
        """Serialize our close frame (the answer, if the peer closed first)."""
        return self._connection.send(wsproto_events.CloseConnection(code=code, reason=reason or None))  # type: ignore[arg-type]


def _split_bytes(data: bytes, size: int) -> list[bytes]:
    view = memoryview(data)
    return [bytes(view[start : start + size]) for start in range(0, len(data), size)]


def _split_text(text: str, size: int) -> list[str]:
    """Cut UTF-8 text into pieces of at most ``size`` bytes, never inside a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= size:
        return [text]
    pieces = []
    start = 0
    while start < len(encoded):
        end = min(start + size, len(encoded))
        while end < len(encoded) and encoded[end] & 0xC0 == 0x80:
            end -= 1  # step back off a continuation byte
        pieces.append(encoded[start:end].decode("utf-8"))
        start = end
    return pieces
