"""Close codes (RFC 6455 section 7.4), close information and the closed error."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CloseCode(enum.IntEnum):
    """Status codes of a close frame; 1005, 1006 and 1015 are never sent."""

    NORMAL_CLOSE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNACCEPTABLE_TYPE = 1003
    NONE = 1005
    ABNORMAL_CLOSE = 1006
    INCONSISTENT_FRAME_DATA_TYPE = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_LARGE = 1009
    EXPECTED_EXTENSION_MISSING = 1010
    UNEXPECTED_SERVER_ERROR = 1011
    SERVICE_RESTARTING = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE_FAILURE = 1015


#: Codes that describe a local condition and must never appear in a close frame.
LOCAL_ONLY_CODES = frozenset({CloseCode.NONE, CloseCode.ABNORMAL_CLOSE, CloseCode.TLS_HANDSHAKE_FAILURE})


_SENDABLE_PROTOCOL_CODES = frozenset(code for code in CloseCode if code not in LOCAL_ONLY_CODES)


def is_sendable_code(code: int) -> bool:
    """Whether ``code`` may be put in a close frame by an endpoint (RFC 6455 7.4.2)."""
    if 3000 <= code <= 4999:
        return True
    return code in _SENDABLE_PROTOCOL_CODES


@dataclass(frozen=True)
class WebsocketCloseInfo:
    """How a connection ended: the code and reason, when, and which side started it."""

    code: int
    reason: str
    timestamp: float
    by_peer: bool


class WebsocketClosedException(Exception):
    """Raised when sending on, or reading from, a closed connection."""

    def __init__(self, code: int, reason: str = "", message: str | None = None) -> None:
        super().__init__(message or f"The connection is closed (code {code}{', ' + reason if reason else ''})")
        self.code = code
        self.reason = reason
