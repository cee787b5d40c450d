"""WebSocket endpoints as Flask routes, running inside the Flask request context.

``ws = Websockets(app)`` (or ``Websockets()`` and ``ws.init_app(app)``), then::

    @ws.route("/chat")                       # or ws.route("/chat", blueprint=bp)
    def chat(client):
        for message in client:
            client.send_text(f"{flask.session['user']}: {message}")

A WebSocket route is an ordinary Flask view, so Flask's whole dispatch applies
to the handshake: ``before_request`` functions and view decorators run first
and a response they return (401, 403, a redirect) refuses the handshake;
``after_request`` functions see the 101 and may add headers (a session cookie
is sent with it).  The handler then runs while Flask sends that 101, still
inside the request and app contexts, so ``request``, ``session``, ``g``,
``current_app`` and ``url_for`` work for the whole connection;
``teardown_request`` runs when it ends.

Each route registers two rules on the same view: werkzeug tells WebSocket
handshakes from plain requests, and a plain request to a WebSocket route gets
the acceptor's 426 "Upgrade required" rather than werkzeug's bare 400.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Union

import flask
from flask.sansio.scaffold import Scaffold
from werkzeug.wrappers import Request, Response

from .connection.client import WebsocketClient
from .connection.client_factory import Rfc6455ClientFactory, WebsocketClientFactory
from .http.acceptor import Rfc6455Acceptor, SameOriginAcceptor, SubprotocolSelector, WebsocketAcceptor
from .http.endpoint import CompressionFactory, Websocket
from .http.patching import warn_if_unpatched
from .protocol.deflate import Rfc7692CompressionFactory

__all__ = ["Websockets"]

#: ``handler(client, **url_variables)``.
Handler = Callable[..., None]
Subprotocols = Union[Sequence[str], SubprotocolSelector, None]
#: ``True`` for :class:`Rfc7692CompressionFactory` with its defaults, a factory, or ``None``/``False`` for none.
Compression = Union[CompressionFactory, bool, None]

_logger = logging.getLogger("geventws.flask")


class Websockets:
    """The Flask extension: registers WebSocket routes on apps and blueprints.

    The keyword arguments are the defaults of every route: ``origins`` (other
    sites whose pages may connect, ``"*"`` for any; by default only the app's
    own pages and non-browser clients can, see
    :class:`~geventws.SameOriginAcceptor`), ``subprotocols`` (a preference
    list or a selector), ``compression`` (``True`` for permessage-deflate with
    its defaults, or a :class:`~geventws.Rfc7692CompressionFactory`),
    ``client_factory`` (limits, heartbeat, rate limit) and ``acceptor`` (replaces
    ``origins`` and ``subprotocols`` with an acceptor of your own).
    """

    def __init__(
        self,
        app: flask.Flask | None = None,
        *,
        origins: Iterable[str] | None = None,
        subprotocols: Subprotocols = None,
        compression: Compression = None,
        client_factory: WebsocketClientFactory | None = None,
        acceptor: WebsocketAcceptor | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.origins = ([origins] if isinstance(origins, str) else list(origins)) if origins is not None else None
        self.subprotocols = subprotocols
        self.compression = compression
        self.client_factory = client_factory
        self.acceptor = acceptor
        self.logger = logger or _logger
        self._apps: list[flask.Flask] = []
        self._routes: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = []
        #: The endpoint of every route declared so far.
        self.endpoints: list[Websocket] = []
        self._client_callbacks: list[Callable[[WebsocketClient], Any]] = []
        self._handshake_callbacks: list[Callable[[int], Any]] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Register the routes declared so far (and any declared later) on ``app``."""
        app.extensions["geventws"] = self
        app.after_request(self._after_handshake)
        self._apps.append(app)
        for rule, endpoint, view, options in self._routes:
            _add_rules(app, rule, endpoint, view, options)
        warn_if_unpatched(self.logger)

    def on_client(self, callback: Callable[[WebsocketClient], Any]) -> None:
        """Call ``callback(client)`` for every client accepted on any route, declared so far or later.

        :meth:`Websocket.on_client <geventws.Websocket.on_client>` for every
        route's endpoint: for observers such as :mod:`geventws.metrics`.
        """
        self._client_callbacks.append(callback)
        for websocket in self.endpoints:
            websocket.on_client(callback)

    def on_handshake(self, callback: Callable[[int], Any]) -> None:
        """Call ``callback(status)`` with the status of every handshake answer of this app's routes.

        The 101s and every refusal, whoever answered it: the acceptor, a
        ``before_request`` function or a view decorator.
        """
        self._handshake_callbacks.append(callback)

    def route(
        self,
        rule: str,
        *,
        blueprint: flask.Blueprint | None = None,
        endpoint: str | None = None,
        origins: Iterable[str] | None = None,
        subprotocols: Subprotocols = None,
        compression: Compression = None,
        client_factory: WebsocketClientFactory | None = None,
        acceptor: WebsocketAcceptor | None = None,
        decorators: Sequence[Callable[[Callable[..., Any]], Callable[..., Any]]] = (),
        **options: Any,
    ) -> Callable[[Handler], Handler]:
        """Decorate ``handler(client, **url_variables)`` to serve WebSocket connections on ``rule``.

        ``blueprint`` registers the route on a blueprint instead of the apps;
        ``endpoint`` defaults to the handler's name; ``decorators`` wrap the
        view that answers the handshake, like Flask's ``View.decorators``
        (``decorators=[login_required]``: a response it returns refuses the
        handshake; a decorator written under ``@ws.route`` would wrap the
        handler instead, which runs after the 101).  The other arguments
        override the extension's defaults for this route, and ``options`` go
        to Flask's ``add_url_rule`` (``defaults``, ``subdomain``, ...).
        Returns the handler unchanged.
        """

        def register(handler: Handler) -> Handler:
            websocket = Websocket(
                None,
                self.logger,
                acceptor or self._acceptor(origins, subprotocols),
                _run_in_request_context(handler),
                compression_factory=_compression_factory(compression if compression is not None else self.compression),
                client_factory=client_factory or self.client_factory or Rfc6455ClientFactory(),
            )
            for callback in self._client_callbacks:
                websocket.on_client(callback)
            self.endpoints.append(websocket)
            view = _view(websocket)
            view.__name__ = handler.__name__
            view.__doc__ = handler.__doc__
            for decorator in decorators:
                view = decorator(view)
            name = endpoint or handler.__name__
            if blueprint is not None:
                _add_rules(blueprint, rule, name, view, options)
            else:
                self._routes.append((rule, name, view, options))
                for app in self._apps:
                    _add_rules(app, rule, name, view, options)
            return handler

        return register

    def _after_handshake(self, response: flask.Response) -> flask.Response:
        """after_request: every answer to a handshake on a WebSocket route, whoever gave it."""
        rule = flask.request.url_rule
        if rule is None or not rule.websocket:
            return response
        if response.status_code != 101:
            # Refused by before_request or a decorator: the client will not send
            # another request on this connection (as for the acceptor's refusals).
            response.headers["Connection"] = "close"
        if flask.current_app.extensions.get("geventws") is self:
            for callback in self._handshake_callbacks:
                callback(response.status_code)
        return response

    def _acceptor(self, origins: Iterable[str] | None, subprotocols: Subprotocols) -> WebsocketAcceptor:
        if origins is None and subprotocols is None and self.acceptor is not None:
            return self.acceptor
        acceptor = Rfc6455Acceptor(subprotocols if subprotocols is not None else self.subprotocols)
        allowed = origins if origins is not None else self.origins
        # Same origin by default: a route reads the session cookie, so another site's page must not connect.
        return SameOriginAcceptor(acceptor, origins=allowed or (), logger=self.logger)


