"""permessage-deflate (RFC 7692): negotiation, and inflaters that cannot be turned into bombs.

:class:`DeflateCodec` holds one connection's zlib objects for the lean engine
(:mod:`.engine`); :class:`BoundedPerMessageDeflate` is the same for the
wsproto engine (:mod:`.wsproto_engine`).

Negotiation follows RFC 7692 section 7: offers are tried in the client's
order and the first one whose parameters are valid and can be honoured is
accepted; an offer asking for a server window of 8 bits is declined because
zlib cannot compress raw deflate with a 256-byte window.

Memory per connection, as zlib documents it: the deflater takes
``2**(window_bits + 2) + 2**(memory_level + 9)`` bytes and the inflater
``2**window_bits`` plus about 7 KiB.  The defaults (12-bit windows, memory
level 5) cost about 16 + 16 + 4 + 7 = 43 KiB per connection that negotiated
compression, in the same range as websockets' 64 KiB with its defaults
(which are the same window and memory level); zlib's own defaults (15 and 8)
would cost about 168 KiB.  With context takeover off on both sides the
compressor and inflater are dropped after each message and idle connections
cost nothing.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

from .handshake import split_tokens
from .limits import MessageLimits

_EMPTY_BLOCK_TAIL = b"\x00\x00\xff\xff"
_RSV1 = RsvBits(True, False, False)


@dataclass(frozen=True)
class DeflateParameters:
    """What one connection agreed on."""

    server_max_window_bits: int
    client_max_window_bits: int
    server_no_context_takeover: bool
    client_no_context_takeover: bool

    def header(self, client_window_offered: bool, server_window_requested: bool) -> str:
        """The ``Sec-WebSocket-Extensions`` answer for these parameters."""
        parts = ["permessage-deflate"]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if server_window_requested or self.server_max_window_bits < 15:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if client_window_offered and self.client_max_window_bits < 15:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)


class Rfc7692CompressionFactory:
    """Negotiates permessage-deflate for the :class:`~geventws.Websocket` endpoint it is given to.

    ``server_max_window_bits`` and ``memory_level`` size our deflater;
    ``client_max_window_bits`` is asked of clients that support the parameter
    and sizes our inflater.  Messages shorter than ``compression_threshold``
    bytes are sent uncompressed (deflate would make them longer), and binary
    messages only when ``compress_binary``.
    """

    def __init__(
        self,
        *,
        server_max_window_bits: int = 12,
        client_max_window_bits: int = 12,
        server_no_context_takeover: bool = False,
        client_no_context_takeover: bool = False,
        memory_level: int = 5,
        compression_level: int = zlib.Z_DEFAULT_COMPRESSION,
        compression_threshold: int = 64,
        compress_binary: bool = True,
    ) -> None:
        for name, bits in (
            ("server_max_window_bits", server_max_window_bits),
            ("client_max_window_bits", client_max_window_bits),
        ):
            if not 9 <= bits <= 15:
                raise ValueError(f"{name} must be between 9 and 15, not {bits}")
        if not 1 <= memory_level <= 9:
            raise ValueError(f"memory_level must be between 1 and 9, not {memory_level}")
        self.server_max_window_bits = server_max_window_bits
        self.client_max_window_bits = client_max_window_bits
        self.server_no_context_takeover = server_no_context_takeover
        self.client_no_context_takeover = client_no_context_takeover
        self.memory_level = memory_level
        self.compression_level = compression_level
        self.compression_threshold = compression_threshold
        self.compress_binary = compress_binary

    def negotiate(self, offers: str | None) -> tuple[str, NegotiatedDeflate] | None:
        """Answer the request's ``Sec-WebSocket-Extensions`` value (``offers``).

        Returns the response header value and what was agreed, or ``None`` to
        decline (no acceptable permessage-deflate offer).
        """
        for offer in split_tokens(offers):
            accepted = self._accept(offer)
            if accepted is not None:
                return accepted
        return None

    def _accept(self, offer: str) -> tuple[str, NegotiatedDeflate] | None:
        name, _, rest = offer.partition(";")
        if name.strip().lower() != "permessage-deflate":
            return None
        params = _parse_params(rest)
        if params is None:
            return None
        server_bits = self.server_max_window_bits
        server_requested = "server_max_window_bits" in params
        if server_requested:
            requested = _window_bits(params["server_max_window_bits"])
            if requested is None or requested < 9:
                return None  # 8 is valid, but zlib cannot compress with it: try the next offer
            server_bits = min(server_bits, requested)
        client_bits = 15
        client_offered = "client_max_window_bits" in params
        if client_offered:
            value = params["client_max_window_bits"]
            limit = 15 if value is None else _window_bits(value)
            if limit is None:
                return None
            client_bits = min(self.client_max_window_bits, limit)
        elif params.keys() - _KNOWN_PARAMS:
            return None
        agreed = DeflateParameters(
            server_max_window_bits=server_bits,
            client_max_window_bits=client_bits,
            server_no_context_takeover=self.server_no_context_takeover or "server_no_context_takeover" in params,
            client_no_context_takeover=self.client_no_context_takeover or "client_no_context_takeover" in params,
        )
        negotiated = NegotiatedDeflate(
            agreed, self.compression_level, self.memory_level, self.compression_threshold, self.compress_binary
        )
        return agreed.header(client_offered, server_requested), negotiated


_KNOWN_PARAMS = frozenset(
    {"server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits", "client_max_window_bits"}
)
_VALUELESS = frozenset({"server_no_context_takeover", "client_no_context_takeover"})


def _parse_params(text: str) -> dict[str, str | None] | None:
    """The offer's parameters, or ``None`` if one is unknown, repeated or malformed."""
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        if not item.strip():
            continue
        key, has_value, value = item.partition("=")
        key = key.strip().lower()
        if key not in _KNOWN_PARAMS or key in params:
            return None
        if has_value:
            if key in _VALUELESS:
                return None
            params[key] = value.strip().strip('"')
        else:
            if key == "server_max_window_bits":
                return None  # needs a value
            params[key] = None
    return params


