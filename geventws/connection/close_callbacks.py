"""What runs once a connection has closed: the callbacks given to ``on_close``, each on its own."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent

from ..protocol.close import WebsocketCloseInfo

if TYPE_CHECKING:
    from .client import WebsocketClient

logger = logging.getLogger("geventws.client")

CloseCallback = Callable[["WebsocketClient", WebsocketCloseInfo], Any]


def run_close_callbacks(client: WebsocketClient, info: WebsocketCloseInfo, callbacks: list[CloseCallback]) -> None:
    """Call each ``callback(client, info)`` in order; an exception is logged and the others still run."""
    for callback in callbacks:
        try:
            callback(client, info)
        except Exception:
            logger.exception("%r: close callback %r failed", client, callback)


def run_close_callbacks_off_the_loop(
    client: WebsocketClient, info: WebsocketCloseInfo, callbacks: list[CloseCallback]
) -> None:
    """As :func:`run_close_callbacks`; from the hub, in a greenlet of their own (they may block, the hub may not)."""
    if callbacks and gevent.getcurrent() is gevent.get_hub():
        gevent.spawn(run_close_callbacks, client, info, callbacks)
    else:
        run_close_callbacks(client, info, callbacks)