def _add_rules(target: Scaffold, rule: str, endpoint: str, view: Callable[..., Any], options: dict[str, Any]) -> None:
    # werkzeug matches handshakes only against websocket rules and plain
    # requests only against the others: one of each reaches the same view.
    target.add_url_rule(rule, endpoint, view, methods=["GET"], **options)
    target.add_url_rule(rule, endpoint, view, methods=["GET"], websocket=True, **options)


def _view(websocket: Websocket) -> Callable[..., Any]:
    def view(**url_variables: Any) -> Response:
        request = flask.request._get_current_object()  # type: ignore[attr-defined]
        response = websocket.handshake(request)
        if response.status_code != 101:
            response.headers["Connection"] = "close"
            return response
        upgrade = _upgrade_class(flask.current_app.response_class)(status=101, headers=response.headers)
        upgrade.websocket, upgrade.handshake_request = websocket, request
        return upgrade

    return view


def _run_in_request_context(handler: Handler) -> Callable[[WebsocketClient, Request, Response], None]:
    def handle_client(client: WebsocketClient, request: Request, response: Response) -> None:
        handler(client, **(flask.request.view_args or {}))

    return handle_client


class _UpgradeResponse(Response):
    """A 101 that, when Flask sends it, hands the connection over and runs the handler.

    Flask calls a response inside the request context, after ``after_request``;
    the handler runs there, so the context lives as long as the connection.
    """

    websocket: Websocket
    handshake_request: Request

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return self.websocket.upgrade(environ, start_response, self.handshake_request, self)


_upgrade_classes: dict[type[Response], type[_UpgradeResponse]] = {}


def _upgrade_class(response_class: type[Response]) -> type[_UpgradeResponse]:
    """:class:`_UpgradeResponse` on top of the app's response class (Flask would convert anything else)."""
    cls = _upgrade_classes.get(response_class)
    if cls is None:
        cls = type("WebsocketUpgradeResponse", (_UpgradeResponse, response_class), {})
        _upgrade_classes[response_class] = cls
    return cls


def _compression_factory(compression: Compression) -> CompressionFactory | None:
    if compression is True:
        return Rfc7692CompressionFactory()
    if compression is False or compression is None:
        return None
    return compression
