"""Serializing whole, uncompressed server frames without a connection's state.

A server never masks, so the bytes of an uncompressed message do not depend on
the connection: a broadcast can build them once and write the same object to
every socket (see :mod:`geventws.gateway`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .speedups import speedups

OPCODE_CONTINUATION = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2

#: 16 KiB: a frame up to this size is written as one buffer, its header and
#: payload joined (one send; the copy costs less than gathering two buffers); a
#: larger one as its header and its payload uncopied, gathered in one send.
#: Copying costs about a microsecond per 16 KiB, and a large copy a fresh
#: allocation's page faults too: a 1 MiB message sent as one joined frame spent
#: about a fifth of the server's time faulting pages in (perf, the 1 MiB echo of
#: ``bench/run.py``).
JOIN_LIMIT = 16 * 1024

_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


def frame_header(opcode: int, length: int, fin: bool = True, rsv1: bool = False) -> bytes:
    """The header of a server (unmasked) frame; RSV1 marks a compressed message's first frame."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return _HEADER_16.pack(first, 126, length)
    return _HEADER_64.pack(first, 127, length)


def _single_frame_python(data: str | bytes, limit: int) -> bytes | None:
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if len(payload) > limit:
        return None
    return frame_header(OPCODE_TEXT if isinstance(data, str) else OPCODE_BINARY, len(payload)) + payload


#: ``single_frame(data, limit)``: a whole uncompressed message (``str`` text,
#: ``bytes`` binary) as one frame, header and payload in one buffer, or
#: ``None`` if its payload is over ``limit`` bytes.  In C where built: the
#: engine microbenchmark (``bench/engine_micro.py``) measured the Python version
#: at about 0.8 us of a small message's encode, the C one at about a third.
single_frame: Callable[[str | bytes, int], bytes | None] = (
    speedups.single_frame if speedups is not None else _single_frame_python
)


def split_frames(
    payload: bytes, opcode: int, split: int, rsv1: bool = False, fin: bool = True
) -> Iterator[tuple[bytes, bytes | memoryview]]:
    """(header, payload slice) of each frame of ``payload`` cut at ``split`` bytes; slices are not copied.

    The one frame splitter: whole messages, streamed chunks and broadcasts are
    all cut here, by bytes (a text frame may end inside a character; RFC 6455
    checks UTF-8 per message, not per frame).  The first frame carries
    ``opcode`` and ``rsv1``; the last carries FIN when ``fin``.
    """
    if len(payload) <= split:
        yield frame_header(opcode, len(payload), fin, rsv1), payload
        return
    view = memoryview(payload)
    for start in range(0, len(payload), split):
        piece = view[start : start + split]
        last = fin and start + split >= len(payload)
        if start == 0:
            yield frame_header(opcode, len(piece), last, rsv1), piece
        else:
            yield frame_header(OPCODE_CONTINUATION, len(piece), last), piece


@dataclass(frozen=True)
class EncodedMessage:
    """A message and its uncompressed wire form, split into frames of at most ``split`` bytes."""

    data: str | bytes
    wire: bytes
    frame_count: int

    @property
    def is_text(self) -> bool:
        """Whether the message is text."""
        return isinstance(self.data, str)

    @classmethod
    def encode(cls, data: str | bytes, split: int) -> EncodedMessage:
        """Serialize ``data`` once, as frames of at most ``split`` bytes of payload."""
        wire = single_frame(data, split)
        if wire is not None:
            return cls(data, wire, 1)
        payload = data.encode("utf-8") if isinstance(data, str) else data
        opcode = OPCODE_TEXT if isinstance(data, str) else OPCODE_BINARY
        frames = list(split_frames(payload, opcode, split))
        return cls(data, b"".join(part for frame in frames for part in frame), len(frames))
