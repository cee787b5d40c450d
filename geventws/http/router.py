"""Dispatching requests by method and path to WSGI apps, on werkzeug's routing."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from typing import Any, Callable

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request

from .error_handler import DefaultErrorHandler, ErrorHandler, respond_to_http_exception
from .handover import hand_on

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Router:
    """Routes ``(method, path)`` to WSGI apps; anything unrouted goes to the fallback.

    Paths use werkzeug's rule syntax (``/rooms/<int:room>``); the matched
    arguments are put in the environ as ``wsgiorg.routing_args``.  Without a
    fallback, unknown paths get 404 and known paths with another method 405.
    A werkzeug ``HTTPException`` raised while routing or by a target (a
    malformed ``Host`` is ``BadHost``) becomes its own status through the
    error handler.
    """

    def __init__(
        self,
        logger: logging.Logger | None = None,
        error_handler: ErrorHandler | None = None,
        *deprecated: Any,
    ) -> None:
        if _is_server(logger) or isinstance(error_handler, logging.Logger) or deprecated:
            # The seed's Router(server, logger, error_handler): the server was never used.
            warnings.warn(
                "Router(server, logger, error_handler) is deprecated: drop the server argument",
                DeprecationWarning,
                stacklevel=2,
            )
            logger, error_handler = error_handler, (deprecated[0] if deprecated else None)  # type: ignore[assignment]
        self.logger = logger or logging.getLogger("geventws.router")
        self._error_handler = error_handler or DefaultErrorHandler()
        self._map = Map(strict_slashes=False, merge_slashes=False)
        self._fallback: WSGIApp | None = None

    def add_route(self, method: str, path: str, app: WSGIApp) -> None:
        """Send ``method`` requests for ``path`` (werkzeug rule syntax) to the WSGI app ``app``."""
        self._map.add(Rule(path, methods=[method.upper()], endpoint=app))

    def set_fallback(self, app: WSGIApp) -> None:
        """Send every request no route matches to ``app`` (static files, a Flask app, ...)."""
        self._fallback = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Dispatch to the matching route, the fallback, or a 404/405 page."""
        try:
            return self._dispatch(environ, start_response)
        except HTTPException as error:
            response = respond_to_http_exception(self._error_handler, error, Request(environ))
            return response(environ, start_response)

    def _dispatch(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        adapter = self._map.bind_to_environ(environ)
        # Routes are plain rules whatever the request: the endpoint itself
        # judges the upgrade (werkzeug would refuse upgrades on non-websocket rules).
        adapter.websocket = False
        try:
            app, arguments = adapter.match()
        except (NotFound, MethodNotAllowed) as miss:
            if self._fallback is not None:
                hand_on(environ, self, self._fallback)
                return self._fallback(environ, start_response)
            return self._refuse(miss, environ, start_response)
        environ["wsgiorg.routing_args"] = ((), arguments)
        hand_on(environ, self, app)
        result: Iterable[bytes] = app(environ, start_response)
        return result

    def _refuse(self, miss: Exception, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        if isinstance(miss, MethodNotAllowed):
            response = self._error_handler.handle_error(405, None, request)
            response.headers["Allow"] = ", ".join(miss.valid_methods or [])
        else:
            response = self._error_handler.handle_error(404, None, request)
        return response(environ, start_response)


def _is_server(value: object) -> bool:
    from .server import Server  # the same layer; imported late only to keep this module light

    return isinstance(value, Server)
