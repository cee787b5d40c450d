"""flask-sock on geventws: ``flask_sock`` becomes ``geventws.compat.flask_sock``.

``Sock(app)`` (or ``init_app``) and ``@sock.route(path, bp=None, **kwargs)``
register WebSocket routes through :class:`geventws.flask.Websockets`, so they
share its defaults (the origin policy among them) and its dispatch; handlers
run in the app and request context.  ``handler(ws, **url_variables)`` gets a
:class:`WebSocket` (simple-websocket's ``Server`` API): ``receive(timeout=None)``
(``None`` on timeout), ``send(data)`` (binary for bytes, text otherwise),
``close(reason=None, message=None)``, ``connected``; a closed connection
raises :class:`ConnectionClosed`.  When the handler returns (or lets
``ConnectionClosed`` out), the connection closes with 1000.

``app.config["SOCK_SERVER_OPTIONS"]`` is read at each handshake:
``ping_interval`` sets the heartbeat period, ``max_message_size`` the
message limit, ``subprotocols`` the subprotocols offered (the client's first
supported one is chosen); the thread and selector options mean nothing here.

Where it differs: a message over the limit closes with 1009 (geventws's
default limit of 10 MiB applies when ``max_message_size`` is not set, and
1 MiB with compression), idle connections are pinged every 10 s when
``ping_interval`` is not set, a plain request to a WebSocket route gets 426
rather than 400, and sends from any thread or greenlet are serialized.
Keyword arguments of ``Sock()`` go to :class:`~geventws.flask.Websockets`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable

import flask
from werkzeug.wrappers import Request, Response

from ..connection.client import WebsocketClient
from ..connection.client_factory import DEFAULT, Rfc6455ClientFactory
from ..connection.heartbeat import PeriodicHeartbeat
from ..flask import Websockets
from ..protocol.close import CloseCode, WebsocketClosedException
from ..protocol.deflate import NegotiatedDeflate

__all__ = ["SOCK_SERVER_OPTIONS", "ConnectionClosed", "Server", "Sock", "WebSocket"]

#: The Flask config key flask-sock reads its options from.
SOCK_SERVER_OPTIONS = "SOCK_SERVER_OPTIONS"

Handler = Callable[..., Any]


class ConnectionClosed(RuntimeError):
    """The connection is closed: ``reason`` is the close code (1005 when none came), ``message`` its reason."""

    def __init__(self, reason: int = CloseCode.NONE, message: str | None = None) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"Connection closed: {reason} {message or ''}")


class WebSocket:
    """simple-websocket's ``Server`` API over a :class:`~geventws.WebsocketClient` (``client``)."""

    __slots__ = ("client", "environ")

    def __init__(self, client: WebsocketClient, environ: dict[str, Any]) -> None:
        self.client = client
        self.environ = environ

    def __repr__(self) -> str:
        return f"<flask_sock WebSocket {self.client!r}>"

    @property
    def connected(self) -> bool:
        """False from the moment either side starts the close."""
        return not self.client.is_closed

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol agreed on, or ``None``."""
        return self.client.subprotocol

    @property
    def close_reason(self) -> int:
        """The close code, 1005 while open or when none was given."""
        info = self.client.close_info
        return info.code if info is not None else CloseCode.NONE

    @property
    def close_message(self) -> str | None:
        """The close reason, or ``None``."""
        info = self.client.close_info
        return info.reason or None if info is not None else None

    def send(self, data: Any) -> None:
        """Send ``data``: a binary message for bytes, a text message for anything else (``str(data)``)."""
        try:
            if isinstance(data, (bytes, bytearray, memoryview)):
                self.client.send_binary(data)
            else:
                self.client.send_text(data if isinstance(data, str) else str(data))
        except WebsocketClosedException:
            raise self._closed() from None

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """The next message (``str`` or ``bytes``), ``None`` after ``timeout`` s; raises :class:`ConnectionClosed`."""
        try:
            message = self.client.receive(timeout)
        except TimeoutError:
            return None
        if message is None:
            raise self._closed()
        try:
            return message.buffer()
        except WebsocketClosedException:
            raise self._closed() from None

    def close(self, reason: int | None = None, message: str | None = None) -> None:
        """Close with ``reason`` (a close code, 1000 by default) and ``message``; raises :class:`ConnectionClosed`."""
        if self.client.is_closed:
            raise self._closed()
        self.client.close(reason or CloseCode.NORMAL_CLOSE, message or "")

    def _closed(self) -> ConnectionClosed:
        return ConnectionClosed(self.close_reason, self.close_message)


#: simple-websocket's name for the server side of a connection.
Server = WebSocket


class Sock:
    """The flask-sock extension; see the module documentation."""

    def __init__(self, app: flask.Flask | None = None, **options: Any) -> None:
        self.app: flask.Flask | None = None
        options.setdefault("subprotocols", _configured_subprotocol)
        options.setdefault("client_factory", _ConfiguredClientFactory())
        self._websockets = Websockets(**options)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Serve the routes declared so far (and later) on ``app``."""
        self.app = app
        self._websockets.init_app(app)

    def route(self, path: str, bp: flask.Blueprint | None = None, **kwargs: Any) -> Callable[[Handler], Handler]:
        """Decorate ``handler(ws, **url_variables)`` to serve WebSocket connections on ``path`` (of ``bp`` if given)."""

        def decorator(f: Handler) -> Handler:
            def handle(client: WebsocketClient, **url_variables: Any) -> None:
                try:
                    f(WebSocket(client, flask.request.environ), **url_variables)
                except ConnectionClosed:
                    pass

            handle.__name__ = f.__name__
            handle.__doc__ = f.__doc__
            kwargs.pop("websocket", None)
            kwargs.pop("methods", None)  # a WebSocket route answers GET
            self._websockets.route(path, blueprint=bp, **kwargs)(handle)
            return f

        return decorator


def _options() -> dict[str, Any]:
    options: dict[str, Any] = flask.current_app.config.get(SOCK_SERVER_OPTIONS) or {}
    return options


def _configured_subprotocol(request: Request, offered: Sequence[str]) -> str | None:
    """The client's first offer among ``SOCK_SERVER_OPTIONS["subprotocols"]``, as simple-websocket chooses."""
    supported = _options().get("subprotocols") or []
    if isinstance(supported, str):
        supported = [supported]
    return next((protocol for protocol in offered if protocol in supported), None)


class _ConfiguredClientFactory:
    """Clients with the heartbeat and message limit of ``SOCK_SERVER_OPTIONS`` (one factory per setting)."""

    def __init__(self) -> None:
        self._factories: dict[tuple[Any, Any], Rfc6455ClientFactory] = {}

    def create_client(
        self,
        request: Request,
        response: Response,
        sock: Any,
        leftover: bytes,
        compression: NegotiatedDeflate | None,
    ) -> WebsocketClient:
        options = _options()
        key = (options.get("ping_interval"), options.get("max_message_size"))
        factory = self._factories.get(key)
        if factory is None:
            ping_interval, max_message_size = key
            settings: dict[str, Any] = {"heartbeat": PeriodicHeartbeat(ping_interval) if ping_interval else DEFAULT}
            if max_message_size:
                settings["message_size_limit"] = max_message_size
                settings["compressed_message_size_limit"] = min(max_message_size, 1024 * 1024)
            factory = self._factories[key] = Rfc6455ClientFactory(**settings)
        return factory.create_client(request, response, sock, leftover, compression)
