"""gevent-websocket's ``WebSocket`` (``environ["wsgi.websocket"]``) over a :class:`~geventws.WebsocketClient`.

The original's API, with geventws's behaviour underneath:

- ``receive()`` returns ``str`` for a text message and ``bytes`` for a binary
  one (the original gives a ``bytearray``), waiting for the whole message;
  ``None`` once the connection is closed; after that it raises
  :class:`~geventws.compat.geventwebsocket.exceptions.WebSocketError`, as the original does.
- Invalid UTF-8 closes with 1007, protocol errors with 1002 and messages over
  the client factory's limit with 1009 (the original has no limits and no
  UTF-8 check of fragmented text); ``receive()`` then returns ``None``.
- ``close(code, message)`` sends a well-formed close frame (the original puts
  a malformed one on the wire when a reason is given), and raises
  :class:`ValueError` for a code that may not be sent or a reason over 123
  bytes.
- Sends from any greenlet are serialized by the connection's writer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ...connection.client import WebsocketClient
from ...protocol.close import CloseCode, WebsocketClosedException
from .exceptions import WebSocketError

if TYPE_CHECKING:
    from .handler import WebSocketHandler

__all__ = ["MSG_ALREADY_CLOSED", "MSG_CLOSED", "MSG_SOCKET_DEAD", "WebSocket"]

MSG_SOCKET_DEAD = "Socket is dead"
MSG_ALREADY_CLOSED = "Connection is already closed"
MSG_CLOSED = "Connection closed"

logger = logging.getLogger("geventws.compat.geventwebsocket")


class WebSocket:
    """One WebSocket connection as gevent-websocket apps see it; ``client`` is the geventws client beneath."""

    __slots__ = ("client", "environ", "handler", "_ended")

    OPCODE_CONTINUATION = 0x00
    OPCODE_TEXT = 0x01
    OPCODE_BINARY = 0x02
    OPCODE_CLOSE = 0x08
    OPCODE_PING = 0x09
    OPCODE_PONG = 0x0A

    def __init__(self, client: WebsocketClient, environ: dict[str, Any], handler: WebSocketHandler | None) -> None:
        self.client = client
        self.environ: dict[str, Any] | None = environ
        self.handler = handler
        self._ended = False  # receive() returned None (or the app closed): the next receive() raises

    def __repr__(self) -> str:
        return f"<geventwebsocket WebSocket {self.client!r}>"

    @property
    def closed(self) -> bool:
        """True once either side started the close."""
        return self.client.is_closed

    @property
    def path(self) -> str | None:
        """The request path (``PATH_INFO``)."""
        return self.environ.get("PATH_INFO") if self.environ else None

    @property
    def origin(self) -> str | None:
        """The ``Origin`` request header."""
        return self.environ.get("HTTP_ORIGIN") if self.environ else None

    @property
    def protocol(self) -> str | None:
        """The ``Sec-WebSocket-Protocol`` request header as the client sent it (the original's meaning)."""
        return self.environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL") if self.environ else None

    @property
    def version(self) -> str | None:
        """The ``Sec-WebSocket-Version`` request header (always ``13``: older drafts are refused)."""
        return self.environ.get("HTTP_SEC_WEBSOCKET_VERSION") if self.environ else None

    @property
    def logger(self) -> logging.Logger:
        """The logger of the compatibility layer."""
        return logger

    @property
    def current_app(self) -> Any:
        """``server.application.current_app`` when the application has one, as in the original."""
        application = getattr(getattr(self.handler, "server", None), "application", None)
        current = getattr(application, "current_app", None)
        return current if current is not None else _NoApp()

    def receive(self) -> str | bytes | None:
        """The next whole message; ``None`` once the connection is closed, and after that ``WebSocketError``."""
        if self._ended:
            self.current_app.on_close(MSG_ALREADY_CLOSED)
            raise WebSocketError(MSG_ALREADY_CLOSED)
        try:
            message = self.client.receive()
            if message is not None:
                return message.buffer()
        except WebsocketClosedException:
            pass  # the connection failed while the message arrived
        self._ended = True
        return None

    def send(self, message: Any, binary: bool | None = None, do_compress: bool = True) -> None:
        """Send one message: binary for bytes-like values, text for ``str`` (``binary`` overrides).

        Raises :class:`~geventws.compat.geventwebsocket.exceptions.WebSocketError` once the connection is closed.
        ``do_compress`` is accepted and ignored: compression is negotiated
        by the endpoint's compression factory.
        """
        if binary is None:
            binary = not isinstance(message, str)
        self.send_frame(message, self.OPCODE_BINARY if binary else self.OPCODE_TEXT)

    def send_frame(self, message: Any, opcode: int, do_compress: bool = False) -> None:
        """Send a text or binary message (other opcodes are the protocol engine's business)."""
        if self.client.is_closed:  # before looking at the message: the loops of the README send None at the end
            self.current_app.on_close(MSG_ALREADY_CLOSED)
            raise WebSocketError(MSG_SOCKET_DEAD)
        try:
            if opcode == self.OPCODE_BINARY:
                self.client.send_binary(message if isinstance(message, _BYTES) else bytes(message))
            elif opcode == self.OPCODE_TEXT:
                self.client.send_text(_text(message))
            else:
                raise ValueError(f"Only text and binary messages can be sent, not opcode {opcode}")
        except WebsocketClosedException:
            self.current_app.on_close(MSG_SOCKET_DEAD)
            raise WebSocketError(MSG_SOCKET_DEAD) from None

    def close(self, code: int = CloseCode.NORMAL_CLOSE, message: bytes | str | None = b"") -> None:
        """Close with ``code`` and ``message`` (str or UTF-8 bytes); waits for the handshake (the close period)."""
        self._ended = True
        if self.client.is_closed:
            self.current_app.on_close(MSG_ALREADY_CLOSED)
        reason = message.decode("utf-8") if isinstance(message, (bytes, bytearray)) else (message or "")
        self.client.close(code, reason)
        self.environ = None


_BYTES = (bytes, bytearray, memoryview)


def _text(message: Any) -> str:
    if isinstance(message, str):
        return message
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message).decode("utf-8")
    return str(message or "")


class _NoApp:
    """The original's stand-in when the application has no ``current_app``."""

    def on_close(self, *args: Any) -> None:
        pass
