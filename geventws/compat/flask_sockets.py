"""Flask-Sockets on geventws: ``flask_sockets`` becomes ``geventws.compat.flask_sockets``.

``Sockets(app)`` (or ``init_app``), ``@sockets.route(rule)``,
``sockets.add_url_rule(rule, endpoint, f)`` and
``sockets.register_blueprint(bp, url_prefix=...)`` register WebSocket routes
through :class:`geventws.flask.Websockets`, so they share its defaults (the
origin policy among them) and its dispatch: ``before_request`` and the
session work, and handlers run in the app and request context.  A handler
receives gevent-websocket's ``WebSocket``
(:class:`geventws.compat.geventwebsocket.websocket.WebSocket`) and the URL
variables; when it returns, the connection closes with 1000.

``worker`` is the gunicorn worker class:
``gunicorn -k geventws.compat.flask_sockets.worker app:app``.

Where it differs: the routes are Flask routes (``url_for`` finds them, a
plain request to one gets 426 rather than the Flask app's 404), ``url_map``
is not offered, and ``ws.handler`` is ``None``.  Keyword arguments of
``Sockets()`` go to :class:`~geventws.flask.Websockets` (``origins``,
``compression``, ``client_factory``, ...).
"""

from __future__ import annotations

from typing import Any, Callable

import flask
from flask.sansio.blueprints import BlueprintSetupState

from ..connection.client import WebsocketClient
from ..flask import Websockets
from .geventwebsocket.exceptions import WebSocketError
from .geventwebsocket.websocket import WebSocket

__all__ = ["Sockets", "worker"]  # noqa: F822 - worker is loaded on first use (gunicorn is an extra)

Handler = Callable[..., Any]


class Sockets:
    """The Flask-Sockets extension; see the module documentation."""

    def __init__(self, app: flask.Flask | None = None, **options: Any) -> None:
        self.app = app
        self.blueprints: dict[str, flask.Blueprint] = {}
        self._websockets = Websockets(**options)
        self._pending: list[tuple[flask.Blueprint, dict[str, Any]]] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Serve the WebSocket routes declared so far (and later) on ``app``."""
        self.app = app
        self._websockets.init_app(app)
        pending, self._pending = self._pending, []
        for blueprint, options in pending:
            self._register(app, blueprint, options)

    def route(self, rule: str, **options: Any) -> Callable[[Handler], Handler]:
        """Decorate ``handler(ws, **url_variables)`` to serve WebSocket connections on ``rule``."""

        def decorator(f: Handler) -> Handler:
            endpoint = options.pop("endpoint", None)
            self.add_url_rule(rule, endpoint, f, **options)
            return f

        return decorator

    def add_url_rule(self, rule: str, endpoint: str | None, f: Handler, **options: Any) -> None:
        """Register ``f`` for WebSocket connections on ``rule`` (``endpoint`` defaults to its name)."""
        options.pop("methods", None)  # a WebSocket route answers GET
        self._websockets.route(rule, endpoint=endpoint or f.__name__, **options)(_adapt(f))

    def register_blueprint(self, blueprint: flask.Blueprint, **options: Any) -> None:
        """Serve the routes of ``blueprint`` (declared with ``@blueprint.route``) as WebSocket routes."""
        self.blueprints.setdefault(blueprint.name, blueprint)
        if self.app is None:
            self._pending.append((blueprint, options))
        else:
            self._register(self.app, blueprint, options)

    def _register(self, app: flask.Flask, blueprint: flask.Blueprint, options: dict[str, Any]) -> None:
        # The blueprint's recorded functions run against a stand-in for the app
        # whose add_url_rule makes WebSocket routes; anything else goes to the app.
        state = BlueprintSetupState(blueprint, _SocketsApp(self, app), options, True)  # type: ignore[arg-type]
        for deferred in blueprint.deferred_functions:
            deferred(state)


class _SocketsApp:
    """The Flask app as a blueprint's recorded functions see it, with WebSocket routes."""

    def __init__(self, sockets: Sockets, app: flask.Flask) -> None:
        self._sockets = sockets
        self._app = app

    def add_url_rule(self, rule: str, endpoint: str | None, view_func: Handler, **options: Any) -> None:
        options.pop("methods", None)
        options.pop("provide_automatic_options", None)
        self._sockets._websockets.route(rule, endpoint=endpoint or view_func.__name__, **options)(_adapt(view_func))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._app, name)


def _adapt(f: Handler) -> Handler:
    def handle(client: WebsocketClient, **url_variables: Any) -> None:
        ws = WebSocket(client, flask.request.environ, None)
        try:
            f(ws, **url_variables)
        except WebSocketError:
            if not client.is_closed:
                raise
            # Sending on a closed connection is how Flask-Sockets loops end.

    handle.__name__ = f.__name__
    handle.__doc__ = f.__doc__
    return handle


def __getattr__(name: str) -> Any:
    # gunicorn is an extra: imported when the worker is asked for.
    if name == "worker":
        from .geventwebsocket.gunicorn.workers import GeventWebSocketWorker

        return GeventWebSocketWorker
    raise AttributeError(name)
