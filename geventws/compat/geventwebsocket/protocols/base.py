"""gevent-websocket's ``BaseProtocol``: what a ``WebSocketApplication`` hands its events to."""

from __future__ import annotations

from typing import Any

__all__ = ["BaseProtocol"]


class BaseProtocol:
    """Passes ``on_open``, ``on_message`` and ``on_close`` on to the application; subclass to frame messages."""

    PROTOCOL_NAME = ""

    def __init__(self, app: Any) -> None:
        self._app = app

    def on_open(self) -> None:
        """The connection is open."""
        self.app.on_open()

    def on_message(self, message: Any) -> None:
        """A message arrived (``None`` when the connection closed)."""
        self.app.on_message(message)

    def on_close(self, reason: Any = None) -> None:
        """The connection is closed."""
        self.app.on_close(reason)

    @property
    def app(self) -> Any:
        """The application this protocol serves."""
        if self._app:
            return self._app
        raise RuntimeError("No application coupled")

    @property
    def server(self) -> Any:
        """The server of the application's connection."""
        ws = getattr(self.app, "ws", None)
        return ws.handler.server if ws is not None else None

    @property
    def handler(self) -> Any:
        """The request handler of the application's connection."""
        ws = getattr(self.app, "ws", None)
        return ws.handler if ws is not None else None
