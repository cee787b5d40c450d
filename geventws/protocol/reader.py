"""Reading client frames: headers, their checks, unmasking and uncompressed messages, in C or in Python.

The hot half of :class:`~.engine.LeanEngine`'s receive path.  A reader
parses every complete frame of a received chunk in one call: it checks what
RFC 6455 sections 5 and 7 ask of each frame (RSV bits, opcodes, masking,
minimal length encoding, control frame rules), continuation order and the
size limits by the header alone, before any payload is kept; it unmasks and
turns uncompressed messages into :class:`~.events.Data` events (text decoded
as strict UTF-8, a character may straddle frames), pongs into
:class:`~.events.Pong` and pings into :class:`~.events.Ping`.  What needs the
connection's state it hands to the engine as it is: a close frame's payload
(:class:`CloseFrame`), compressed payload (:class:`CompressedChunk`, the
engine inflates it) and the failure that stops it
(:class:`~.events.ProtocolFailure`, always last).

:class:`FrameReader` is the C type of ``_speedups.c`` where it is built, else
:class:`PythonFrameReader`; ``GEVENTWS_NO_SPEEDUPS=1`` forces the latter, and
the tests run both against wsproto.  Why C: in the engine microbenchmark
(``bench/engine_micro.py``) this loop in Python cost about 2.5 us per
16-byte message, most of the engine's share of the echo benchmark's CPU.

A binary frame of at most :data:`WHOLE_FRAME_LIMIT` bytes whose payload
arrives over several reads is delivered whole once complete: one buffer per
frame, so the message it ends needs no join.  The buffer grows with what
arrives (never past four times what was received: a 1 MiB frame whose
first read brings a quarter of it gets its whole buffer at once, and no
reallocation copies what came before), so a header announcing a large frame
costs nothing until the payload comes.  Larger frames are
delivered chunk by chunk as they arrive, and never buffered whole.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import NamedTuple, Protocol, Union

from .events import Data, Event, Ping, Pong, ProtocolFailure
from .limits import frame_too_big, message_too_big
from .masking import apply_mask
from .speedups import speedups

_CLOSE, _PING, _PONG = 0x8, 0x9, 0xA
_CONTINUATION, _TEXT, _BINARY = 0x0, 0x1, 0x2
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")

#: 1 MiB: binary frames up to this size are delivered whole (see above), like
#: the receive window a connection holds of unread messages.
WHOLE_FRAME_LIMIT = 1024 * 1024


class CloseFrame(NamedTuple):
    """The unmasked payload of the peer's close frame; the reader parses nothing after it."""

    payload: bytes


class CompressedChunk(NamedTuple):
    """Payload of a compressed message, as it arrives; the engine inflates it."""

    payload: bytes
    is_binary: bool
    frame_finished: bool
    message_finished: bool


#: What a reader appends: events, and what the engine turns into events.
Parsed = Union[Event, CloseFrame, CompressedChunk]


class Reader(Protocol):
    """What :class:`~.engine.LeanEngine` needs of a reader (the C type or :class:`PythonFrameReader`)."""

    def feed(self, data: bytes | memoryview, events: list[Parsed]) -> bool:
        """Append the events of every frame ``data`` completes; keep (a copy of) what it leaves incomplete.

        Returns whether the engine has to look at the events: a
        :class:`~.events.Ping` (to answer), a :class:`CloseFrame`, a
        :class:`CompressedChunk` or a :class:`~.events.ProtocolFailure` was
        appended.  After a close frame or a failure nothing more is parsed.
        Nothing appended or kept refers to ``data``.
        """
        ...


