"""The protocol engine: RFC 6455 framing and the protocol's own answers, sans I/O.

An engine is fed the bytes a peer sent and returns what they complete as
:mod:`.events`; whatever the protocol itself must answer -- the pong to a
ping, the echo of a close frame, the close frame that fails a connection --
it queues for :meth:`ProtocolEngine.data_to_send`.  Messages go out through
one entry point, :meth:`ProtocolEngine.encode`.  The engine keeps the one
record of the connection's protocol state (open, closing, closed, failed);
the connection layer only reads, feeds, writes what is queued and
dispatches events.

:class:`LeanEngine` serves every connection by default.  Why it exists:
profiling the echo benchmark (``bench/``, 100 connections of 16-byte
messages) showed wsproto's per-frame machinery -- its byte buffer copies, the
generator-driven parser, four extension hooks per frame, masking through
translate tables and frozen-dataclass events -- taking most of the server's
CPU, and the pure Python unmasking capping large messages at ~100 MB/s.  This
engine parses every frame of a received chunk in one call of its
:mod:`.reader` (C, with a pure Python fallback), which copies nothing but the
unmasked payload and reads a large frame's payload as it arrives, so it is
never buffered whole.  Together they check what wsproto checks (RFC 6455
sections 5 and 7): RSV bits, opcodes, masking, minimal length encoding,
control frame rules, continuation order, UTF-8 of text and close reasons,
close codes; plus the size limits before any payload is kept, and
permessage-deflate through the capped
:class:`~.deflate.DeflateCodec`.  :class:`~.wsproto_engine.WsprotoEngine`
remains as the reference it is tested against, byte for byte, and as an
option of :class:`~geventws.Rfc6455ClientFactory`.
"""

from __future__ import annotations

import codecs
import enum
import zlib
from typing import Protocol

from .close import is_sendable_code
from .deflate import DeflateCodec, InflateLimitError
from .events import Close, Data, Event, Ping, ProtocolFailure
from .frames import (
    JOIN_LIMIT,
    OPCODE_BINARY,
    OPCODE_CONTINUATION,
    OPCODE_TEXT,
    frame_header,
    single_frame,
    split_frames,
)
from .limits import MessageLimits
from .reader import WHOLE_FRAME_LIMIT, CloseFrame, CompressedChunk, FrameReader, Parsed, _Failure, decode_text

_CLOSE, _PING, _PONG = 0x8, 0x9, 0xA

#: 256 KiB, the writer's batch (``connection.writer.WRITE_BATCH``): control
#: frames (pongs, the close) slip in between batches, so smaller frames would
#: not let them pass sooner, and every frame costs both sides a header to build
#: and parse (32 KiB frames made the 1 MiB echo about 15 % slower, most of it
#: in the peer's per-frame work).
DEFAULT_FRAME_SPLIT_THRESHOLD = 256 * 1024

#: The frames of one message or chunk: the buffers to write, in order (header and
#: payload slices, not joined), and how many frames they hold.
Frames = tuple[list["bytes | memoryview"], int]


class EngineState(enum.IntEnum):
    """Where the close handshake stands (RFC 6455 section 7)."""

    OPEN = 0  #: data flows both ways
    LOCAL_CLOSING = 1  #: our close frame is queued or sent; waiting for the peer's
    CLOSED = 2  #: both close frames exchanged, or the connection failed


