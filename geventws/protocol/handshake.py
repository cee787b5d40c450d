"""The rules of the opening handshake that need no HTTP objects (RFC 6455 section 4).

The acceptors (:mod:`geventws.http.acceptor`) decide whether to accept; this
module holds what they and the endpoint compute from header values: the
accept key, the key's validity, comma-separated header tokens, and the bytes
of the 101 response.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Headers a WSGI response carries by default that make no sense on a 101.
_STRIPPED_FROM_101 = frozenset({"content-type", "content-length"})


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value answering ``Sec-WebSocket-Key`` (RFC 6455 section 4.2.2)."""
    digest = hashlib.sha1(key.encode("ascii") + _GUID).digest()
    return binascii.b2a_base64(digest, newline=False).decode("ascii")


def is_valid_key(key: str | None) -> bool:
    """Whether ``key`` is the base64 encoding of 16 bytes, as RFC 6455 section 4.1 requires."""
    if not key:
        return False
    try:
        return len(base64.b64decode(key.strip().encode("ascii"), validate=True)) == 16
    except (binascii.Error, UnicodeEncodeError):
        return False


def split_tokens(value: str | None) -> list[str]:
    """The comma-separated tokens of a header value, stripped, empty ones dropped.

    WSGI servers join repeated headers with commas, so the tokens of every
    occurrence of a header come out of its one joined value.
    """
    if not value:
        return []
    return [token.strip() for token in value.split(",") if token.strip()]


def serialize_101(headers: Iterable[tuple[str, str]]) -> bytes:
    """The bytes of a ``101 Switching Protocols`` response with ``headers`` (minus body headers)."""
    lines = ["HTTP/1.1 101 Switching Protocols"]
    lines.extend(f"{name}: {value}" for name, value in headers if name.lower() not in _STRIPPED_FROM_101)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
