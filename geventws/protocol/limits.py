"""Size limits, and their enforcement inside wsproto (for the wsproto engine).

The lean engine (:mod:`.engine`) checks the same limits in its own parser.

wsproto has no size limits of its own, but it calls each extension with a
frame's header (opcode, payload length) before it reads the payload, and with
each chunk of payload after any decompression.  :class:`MessageLimits` is such an
extension: it never negotiates anything and uses no RSV bit, it only refuses.
Placed after permessage-deflate in the extension list it sees inflated sizes.

A compressed message has a limit of its own (``compressed_message_size_limit``,
the message limit when not given): its size on the wire says nothing about
its size in memory.  Each 1009 reason names the setting that refused it, so a
peer's close and the log say which option to raise.
"""

from __future__ import annotations

from wsproto.extensions import Extension
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol, Opcode, RsvBits

#: 10 MiB: large enough for the messages applications usually exchange, small
#: enough that a few hostile peers cannot exhaust a server's memory.
DEFAULT_MESSAGE_SIZE_LIMIT = 10 * 1024 * 1024

_NO_RSV = RsvBits(False, False, False)


class MessageLimits(Extension):
    """Refuses frames and messages over their size limit with 1009, and binary with 1003 in text-only mode."""

    name = "geventws-limits"

    def __init__(
        self,
        message_size_limit: int,
        frame_size_limit: int,
        text_only: bool = False,
        compressed_message_size_limit: int | None = None,
    ) -> None:
        self.message_size_limit = message_size_limit
        self.frame_size_limit = frame_size_limit
        self.text_only = text_only
        #: The inflated size allowed to a compressed message: the lower of the two limits.
        self.compressed_message_size_limit = message_size_limit
        #: The setting that limit comes from, named in the reason of a 1009.
        self.compressed_limit_name = "message_size_limit"
        if compressed_message_size_limit is not None and compressed_message_size_limit < message_size_limit:
            self.compressed_message_size_limit = compressed_message_size_limit
            self.compressed_limit_name = "compressed_message_size_limit"
        #: Bytes of the current message so far (after decompression).
        self.message_size = 0
        self._in_control_frame = False
        self._compressed = False  # the current message arrives compressed (wsproto engine)
        #: Why the last frame was refused, for the close reason.
        self.violation = ""

    def enabled(self) -> bool:
        """wsproto hook: always active."""
        return True

    def offer(self) -> bool:
        """wsproto hook: nothing to negotiate."""
        return False

    def frame_inbound_header(
        self, proto: FrameDecoder | FrameProtocol, opcode: Opcode, rsv: RsvBits, payload_length: int
    ) -> CloseReason | RsvBits:
        """wsproto hook: refuse by the header alone, before any payload is kept."""
        self._in_control_frame = opcode.iscontrol()
        if self._in_control_frame:
            return _NO_RSV  # wsproto already caps control frames at 125 bytes
        if opcode is not Opcode.CONTINUATION:
            self.message_size = 0
            self._compressed = rsv.rsv1  # extensions all see the frame's own RSV bits
            if self.text_only and opcode is Opcode.BINARY:
                self.violation = "Binary messages are not accepted"
                return CloseReason.UNSUPPORTED_DATA
        if payload_length > self.frame_size_limit:
            self.violation = frame_too_big(payload_length, self.frame_size_limit)
            return CloseReason.MESSAGE_TOO_BIG
        if not self._compressed and self.message_size + payload_length > self.message_size_limit:
            # Uncompressed: the header alone proves the message is too large.
            self.violation = message_too_big(self.message_size + payload_length, self.message_size_limit)
            return CloseReason.MESSAGE_TOO_BIG
        return _NO_RSV

    def frame_inbound_payload_data(self, proto: FrameDecoder | FrameProtocol, data: bytes) -> bytes | CloseReason:
        """wsproto hook: count the (inflated) payload against the message's limit."""
        if self._in_control_frame:
            return data
        self.message_size += len(data)
        if self.message_size > self.current_limit():
            self.violation = self.inflated_too_big() if self._compressed else self._uncompressed_too_big()
            return CloseReason.MESSAGE_TOO_BIG
        return data

    def frame_inbound_complete(self, proto: FrameDecoder | FrameProtocol, fin: bool) -> None:
        """wsproto hook: nothing to add at the end of a frame."""
        return None

    def current_limit(self) -> int:
        """The limit of the message arriving: compressed or not."""
        return self.compressed_message_size_limit if self._compressed else self.message_size_limit

    def inflated_too_big(self) -> str:
        """The reason of a 1009 for a compressed message that inflates past its limit."""
        limit, name = self.compressed_message_size_limit, self.compressed_limit_name
        return f"Message inflates beyond the limit of {limit} bytes ({name})"

    def _uncompressed_too_big(self) -> str:
        return message_too_big(self.message_size, self.message_size_limit)


def frame_too_big(length: int, limit: int) -> str:
    """The reason of a 1009 for a frame header announcing more than ``frame_size_limit``."""
    return f"Frame of {length} bytes exceeds the limit of {limit} bytes (frame_size_limit)"


def message_too_big(size: int, limit: int) -> str:
    """The reason of a 1009 for an uncompressed message growing past ``message_size_limit``."""
    return f"Message of {size}+ bytes exceeds the limit of {limit} bytes (message_size_limit)"