class ProtocolEngine(Protocol):
    """What the connection layer needs of an engine (:class:`LeanEngine` or the wsproto reference).

    Feeding never raises on bad input: a protocol violation or a limit comes
    back as a :class:`~.events.ProtocolFailure` event, the failing close frame
    is queued, and :attr:`failed` is set.  An engine made with
    ``defer_failure_close=True`` holds that close frame instead, and stays
    open for sending, until :meth:`send_failure_close`: the connection first
    lets its handler answer the messages that arrived before the failing
    frame (RFC 6455 section 7.1.7 asks for the close frame, not for silence
    before it).
    """

    frame_split_threshold: int
    #: The largest payload :meth:`encode` would make into one frame in one
    #: buffer right now (a whole uncompressed message), or -1 when it makes
    #: none: what a writer may encode and send in one step itself
    #: (``send_frame``, see the writer).
    single_frame_limit: int

    @property
    def state(self) -> EngineState:
        """Where the close handshake stands."""
        ...

    @property
    def failed(self) -> bool:
        """Whether this side failed the connection (its close frame is queued; the peer's bytes are ignored)."""
        ...

    def receive(self, data: bytes | memoryview) -> list[Event]:
        """Parse ``data`` completely and return its events; keep no reference to ``data`` (its buffer is reused).

        Pongs, the close echo and the close frame of a failure are queued for
        :meth:`data_to_send`.
        """
        ...

    def data_to_send(self) -> list[bytes]:
        """Take the control frames queued by :meth:`receive`, :meth:`send_ping` and :meth:`send_close`."""
        ...

    def encode(self, data: str | bytes, fin: bool = True) -> Frames:
        """The frames of the next part of an outgoing message: a whole message, or a streamed chunk.

        ``str`` starts a text message and ``bytes`` a binary one; until a call
        with ``fin`` true, further calls continue the same message.  Frames are
        cut at :attr:`frame_split_threshold` bytes of payload.  Raises
        :class:`RuntimeError` unless the engine is :attr:`EngineState.OPEN`.
        """
        ...

    def send_ping(self, payload: bytes) -> None:
        """Queue a ping; :class:`RuntimeError` unless open."""
        ...

    def send_close(self, code: int | None, reason: str = "") -> bool:
        """Queue our close frame (``None``: without a code); False if one was sent already.

        While a failure's close frame is held, that one is queued instead.
        """
        ...

    def send_failure_close(self) -> bool:
        """Queue the close frame of a failure held by ``defer_failure_close``; False if none is held."""
        ...


class AnswerQueue:
    """What both engines share: the control frames queued for :meth:`data_to_send`, and the failure."""

    __slots__ = ("_outgoing", "_failed", "_defer_failure_close", "_held_failure")

    def __init__(self, defer_failure_close: bool = False) -> None:
        self._outgoing: list[bytes] | None = None  # made for the first frame: most connections never queue one
        self._failed = False
        self._defer_failure_close = defer_failure_close
        self._held_failure: tuple[int, str] | None = None  # the close frame of a failure, not queued yet

    @property
    def failed(self) -> bool:
        """Whether this side failed the connection."""
        return self._failed

    def send_failure_close(self) -> bool:
        """Queue the close frame of a held failure; False if none is held."""
        failure, self._held_failure = self._held_failure, None
        if failure is None:
            return False
        self._queue_failure_close(*failure)
        return True

    def _fail_with(self, code: int, reason: str, can_hold: bool) -> None:
        """Fail: parse nothing more; queue the close frame now, or hold it while sending is still allowed."""
        self._failed = True
        if self._defer_failure_close and can_hold:
            self._held_failure = (code, reason)
        else:
            self._queue_failure_close(code, reason)

    def _queue_failure_close(self, code: int, reason: str) -> None:
        raise NotImplementedError

    def data_to_send(self) -> list[bytes]:
        """Take the control frames queued so far."""
        outgoing, self._outgoing = self._outgoing, None
        return [] if outgoing is None else outgoing

    def _queue_frame(self, frame: bytes) -> None:
        if self._outgoing is None:
            self._outgoing = [frame]
        else:
            self._outgoing.append(frame)