def _window_bits(value: str | None) -> int | None:
    if value is None or not value.isdigit() or len(value) > 2:
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


@dataclass(frozen=True)
class NegotiatedDeflate:
    """permessage-deflate as agreed with one client, with the server's zlib settings."""

    parameters: DeflateParameters
    compression_level: int
    memory_level: int
    compression_threshold: int
    compress_binary: bool

    def codec(self) -> DeflateCodec:
        """The zlib state of one connection, for the lean engine."""
        return DeflateCodec(self)

    def wsproto_extension(self) -> BoundedPerMessageDeflate:
        """The same as a wsproto extension, for the wsproto engine."""
        return BoundedPerMessageDeflate(self)


class InflateLimitError(Exception):
    """Inflating would go past the output limit given."""


class DeflateCodec:
    """One connection's deflater and inflater, with the RFC 7692 framing of their output.

    The inflater is capped: each call outputs at most ``max_length`` bytes and
    a compressed input that would give more raises :class:`InflateLimitError`
    before the memory is spent.  zlib objects are dropped after each message
    when context takeover is off, so idle connections keep none.
    """

    __slots__ = (
        "_inflate_bits",
        "_reset_inflater",
        "_deflate_bits",
        "_reset_deflater",
        "_level",
        "_memory_level",
        "_threshold",
        "_compress_binary",
        "_inflater",
        "_deflater",
    )

    def __init__(self, negotiated: NegotiatedDeflate) -> None:
        agreed = negotiated.parameters
        self._inflate_bits = agreed.client_max_window_bits
        self._reset_inflater = agreed.client_no_context_takeover
        self._deflate_bits = agreed.server_max_window_bits
        self._reset_deflater = agreed.server_no_context_takeover
        self._level = negotiated.compression_level
        self._memory_level = negotiated.memory_level
        self._threshold = negotiated.compression_threshold
        self._compress_binary = negotiated.compress_binary
        self._inflater: zlib._Decompress | None = None
        self._deflater: zlib._Compress | None = None

    def inflate(self, data: bytes, max_length: int) -> bytes:
        """Inflate part of a message (raises ``zlib.error`` on invalid data)."""
        if self._inflater is None:
            self._inflater = zlib.decompressobj(-self._inflate_bits)
        output = self._inflater.decompress(data, max_length)
        if self._inflater.unconsumed_tail:
            raise InflateLimitError
        return output

    def end_inflate(self, max_length: int) -> bytes:
        """Finish a message: inflate the empty block the sender stripped (RFC 7692 section 7.2.2)."""
        tail = self.inflate(_EMPTY_BLOCK_TAIL, max_length)
        if self._reset_inflater:
            self._inflater = None
        return tail

    def worth_compressing(self, length: int, is_text: bool) -> bool:
        """Whether a message of ``length`` bytes is compressed (threshold, and the binary option)."""
        return length >= self._threshold and (is_text or self._compress_binary)

    def deflate(self, data: bytes | memoryview, fin: bool) -> bytes:
        """Deflate part of a message; the last part drops the sync flush's tail (RFC 7692 section 7.2.1)."""
        if self._deflater is None:
            self._deflater = zlib.compressobj(self._level, zlib.DEFLATED, -self._deflate_bits, self._memory_level)
        output = self._deflater.compress(data) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
        if fin:
            output = output[:-4]
            if self._reset_deflater:
                self._deflater = None
        return output


class BoundedPerMessageDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate with a capped inflater, a threshold and zlib settings.

    wsproto inflates a frame with no output limit; here each call is capped at
    what is left of the compressed message size limit (plus one byte to detect the
    overflow), so a small compressed frame cannot expand beyond the limit.
    """

    def __init__(self, negotiated: NegotiatedDeflate) -> None:
        agreed = negotiated.parameters
        super().__init__(
            client_no_context_takeover=agreed.client_no_context_takeover,
            client_max_window_bits=agreed.client_max_window_bits,
            server_no_context_takeover=agreed.server_no_context_takeover,
            server_max_window_bits=agreed.server_max_window_bits,
        )
        self._enabled = True
        self.agreed = agreed
        self._level = negotiated.compression_level
        self._memory_level = negotiated.memory_level
        self._threshold = negotiated.compression_threshold
        self._compress_binary = negotiated.compress_binary
        self._limits: MessageLimits | None = None
        self._outbound_compressed = False

    def bind_limits(self, limits: MessageLimits) -> None:
        """Share the connection's limits: inflation is capped at what they leave."""
        self._limits = limits

    def _budget(self) -> int:
        """How much one inflate call may output: what the message limit leaves, plus one to see an overflow."""
        limits = self._limits
        assert limits is not None, "bind_limits() is called when the connection is set up"
        return max(0, limits.compressed_message_size_limit - limits.message_size) + 1

    def frame_inbound_header(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, payload_length: int
    ) -> CloseReason | RsvBits:
        # Unlike wsproto's, this keeps the state of a fragmented message across
        # control frames that arrive between its fragments.
        """wsproto hook: note whether the message is compressed; RSV1 only on its first frame."""
        if opcode.iscontrol() or opcode is Opcode.CONTINUATION:
            if rsv.rsv1:
                return CloseReason.PROTOCOL_ERROR  # RSV1 only marks a message's first frame
            self._inbound_is_compressible = opcode is Opcode.CONTINUATION
            return _RSV1
        self._inbound_is_compressible = True
        self._inbound_compressed = rsv.rsv1
        if rsv.rsv1 and self._decompressor is None:
            self._decompressor = zlib.decompressobj(-self.client_max_window_bits)
        return _RSV1

    def frame_inbound_payload_data(self, proto: FrameDecoder | FrameProtocol, data: bytes) -> bytes | CloseReason:
        """wsproto hook: inflate, never past the message limit."""
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        assert self._decompressor is not None
        try:
            inflated = self._decompressor.decompress(data, self._budget())
        except zlib.error as error:
            return self._invalid(error)
        if self._decompressor.unconsumed_tail:
            return self._too_big()
        return inflated

    def frame_inbound_complete(self, proto: FrameDecoder | FrameProtocol, fin: bool) -> bytes | CloseReason | None:
        """wsproto hook: inflate the stripped tail at the end of a message."""
        if not fin or not self._inbound_is_compressible or not self._inbound_compressed:
            return None
        assert self._decompressor is not None and self._limits is not None
        budget = self._budget()
        try:
            tail = self._decompressor.decompress(_EMPTY_BLOCK_TAIL, budget)
        except zlib.error as error:
            return self._invalid(error)
        if self._decompressor.unconsumed_tail or len(tail) >= budget:
            return self._too_big()
        self._limits.message_size += len(tail)  # this tail bypasses the limits' payload hook
        if self.client_no_context_takeover:
            self._decompressor = None
        return tail

    def _too_big(self) -> CloseReason:
        assert self._limits is not None
        self._limits.violation = self._limits.inflated_too_big()
        return CloseReason.MESSAGE_TOO_BIG

    def _invalid(self, error: zlib.error) -> CloseReason:
        assert self._limits is not None
        self._limits.violation = f"Invalid compressed data: {error}"
        return CloseReason.INVALID_FRAME_PAYLOAD_DATA

    def frame_outbound(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, data: bytes, fin: bool
    ) -> tuple[RsvBits, bytes]:
        """wsproto hook: compress data frames past the threshold."""
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            self._outbound_compressed = len(data) >= self._threshold and (
                opcode is Opcode.TEXT or self._compress_binary
            )
        elif opcode is not Opcode.CONTINUATION:
            return rsv, data  # control frames are never compressed
        if not self._outbound_compressed:
            return rsv, data
        if opcode is not Opcode.CONTINUATION:
            rsv = RsvBits(True, rsv.rsv2, rsv.rsv3)
        if self._compressor is None:
            self._compressor = zlib.compressobj(
                self._level, zlib.DEFLATED, -self.server_max_window_bits, self._memory_level
            )
        compressed = self._compressor.compress(data)
        if fin:
            compressed += self._compressor.flush(zlib.Z_SYNC_FLUSH)
            compressed = compressed[:-4]  # RFC 7692 section 7.2.1: drop the empty block's tail
            if self.server_no_context_takeover:
                self._compressor = None
        else:
            compressed += self._compressor.flush(zlib.Z_SYNC_FLUSH)
        return rsv, compressed
