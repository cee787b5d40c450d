"""gevent-websocket's ``WebSocketServer``: a pywsgi ``WSGIServer`` with :class:`~.handler.WebSocketHandler`."""

from __future__ import annotations

import logging
from typing import Any

from gevent.pywsgi import WSGIServer

from .handler import Client, WebSocketHandler

__all__ = ["WebSocketServer"]


class WebSocketServer(WSGIServer):  # type: ignore[misc]
    """``WebSocketServer(listener, application, debug=False, pre_start_hook=None, **pywsgi_options)``.

    ``clients`` maps peer addresses to :class:`~.handler.Client` entries while
    their apps run.  ``pre_start_hook(handler)``, when it returns true, has the
    request served as plain HTTP.  ``debug`` is accepted; the log goes to the
    ``geventws.compat.geventwebsocket`` logger either way.
    """

    handler_class = WebSocketHandler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.debug = kwargs.pop("debug", False)
        self.pre_start_hook = kwargs.pop("pre_start_hook", None)
        self.clients: dict[Any, Client] = {}
        super().__init__(*args, **kwargs)

    @property
    def logger(self) -> logging.Logger:
        """The logger of the compatibility layer."""
        return logging.getLogger("geventws.compat.geventwebsocket")