class LeanEngine(AnswerQueue):
    """The server side of one connection, with or without permessage-deflate: the default engine.

    ``whole_frame_limit``: binary frames up to this size are delivered whole
    (see :mod:`.reader`); the connection keeps it within its receive window.
    """

    __slots__ = (
        "message_size_limit",
        "frame_split_threshold",
        "single_frame_limit",
        "_limits",
        "state",
        "_remote_closed",
        "_reader",
        "_deflate",
        "_inflated",
        "_decoder",
        "_outbound_opcode",
        "_outbound_compressed",
    )

    def __init__(
        self,
        limits: MessageLimits,
        frame_split_threshold: int = DEFAULT_FRAME_SPLIT_THRESHOLD,
        deflate: DeflateCodec | None = None,
        whole_frame_limit: int = WHOLE_FRAME_LIMIT,
        *,
        defer_failure_close: bool = False,
    ) -> None:
        self.message_size_limit = limits.message_size_limit
        self._limits = limits
        self.frame_split_threshold = frame_split_threshold
        super().__init__(defer_failure_close)
        #: Where the close handshake stands: an attribute, not a property, as
        #: the reader and the writer read it on every message.
        self.state = EngineState.OPEN
        self._remote_closed = False  # the peer's close frame arrived: nothing more is parsed
        self._reader = FrameReader(
            limits.frame_size_limit, limits.message_size_limit, limits.text_only, deflate is not None, whole_frame_limit
        )
        self._deflate = deflate
        # The compressed message arriving: its inflated size, and the decoder of its text.
        self._inflated = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        self._outbound_opcode = 0
        self._outbound_compressed = False
        self.single_frame_limit = self._single_frame_limit()

    def _single_frame_limit(self) -> int:
        if self._outbound_opcode or self._deflate is not None:
            return -1  # a streamed message goes on, or frames may be compressed
        return min(self.frame_split_threshold, JOIN_LIMIT)

    # ------------------------------------------------------------- receiving

    def receive(self, data: bytes | memoryview) -> list[Event]:
        """Parse everything ``data`` completes; keep (a copy of) what it leaves incomplete.

        Nothing returned or kept refers to ``data``: the caller may reuse its buffer.
        """
        if self._failed or self._remote_closed:
            return []  # after a close frame or an error nothing more is parsed
        events: list[Parsed] = []
        if self._reader.feed(data, events):
            self._complete(events)
        return events  # type: ignore[return-value]  # _complete replaced what was not an Event

    def _complete(self, events: list[Parsed]) -> None:
        """Finish what the reader leaves to the engine: pongs, close frames, compressed payload, the failure."""
        for index, event in enumerate(events):
            if type(event) is Ping:
                if self.state is EngineState.OPEN:
                    self._queue_frame(frame_header(_PONG, len(event.payload)) + event.payload)
            elif type(event) is ProtocolFailure:
                self._fail(event.code, event.reason)
                return
            elif type(event) is CloseFrame or type(event) is CompressedChunk:
                try:
                    if isinstance(event, CloseFrame):
                        events[index] = self._close_frame(event.payload)
                    else:
                        events[index] = self._inflate_chunk(event)
                except _Failure as failure:
                    del events[index:]  # the reader went on; the engine stops here
                    events.append(ProtocolFailure(failure.code, failure.reason))
                    self._fail(failure.code, failure.reason)
                    return

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 section 7.1.7): queue (or hold) our close frame, parse nothing more."""
        self._fail_with(code, reason, can_hold=self.state is EngineState.OPEN)

    def _queue_failure_close(self, code: int, reason: str) -> None:
        self._held_failure = None
        self.send_close(code, reason)
        self.state = EngineState.CLOSED

    def _close_frame(self, payload: bytes) -> Close:
        if not payload:
            close = Close(1005, "")
        elif len(payload) == 1:
            raise _Failure(1002, "Close frame with a 1-byte payload")
        else:
            code = int.from_bytes(payload[:2], "big")
            if not is_sendable_code(code):
                raise _Failure(1002, f"Invalid close code {code}")
            try:
                close = Close(code, payload[2:].decode("utf-8"))
            except UnicodeDecodeError as error:
                raise _Failure(1007, "Close reason is not valid UTF-8") from error
        self._remote_closed = True
        if self.state is EngineState.OPEN:
            # Echo the code (RFC 6455 section 5.5.1), or none where it may not be sent.
            self.send_close(close.code if is_sendable_code(close.code) else None)
        self.state = EngineState.CLOSED
        return close

    def _inflate_chunk(self, chunk: CompressedChunk) -> Data:
        message_finished = chunk.message_finished
        output = self._inflate(chunk.payload, message_finished)
        if chunk.is_binary:
            data = Data(output, True, chunk.frame_finished, message_finished)
        else:
            try:
                text, self._decoder = decode_text(self._decoder, output, message_finished)
            except UnicodeDecodeError as error:
                raise _Failure(1007, "Text message is not valid UTF-8") from error
            data = Data(text, False, chunk.frame_finished, message_finished)
        if message_finished:
            self._inflated = 0
            self._decoder = None
        return data

    def _inflate(self, chunk: bytes, message_finished: bool) -> bytes:
        """Inflate, never past the compressed message limit: the output is capped, not checked afterwards."""
        assert self._deflate is not None
        limit = self._limits.compressed_message_size_limit
        try:
            output = self._deflate.inflate(chunk, limit - self._inflated + 1)
            self._inflated += len(output)
            if self._inflated <= limit and message_finished:
                tail = self._deflate.end_inflate(limit - self._inflated + 1)
                self._inflated += len(tail)
                output += tail
        except InflateLimitError:
            self._inflated = limit + 1
        except zlib.error as error:
            raise _Failure(1007, f"Invalid compressed data: {error}") from error
        if self._inflated > limit:
            raise _Failure(1009, self._limits.inflated_too_big())
        return output

    # --------------------------------------------------------------- sending

    def encode(self, data: str | bytes, fin: bool = True) -> Frames:
        """The frames of a whole message or of the next streamed chunk (see :class:`ProtocolEngine`)."""
        if self.state is not EngineState.OPEN:
            raise RuntimeError("The connection is closing")
        split = self.frame_split_threshold
        if fin and self.single_frame_limit >= 0:
            wire = single_frame(data, self.single_frame_limit)  # a whole message in one frame: one buffer
            if wire is not None:
                return [wire], 1
        is_text = isinstance(data, str)
        payload = data.encode("utf-8") if isinstance(data, str) else data
        first = not self._outbound_opcode
        if first:
            opcode = OPCODE_TEXT if is_text else OPCODE_BINARY
            self._outbound_compressed = self._deflate is not None and self._deflate.worth_compressing(
                len(payload), is_text
            )
        else:
            opcode = OPCODE_CONTINUATION
        self._outbound_opcode = 0 if fin else (self._outbound_opcode or opcode)
        self.single_frame_limit = self._single_frame_limit()
        compressed = self._outbound_compressed
        if compressed:
            assert self._deflate is not None
            payload = self._deflate.deflate(payload, fin)
        if len(payload) <= split:  # one frame: the common case
            header = frame_header(opcode, len(payload), fin, first and compressed)
            return ([header + payload] if len(payload) <= JOIN_LIMIT else [header, payload]), 1
        buffers: list[bytes | memoryview] = []
        for header, piece in split_frames(payload, opcode, split, first and compressed, fin):
            buffers.append(header)
            buffers.append(piece)
        return buffers, len(buffers) // 2

    def send_ping(self, payload: bytes) -> None:
        """Queue a ping; :class:`RuntimeError` unless open."""
        self._check_sendable()
        self._queue_frame(frame_header(_PING, len(payload)) + payload)

    def send_close(self, code: int | None, reason: str = "") -> bool:
        """Queue our close frame (``None``: without a code); False if one was sent already."""
        if self._held_failure is not None:
            return self.send_failure_close()
        if self.state is not EngineState.OPEN:
            return False
        self.state = EngineState.CLOSED if self._remote_closed else EngineState.LOCAL_CLOSING
        if code is None or code == 1005:
            self._queue_frame(frame_header(_CLOSE, 0))
        else:
            payload = code.to_bytes(2, "big") + _truncate_utf8(reason, 123)
            self._queue_frame(frame_header(_CLOSE, len(payload)) + payload)
        return True

    def _check_sendable(self) -> None:
        if self.state is not EngineState.OPEN:
            raise RuntimeError("The connection is closing")


def _truncate_utf8(text: str, limit: int) -> bytes:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return encoded
    return encoded[:limit].decode("utf-8", errors="ignore").encode("utf-8")
