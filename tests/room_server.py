"""What the Redis test server processes share: their rooms and their serving until a signal (not a test module).

Imported by ``redis_app.py`` and ``redis_history_app.py`` after they patched with gevent's monkey.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import Any

from gevent.lock import Semaphore

import geventws
from geventws.redis import RedisGateway


class Rooms:
    """One :class:`RedisGateway` per room name, made by ``make(name)`` when first asked for."""

    def __init__(self, make: Callable[[str], RedisGateway]) -> None:
        self._make = make
        self._rooms: dict[str, RedisGateway] = {}
        self._creating = Semaphore()

    def __call__(self, name: str) -> RedisGateway:
        with self._creating:
            if name not in self._rooms:
                self._rooms[name] = self._make(name)
            return self._rooms[name]

    def close(self) -> None:
        for gateway in self._rooms.values():
            gateway.close()


def serve_until_signal(handle_client: Callable[..., Any], name: str, rooms: Rooms) -> None:
    """Serve ``handle_client`` on a free port, print ``READY <port>``, and stop everything on SIGINT or SIGTERM."""
    server = geventws.Server(logging.getLogger(name))
    server.expose(("127.0.0.1", 0))
    server.start(geventws.Websocket(server, None, None, handle_client))
    print(f"READY {server.addresses[0][1]}", flush=True)
    geventws.trap_signal([signal.SIGINT, signal.SIGTERM])
    server.stop(timeout=1)
    rooms.close()
