"""gevent-websocket's exceptions, with its hierarchy (``WebSocketError`` is an ``OSError``, its ``socket.error``)."""

from __future__ import annotations

__all__ = ["FrameTooLargeException", "ProtocolError", "WebSocketError"]


class WebSocketError(OSError):
    """The connection is closed or lost: raised by ``send()``, and by ``receive()`` after it returned ``None``."""


class ProtocolError(WebSocketError):
    """A protocol violation (for ``except`` clauses: geventws closes with 1002 and ``receive()`` returns ``None``)."""


class FrameTooLargeException(ProtocolError):
    """A frame over the limit (kept for ``except`` clauses: geventws closes with 1009 itself)."""
