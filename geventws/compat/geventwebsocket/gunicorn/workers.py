"""``gunicorn -k geventws.compat.geventwebsocket.gunicorn.workers.GeventWebSocketWorker app:app``.

geventws's worker (:class:`geventws.gunicorn.Worker`: graceful 1001 on
shutdown, gunicorn's access log) serving requests with
:class:`~geventws.compat.geventwebsocket.handler.WebSocketHandler`, so apps get ``environ["wsgi.websocket"]``.
"""

from __future__ import annotations

from ....gunicorn import Worker, _Handler
from ..handler import WebSocketHandler

__all__ = ["GeventWebSocketWorker"]


class _WebSocketHandler(WebSocketHandler, _Handler):
    """gevent-websocket's handler on top of the worker's own (gunicorn's access log, request counting)."""


class GeventWebSocketWorker(Worker):
    """The gunicorn worker class gevent-websocket apps name."""

    wsgi_handler = _WebSocketHandler
