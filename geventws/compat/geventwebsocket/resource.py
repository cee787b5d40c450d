"""gevent-websocket's ``Resource`` and ``WebSocketApplication``: WebSocket apps and WSGI apps by path.

``Resource([(path_regex, app), ...])`` (or an ordered dict) dispatches each
request to the first entry whose regex matches the start of the path
(``re.match``) and whose kind fits: a :class:`WebSocketApplication` subclass
for WebSocket connections, any WSGI app for plain requests.  A request that
no entry fits is answered 404 (the original raises, which pywsgi turns into
a 500 with a traceback).
"""

from __future__ import annotations

import re
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Callable, ClassVar, Union

from werkzeug.exceptions import NotFound

from .exceptions import WebSocketError
from .protocols.base import BaseProtocol
from .websocket import WebSocket

__all__ = ["Resource", "WebSocketApplication"]


class WebSocketApplication:
    """One connection's application: ``on_open()``, ``on_message(message)``, ``on_close(reason)``; ``self.ws``.

    The default ``on_message`` echoes.  ``on_message`` is called with
    ``None`` once the connection closed, then ``on_close``, as in the original.
    """

    protocol_class: ClassVar[type[BaseProtocol]] = BaseProtocol

    def __init__(self, ws: WebSocket) -> None:
        self.protocol = self.protocol_class(self)
        self.ws = ws

    def handle(self) -> None:
        """Run the connection: ``on_open``, each message to ``on_message``, then ``on_close``."""
        self.protocol.on_open()
        while True:
            try:
                message = self.ws.receive()
            except WebSocketError:
                self.protocol.on_close()
                break
            self.protocol.on_message(message)

    def on_open(self, *args: Any, **kwargs: Any) -> None:
        """The connection is open."""

    def on_close(self, *args: Any, **kwargs: Any) -> None:
        """The connection is closed."""

    def on_message(self, message: Any, *args: Any, **kwargs: Any) -> None:
        """A message arrived: echoed by default."""
        self.ws.send(message, **kwargs)

    @classmethod
    def protocol_name(cls) -> str:
        """The subprotocol this application speaks (its protocol class's ``PROTOCOL_NAME``)."""
        return cls.protocol_class.PROTOCOL_NAME


App = Union[type[WebSocketApplication], Callable[..., Any]]


class Resource:
    """A WSGI app routing by path regex to WebSocket applications and WSGI apps; see the module documentation."""

    def __init__(self, apps: Iterable[tuple[str, App]] | Mapping[str, App] | None = None) -> None:
        if isinstance(apps, Mapping):
            if not isinstance(apps, OrderedDict):
                warnings.warn(
                    "Using an unordered dictionary for the app list is discouraged and may lead to undefined behavior.",
                    UserWarning,
                    stacklevel=2,
                )
            self.apps: list[tuple[str, App]] = list(apps.items())
        else:
            self.apps = list(apps or [])

    def _is_websocket_app(self, app: Any) -> bool:
        return isinstance(app, type) and issubclass(app, WebSocketApplication)

    def _app_by_path(self, environ_path: str, is_websocket_request: bool) -> Any:
        for path, app in self.apps:
            if re.match(path, environ_path) and is_websocket_request == self._is_websocket_app(app):
                return app
        return None

    def app_protocol(self, path: str) -> str:
        """The subprotocol of the WebSocket application at ``path`` (``""``: none)."""
        app = self._app_by_path(path, True)
        return str(app.protocol_name()) if hasattr(app, "protocol_name") else ""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Dispatch one request (or connection) by its path."""
        is_websocket_call = "wsgi.websocket" in environ
        current_app = self._app_by_path(environ.get("PATH_INFO", ""), is_websocket_call)
        if current_app is None:
            return NotFound()(environ, start_response)
        if is_websocket_call:
            ws = environ["wsgi.websocket"]
            application = current_app(ws)
            application.ws = ws
            application.handle()
            return []
        return current_app(environ, start_response)  # type: ignore[no-any-return]
