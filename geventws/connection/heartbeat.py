"""Keepalive: ping idle clients and close the ones that stopped answering.

One timer greenlet serves every registered client of a hub, however many
there are (a process has one hub, unless a thread server gives each of its
threads one: then each such hub has a timer of its own, as its clients must
be pinged from their own thread).
Any data received from a client counts as a sign of life, so busy clients are
never pinged; an idle client is pinged once per period and closed with 1008
after ``queued_ping_limit`` periods without an answer.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any
from typing import Protocol as TypingProtocol

import gevent

from ..protocol.close import CloseCode

if TYPE_CHECKING:
    from .client import WebsocketClient

logger = logging.getLogger("geventws.heartbeat")


class Heartbeat(TypingProtocol):
    """Keeps idle connections alive and finds dead ones (:class:`PeriodicHeartbeat`)."""

    def register(self, client: WebsocketClient) -> None:
        """Start watching ``client`` (called when its reader starts)."""
        ...

    def unregister(self, client: WebsocketClient) -> None:
        """Stop watching ``client`` (called once it is closed)."""
        ...


class PeriodicHeartbeat:
    """Pings clients idle for ``period`` seconds; closes them after ``queued_ping_limit`` unanswered pings."""

    def __init__(self, period: float = 10.0, queued_ping_limit: int = 3) -> None:
        if period <= 0 or queued_ping_limit < 1:
            raise ValueError("period must be positive and queued_ping_limit at least 1")
        self.period = period
        self.queued_ping_limit = queued_ping_limit
        self._clients: dict[int, WebsocketClient] = {}  # of the first hub a client came from
        self._timer: gevent.Greenlet | None = None
        self._hub: Any = None
        self._other_hubs: dict[Any, PeriodicHeartbeat] = {}  # the hubs of a thread server's threads

    def register(self, client: WebsocketClient) -> None:
        """Watch ``client``; the timer greenlet starts with the first client."""
        hub = gevent.get_hub()
        if self._hub is None:
            self._hub = hub
        elif hub is not self._hub:
            self._of_this_hub().register(client)
            return
        self._clients[client.id] = client
        if self._timer is None or self._timer.dead:
            self._timer = gevent.spawn(self._run)

    def unregister(self, client: WebsocketClient) -> None:
        """Stop watching ``client``; the timer ends with the last one."""
        if self._clients.pop(client.id, None) is None and self._other_hubs:
            hub = gevent.get_hub()
            heartbeat = self._other_hubs.get(hub)
            if heartbeat is not None:
                heartbeat.unregister(client)
                if not heartbeat._clients:  # the thread may leave its hub for good: end its timer now
                    del self._other_hubs[hub]
                    if heartbeat._timer is not None:
                        heartbeat._timer.kill(block=False)

    def _of_this_hub(self) -> PeriodicHeartbeat:
        hub = gevent.get_hub()
        heartbeat = self._other_hubs.get(hub)
        if heartbeat is None:
            heartbeat = self._other_hubs[hub] = PeriodicHeartbeat(self.period, self.queued_ping_limit)
        return heartbeat

    def _run(self) -> None:
        while self._clients:
            gevent.sleep(self.period)
            self.beat(time.time())
        self._timer = None

    def beat(self, now: float) -> None:
        """One round over every client of this hub (the timer calls this once per period)."""
        for client in list(self._clients.values()):
            if client.is_closed:
                continue
            if now - max(client.stats.last_read, client.stats.connected) < self.period:
                continue  # it spoke recently: alive
            if client.missed_heartbeats >= self.queued_ping_limit:
                logger.debug("%r: %d pings unanswered, closing with 1008", client, client.missed_heartbeats)
                gevent.spawn(client.close, CloseCode.POLICY_VIOLATION, "No answer to pings")
            else:
                client.heartbeat_ping()
