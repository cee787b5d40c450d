"""The reference protocol engine, on wsproto.

A thin layer over wsproto's :class:`~wsproto.connection.Connection` that
adds what a server needs and wsproto leaves out: size limits (see
:mod:`.limits`), a capped inflater
(:class:`~.deflate.BoundedPerMessageDeflate`), splitting of large outgoing
messages into frames, the protocol's own answers (pong, close echo, the close
of a failure) queued like :class:`~.engine.LeanEngine` queues them, and
telling a close sent by the peer apart from a protocol error detected here
(wsproto reports both as a ``CloseConnection`` event).  It satisfies the same
:class:`~.engine.ProtocolEngine` interface; the tests feed both engines the
same bytes and require the same events, codes and answers.  Choose it with
``Rfc6455ClientFactory(engine="wsproto")``.  Nothing here touches a socket.
"""

from __future__ import annotations

from collections.abc import Sequence

from wsproto import events as wsproto_events
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.extensions import Extension

from .close import is_sendable_code
from .engine import DEFAULT_FRAME_SPLIT_THRESHOLD, AnswerQueue, EngineState, Frames
from .events import Close, Data, Event, Ping, Pong, ProtocolFailure
from .limits import MessageLimits

_STATES = {
    ConnectionState.OPEN: EngineState.OPEN,
    ConnectionState.LOCAL_CLOSING: EngineState.LOCAL_CLOSING,
}


class WsprotoEngine(AnswerQueue):
    """The server side of one connection, on wsproto: the reference the lean engine is tested against."""

    def __init__(
        self,
        limits: MessageLimits,
        extensions: Sequence[Extension] = (),
        frame_split_threshold: int = DEFAULT_FRAME_SPLIT_THRESHOLD,
        *,
        defer_failure_close: bool = False,
    ) -> None:
        super().__init__(defer_failure_close)
        self._limits = limits
        for extension in extensions:
            bind = getattr(extension, "bind_limits", None)
            if bind is not None:
                bind(limits)  # compression caps inflation at what the limits leave
        # Limits go last so that they see the payload after decompression.
        self._connection = Connection(ConnectionType.SERVER, [*extensions, limits])
        self.frame_split_threshold = frame_split_threshold
        self.single_frame_limit = -1  # every message goes through wsproto's encoder

    @property
    def state(self) -> EngineState:
        """Where the close handshake stands."""
        if self._failed and self._held_failure is None:
            return EngineState.CLOSED
        return _STATES.get(self._connection.state, EngineState.CLOSED)

    def receive(self, data: bytes | memoryview) -> list[Event]:
        """Feed bytes from the peer; answers are queued as by :class:`~.engine.LeanEngine`."""
        connection = self._connection
        if self._failed or connection.state in (ConnectionState.REMOTE_CLOSING, ConnectionState.CLOSED):
            return []
        connection.receive_data(bytes(data))  # wsproto keeps what it is given
        events: list[Event] = []
        for event in connection.events():
            if isinstance(event, wsproto_events.Message):
                is_binary = isinstance(event, wsproto_events.BytesMessage)
                events.append(Data(event.data, is_binary, event.frame_finished, event.message_finished))
            elif isinstance(event, wsproto_events.Ping):
                events.append(Ping(bytes(event.payload)))
                if connection.state is ConnectionState.OPEN:
                    self._queue_frame(connection.send(event.response()))
            elif isinstance(event, wsproto_events.Pong):
                events.append(Pong(bytes(event.payload)))
            elif isinstance(event, wsproto_events.CloseConnection):
                events.append(self._close_event(event))
                break
        return events

    def _close_event(self, event: wsproto_events.CloseConnection) -> Close | ProtocolFailure:
        connection = self._connection
        if connection.state in (ConnectionState.OPEN, ConnectionState.LOCAL_CLOSING):
            # wsproto turns its ParseFailed into a CloseConnection without
            # changing state; a close frame from the peer always does.
            reason = event.reason or ""
            if reason == "error in extension" and self._limits.violation:
                reason = self._limits.violation
            self._fail_with(event.code, reason, can_hold=connection.state is ConnectionState.OPEN)
            return ProtocolFailure(event.code, reason)
        if connection.state is ConnectionState.REMOTE_CLOSING:
            echo = event.code if is_sendable_code(event.code) else None
            self._queue_frame(connection.send(wsproto_events.CloseConnection(code=echo)))  # type: ignore[arg-type]
        return Close(event.code, event.reason or "")

    def encode(self, data: str | bytes, fin: bool = True) -> Frames:
        """The frames of a whole message or of the next streamed chunk; text is cut between characters."""
        self._check_sendable()
        threshold = self.frame_split_threshold
        pieces: list[str | bytes]
        if isinstance(data, str):
            pieces = [*_split_text(data, threshold)] if len(data) > threshold // 4 else [data]
        else:
            pieces = [*_split_bytes(data, threshold)]
        last = len(pieces) - 1
        buffers: list[bytes | memoryview] = [
            self._frame(piece, fin and index == last) for index, piece in enumerate(pieces)
        ]
        return buffers, len(buffers)

    def _frame(self, data: str | bytes, fin: bool) -> bytes:
        message: wsproto_events.Event
        if isinstance(data, str):
            message = wsproto_events.TextMessage(data=data, message_finished=fin)
        else:
            message = wsproto_events.BytesMessage(data=data, message_finished=fin)
        return self._connection.send(message)

    def send_ping(self, payload: bytes) -> None:
        """Queue a ping; :class:`RuntimeError` unless open."""
        self._check_sendable()
        self._queue_frame(self._connection.send(wsproto_events.Ping(payload=payload)))

    def send_close(self, code: int | None, reason: str = "") -> bool:
        """Queue our close frame; False if one was sent already or the connection failed."""
        if self._held_failure is not None:
            return self.send_failure_close()
        if self._failed or self._connection.state is not ConnectionState.OPEN:
            return False
        self._queue_close(code, reason)
        return True

    def _queue_failure_close(self, code: int, reason: str) -> None:
        self._held_failure = None
        if self._connection.state is ConnectionState.OPEN:  # wsproto stays open after its ParseFailed
            self._queue_close(code, reason)

    def _queue_close(self, code: int | None, reason: str) -> None:
        close = wsproto_events.CloseConnection(code=code, reason=reason or None)  # type: ignore[arg-type]
        self._queue_frame(self._connection.send(close))

    def _check_sendable(self) -> None:
        if self.state is not EngineState.OPEN:
            raise RuntimeError("The connection is closing")


def _split_bytes(data: bytes, size: int) -> list[bytes]:
    if len(data) <= size:
        return [data]
    view = memoryview(data)
    return [bytes(view[start : start + size]) for start in range(0, len(data), size)]


def _split_text(text: str, size: int) -> list[str]:
    """Cut UTF-8 text into pieces of at most ``size`` bytes, never inside a character (wsproto sends ``str``)."""
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