class _Failure(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def decode_text(
    decoder: codecs.IncrementalDecoder | None, chunk: bytes, final: bool
) -> tuple[str, codecs.IncrementalDecoder | None]:
    """UTF-8 of one chunk of a text message, and the decoder to carry to the next chunk.

    A message in one piece is decoded in one call, without a decoder (the
    common case); raises :class:`UnicodeDecodeError`.
    """
    if final and decoder is None:
        return chunk.decode("utf-8"), None
    if decoder is None:
        decoder = _Utf8Decoder()
    return decoder.decode(chunk, final), decoder


class PythonFrameReader:
    """The reader in pure Python: the fallback of the C type, and its reference in the tests."""

    def __init__(
        self,
        frame_size_limit: int,
        message_size_limit: int,
        text_only: bool,
        compression: bool,
        whole_frame_limit: int = WHOLE_FRAME_LIMIT,
    ) -> None:
        self.frame_size_limit = frame_size_limit
        self.message_size_limit = message_size_limit
        self.text_only = text_only
        self.compression = compression
        self.whole_frame_limit = whole_frame_limit
        self.pending = b""  # an incomplete frame header, or control frame
        self._stopped = False  # a close frame or a failure: nothing more is parsed
        self._attention = False
        # The data frame whose payload is arriving:
        self._remaining = 0
        self._mask = b""
        self._fin = False
        self._parts: list[bytes] | None = None  # the pieces of a frame delivered whole
        # The message those frames belong to:
        self._opcode = 0
        self._size = 0
        self._compressed = False
        self._decoder: codecs.IncrementalDecoder | None = None

    def feed(self, data: bytes | memoryview, events: list[Parsed]) -> bool:
        """Append the events of every frame ``data`` completes (see :class:`Reader`)."""
        if self._stopped:
            return False
        if self.pending:
            data = self.pending + data
            self.pending = b""
        self._attention = False
        try:
            self._parse(data, events)
        except _Failure as failure:
            self._stopped = True
            events.append(ProtocolFailure(failure.code, failure.reason))
            return True
        return self._attention

    def _parse(self, data: bytes | memoryview, events: list[Parsed]) -> None:
        view = memoryview(data)
        pos = 0
        end = len(data)
        while pos < end:
            if self._remaining:  # payload of the current data frame, as much as is here
                take = min(self._remaining, end - pos)
                mask = self._mask
                chunk = apply_mask(view[pos : pos + take], mask)
                pos += take
                self._remaining -= take
                if self._remaining and take & 3:
                    self._mask = mask[take & 3 :] + mask[: take & 3]
                if self._parts is not None:  # a frame delivered whole
                    self._parts.append(chunk)
                    if self._remaining:
                        continue
                    chunk = b"".join(self._parts)
                    self._parts = None
                self._deliver(chunk, not self._remaining, events)
                continue
            if end - pos < 2:
                break
            first, second = data[pos], data[pos + 1]
            opcode = first & 0x0F
            # Checks run in wsproto's order, so that both engines answer the
            # same bytes with the same close code (tests/test_framing.py).
            if opcode >= _CLOSE:
                if opcode > _PONG:
                    raise _Failure(1002, f"Reserved opcode {opcode:#x}")
                if not first & 0x80:
                    raise _Failure(1002, "Fragmented control frame")
                if second & 0x7F > 125:
                    raise _Failure(1002, "Control frame payload over 125 bytes")
            elif opcode > _BINARY:
                raise _Failure(1002, f"Reserved opcode {opcode:#x}")
            length = second & 0x7F
            header = 6
            if length == 126:
                if end - pos < 4:
                    break
                length = int.from_bytes(view[pos + 2 : pos + 4], "big")
                header = 8
                if length < 126:
                    raise _Failure(1002, "Payload length not minimally encoded")
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(view[pos + 2 : pos + 10], "big")
                header = 14
                if length >> 63:
                    raise _Failure(1002, "Payload length with the most significant bit set")
                if length < 65536:
                    raise _Failure(1002, "Payload length not minimally encoded")
            if opcode < _CLOSE:
                self._check_size(opcode, length, bool(first & 0x40))
            if first & 0x70 and not (first & 0x70 == 0x40 and self.compression and 1 <= opcode <= 2):
                # With permessage-deflate RSV1 marks a compressed message on its first frame only.
                raise _Failure(1002, "Reserved bits set without a negotiated extension")
            if not second & 0x80:
                raise _Failure(1002, "Client frames must be masked")
            if opcode >= _CLOSE:
                if end - pos < header + length:
                    break
                mask = bytes(view[pos + header - 4 : pos + header])
                payload = apply_mask(view[pos + header : pos + header + length], mask)
                pos += header + length
                self._attention |= opcode != _PONG
                if opcode == _PING:
                    events.append(Ping(payload))
                elif opcode == _PONG:
                    events.append(Pong(payload))
                else:
                    events.append(CloseFrame(payload))
                    self._stopped = True
                    return
                continue
            if end - pos < header:
                break
            self._start_data_frame(opcode, bool(first & 0x80), length, bool(first & 0x40))
            self._mask = bytes(view[pos + header - 4 : pos + header])
            pos += header
            if not length:
                self._deliver(b"", True, events)
            elif (
                end - pos < length
                and length <= self.whole_frame_limit
                and self._opcode == _BINARY
                and not self._compressed
            ):
                self._parts = []
        if pos < end:
            self.pending = bytes(view[pos:])

    def _check_size(self, opcode: int, length: int, rsv1: bool) -> None:
        """Refuse a data frame by its header alone, before any of its payload is kept."""
        if opcode == _BINARY and self.text_only:
            raise _Failure(1003, "Binary messages are not accepted")
        if length > self.frame_size_limit:
            raise _Failure(1009, frame_too_big(length, self.frame_size_limit))
        compressed = rsv1 if opcode != _CONTINUATION else self._compressed
        if not compressed:  # compressed sizes are counted as they inflate
            size = (self._size if opcode == _CONTINUATION else 0) + length
            if size > self.message_size_limit:
                raise _Failure(1009, message_too_big(size, self.message_size_limit))

    def _start_data_frame(self, opcode: int, fin: bool, length: int, compressed: bool) -> None:
        if opcode == _CONTINUATION:
            if not self._opcode:
                raise _Failure(1002, "Continuation frame without a message to continue")
        else:
            if self._opcode:
                raise _Failure(1002, "New message before the previous one finished")
            self._opcode = opcode
            self._size = 0
            self._compressed = compressed
        if not self._compressed:
            self._size += length
        self._remaining = length
        self._fin = fin

    def _deliver(self, chunk: bytes, frame_finished: bool, events: list[Parsed]) -> None:
        message_finished = frame_finished and self._fin
        if self._compressed:
            events.append(CompressedChunk(chunk, self._opcode == _BINARY, frame_finished, message_finished))
            self._attention = True
        elif self._opcode == _BINARY:
            events.append(Data(chunk, True, frame_finished, message_finished))
        else:
            try:
                text, self._decoder = decode_text(self._decoder, chunk, message_finished)
            except UnicodeDecodeError as error:
                raise _Failure(1007, "Text message is not valid UTF-8") from error
            events.append(Data(text, False, frame_finished, message_finished))
        if message_finished:
            self._opcode = 0
            self._decoder = None


FrameReader: Callable[[int, int, bool, bool, int], Reader] = PythonFrameReader
if speedups is not None:
    speedups.set_event_types(Data, Ping, Pong, ProtocolFailure, CloseFrame, CompressedChunk)
    FrameReader = speedups.FrameReader
