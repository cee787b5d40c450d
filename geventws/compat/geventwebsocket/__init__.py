"""gevent-websocket on geventws: ``geventwebsocket.X`` becomes ``geventws.compat.geventwebsocket.X``.

The submodules are those of gevent-websocket 0.10: :mod:`.handler`
(``WebSocketHandler``, the pywsgi handler class), :mod:`.websocket`
(``WebSocket``, ``environ["wsgi.websocket"]``), :mod:`.server`
(``WebSocketServer``), :mod:`.resource` (``Resource``,
``WebSocketApplication``), :mod:`.exceptions` and :mod:`.gunicorn.workers`
(``GeventWebSocketWorker``).  Any origin is accepted, as by the original.
"""

from __future__ import annotations

from .exceptions import WebSocketError
from .resource import Resource, WebSocketApplication
from .server import WebSocketServer

__all__ = ["Resource", "WebSocketApplication", "WebSocketError", "WebSocketServer", "get_version"]

#: The gevent-websocket release whose API this package offers.
VERSION = (0, 10, 1, "final", 0)


def get_version(*args: object, **kwargs: object) -> str:
    """The version of gevent-websocket whose API is offered, as the original reports its own."""
    return "0.10.1"
