"""Client id node numbers claimed in Redis, so that ids are unique across the processes sharing it.

Each process claims its id node number (see ``client_ids`` in
:mod:`geventws.connection.ids`) as the key ``geventws:node:<n>``, holding a
token of the process, for :data:`NODE_TTL` seconds, refreshed every
:data:`NODE_REFRESH` seconds.  A number another process holds is given up for
a new one while this process has handed out no id yet.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import redis as redis_py

from ..connection.ids import client_ids
from .health import Health
from .keys import node_key

logger = logging.getLogger("geventws.redis")

#: How long a node number claim lives without a refresh, and how often it is refreshed.
NODE_TTL = 60
NODE_REFRESH = 20.0

_token: tuple[int, str] | None = None


def _process_token() -> str:
    """A random token of this process (drawn again in a forked child); its node number claims carry it."""
    global _token
    if _token is None or _token[0] != os.getpid():
        _token = (os.getpid(), os.urandom(8).hex())
    return _token[1]


class NodeClaim:
    """This process's claim on its client id node number in one Redis."""

    def __init__(self, client: Any, health: Health) -> None:
        self._client = client
        self._health = health
        self._collision_logged = False

    def claim(self) -> None:
        """Claim this process's client id node number in Redis, drawing another while no id was handed out."""
        # Not the subscriber's origin: gateways on several clients of one Redis share the claim.
        token = _process_token()
        name = self._health.name
        for _ in range(8):
            node = client_ids.node
            key = node_key(node)
            try:
                if self._client.set(key, token, nx=True, ex=NODE_TTL):
                    return
                if self._client.get(key) == token.encode():
                    self._client.expire(key, NODE_TTL)
                    return
            except redis_py.ResponseError as error:  # e.g. an ACL user without keys: pub/sub still works
                self._health.log_fault(
                    "claim refused", "Cannot claim client id node numbers in Redis at %s: %s", name, error
                )
                return
            # client_ids.next() takes one id, harmlessly: counter 1 means none was handed out before.
            if client_ids.next() & 0xFFFFFFFF == 1:
                client_ids.reset()
                logger.info("Client id node %d is taken in Redis at %s: drew %d", node, name, client_ids.node)
                continue
            if not self._collision_logged:
                self._collision_logged = True
                logger.error(
                    "Client id node %d is also claimed by another process sharing Redis at %s, and this process"
                    " already has clients: ids may collide across processes until it restarts",
                    node,
                    name,
                )
            return

    def release(self) -> None:
        """Give the number up, if this process still holds it."""
        key = node_key(client_ids.node)
        if self._client.get(key) == _process_token().encode():
            self._client.delete(key)
