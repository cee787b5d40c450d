"""gevent-websocket's ``WebSocketHandler``: ``WSGIServer(addr, app, handler_class=WebSocketHandler)``.

A GET request with ``Upgrade: websocket`` is judged by geventws's acceptor
(``acceptor``, a class attribute: RFC 6455 rules, any origin, as the
original); on acceptance the WSGI app is called with
``environ["wsgi.websocket"]`` (a :class:`~.websocket.WebSocket`) and
``environ["wsgi.websocket_version"]``, and the connection is closed with 1000
when the app returns (1011 and a logged traceback if it raises).  Any other
request reaches the app as plain HTTP, without those keys.

An app inside that answers 4xx, as a :mod:`geventws.flask` route refusing
the handshake does (its origin policy, ``before_request``), has the
connection closed with 1008 and that status as the reason.

``handler.server.clients`` maps each peer address to a :class:`Client`
while its app runs, and ``handler.active_client`` is the current one, as
gevent-websocket's chat example uses them.  The limits, heartbeat and rate
limit come from ``client_factory`` (a class attribute; geventws's defaults),
compression from ``compression_factory`` (off by default); set them on a
subclass.  A subprotocol is agreed only when the application offers
``app_protocol(path)`` (as :class:`~.resource.Resource` does), as in the original.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from werkzeug.wrappers import Request, Response

from ...connection.client import WebsocketClient
from ...connection.client_factory import Rfc6455ClientFactory, WebsocketClientFactory
from ...http.acceptor import Rfc6455Acceptor, WebsocketAcceptor
from ...http.endpoint import UPGRADED_KEY, CompressionFactory, Websocket
from ...http.pywsgi_handler import WebsocketWSGIHandler
from ...protocol.close import CloseCode
from .exceptions import WebSocketError
from .websocket import WebSocket

__all__ = ["Client", "WebSocketHandler"]

logger = logging.getLogger("geventws.compat.geventwebsocket")
_HANDLER_KEY = "geventws.compat.handler"


class Client:
    """One connected peer in ``server.clients``: its ``address`` and its ``ws``."""

    def __init__(self, address: Any, ws: WebSocket) -> None:
        self.address = address
        self.ws = ws


class WebSocketHandler(WebsocketWSGIHandler):
    """The pywsgi handler class of gevent-websocket apps; see the module documentation."""

    SUPPORTED_VERSIONS = ("13",)
    websocket_class: ClassVar[type[WebSocket]] = WebSocket
    #: Judges handshakes; ``None``: :class:`~geventws.Rfc6455Acceptor` with the app's ``app_protocol``.
    acceptor: ClassVar[WebsocketAcceptor | None] = None
    client_factory: ClassVar[WebsocketClientFactory | None] = None
    compression_factory: ClassVar[CompressionFactory | None] = None
    websocket: WebSocket | None = None
    result: Any
    prevent_wsgi_call = False

    @property
    def logger(self) -> logging.Logger:
        """The logger of the compatibility layer."""
        return logger

    @property
    def active_client(self) -> Client:
        """This connection's entry in ``server.clients``."""
        clients: dict[Any, Client] = self.server.clients
        return clients[self.client_address]

    def run_application(self) -> Any:
        """Upgrade a WebSocket handshake and run the app on it; anything else is a plain request."""
        environ = self.environ
        hook = getattr(self.server, "pre_start_hook", None)
        if hook is not None and hook(self):
            return super().run_application()
        if environ.get("REQUEST_METHOD") != "GET" or environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            return super().run_application()
        environ[_HANDLER_KEY] = self
        # pywsgi's run_application, with the endpoint in the app's place.
        try:
            self.result = _endpoint(type(self))(environ, self.start_response)
            self.process_result()
        finally:
            close = getattr(self.result, "close", None)
            self.result = None
            if close is not None:
                close()
        return None


_endpoints: dict[type[WebSocketHandler], Websocket] = {}


def _endpoint(handler_class: type[WebSocketHandler]) -> Websocket:
    endpoint = _endpoints.get(handler_class)
    if endpoint is None:
        endpoint = _endpoints[handler_class] = Websocket(
            None,
            logging.getLogger("geventws.websocket"),
            handler_class.acceptor or Rfc6455Acceptor(_app_protocol),
            _run_app,
            compression_factory=handler_class.compression_factory,
            client_factory=handler_class.client_factory or Rfc6455ClientFactory(),
        )
    return endpoint


def _app_protocol(request: Request, offered: Sequence[str]) -> str | None:
    handler = request.environ.get(_HANDLER_KEY)
    app_protocol = getattr(getattr(handler, "application", None), "app_protocol", None)
    if app_protocol is None:
        return None
    protocol = app_protocol(request.environ.get("PATH_INFO", ""))
    return protocol if protocol and protocol in offered else None


def _run_app(client: WebsocketClient, request: Request, response: Response) -> None:
    """The app with the connection in its environ, as gevent-websocket calls it; the endpoint closes after."""
    environ = request.environ
    handler: WebSocketHandler = environ.pop(_HANDLER_KEY)
    ws = handler.websocket_class(client, environ, handler)
    environ["wsgi.websocket_version"] = environ.get("HTTP_SEC_WEBSOCKET_VERSION", "13")
    environ["wsgi.websocket"] = handler.websocket = ws
    environ[UPGRADED_KEY] = client  # a geventws endpoint inside the app (a Flask route) serves it as it is
    if handler.prevent_wsgi_call:
        return
    server = handler.server
    if getattr(server, "clients", None) is None:
        server.clients = {}
    clients: dict[Any, Client] = server.clients
    address = handler.client_address
    clients[address] = Client(address, ws)
    answer = _Answer()
    try:
        _consume(handler.application(environ, answer.start_response))
        if answer.refused and not client.is_closed:
            # A geventws endpoint inside the app (a Flask route) refused this handshake
            # (its origin policy, before_request): the connection carries nothing of the app.
            client.close(CloseCode.POLICY_VIOLATION, answer.status[:123])
    except WebSocketError:
        if not client.is_closed:
            raise
        # The app found the connection closed by failing to send: its way of ending, not an error.
    finally:
        if clients.get(address) is not None and clients[address].ws is ws:
            del clients[address]
        environ["wsgi.websocket"] = environ[UPGRADED_KEY] = None
        handler.websocket = None


def _consume(result: Iterable[bytes] | None) -> None:
    if result is None:
        return
    try:
        for _ in result:
            pass
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


class _Answer:
    """What the app answers once the connection is upgraded: no HTTP response goes out; a refusal is noted."""

    status = ""

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        self.status = status
        return _discard

    @property
    def refused(self) -> bool:
        """Whether the app answered 4xx (as a geventws route that refuses the handshake does)."""
        return self.status[:1] == "4"


def _discard(data: bytes) -> None:
    pass
