"""One Redis server in this process: the subscriber connection and the publisher every room on it shares.

A shard subscribes to the channels of the rooms that have members in this
process, and only those, on a connection it holds only while there are such
channels (``SUBSCRIBE``, or ``SSUBSCRIBE`` on a cluster),
again after each reconnect, with backoff; each message goes to the
``receive`` callback.  A subscription is confirmed by Redis before its
:class:`~gevent.event.Event` is set.  On a cluster, Redis may end a
subscription itself (its slot moved to another shard): ``moved`` is called
for that channel; when the connection fails, ``lost`` is (a cluster may have
promoted a replica elsewhere).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import gevent
import redis as redis_py
from gevent.event import Event

from .connection import RECONNECT_BACKOFF, RECONNECT_BACKOFF_CAP
from .health import Health
from .publisher import Publisher

logger = logging.getLogger("geventws.redis")

#: Seconds without a message after which the subscriber pings Redis, to notice a connection that died silently.
HEALTH_CHECK_INTERVAL = 5.0


class Shard:
    """One server's subscriber connection and greenlet, and its :class:`~.publisher.Publisher`."""

    def __init__(
        self,
        client: redis_py.Redis,
        health: Health,
        sharded: bool,
        receive: Callable[[str, bytes], None],
        connected: Callable[[Shard], None],
        moved: Callable[[Shard, str], None],
        lost: Callable[[Shard], None] | None = None,
    ) -> None:
        self.client = client
        self.name = health.name
        self.sharded = sharded
        self.health = health
        self.publisher = Publisher(
            client,
            self.health,
            "SPUBLISH" if sharded else "PUBLISH",
            lambda: connected(self),
            (lambda: lost(self)) if lost is not None else None,  # a MOVED answer: learn the slots again
        )
        #: The channels to be subscribed, each with its event: set while the subscription is confirmed.
        self.channels: dict[str, Event] = {}
        self._receive = receive
        self._connected = connected
        self._moved = moved
        self._lost = lost
        self._pubsub: Any = None
        self._unsubscribing: dict[str, int] = {}  # our own unsubscribes awaiting their confirmation
        self._wanted = Event()  # set while there are channels: no subscriber connection without them
        self._greenlet = gevent.spawn(self._run)

    def subscribe(self, channel: str) -> Event:
        event = self.channels.get(channel)
        if event is None:
            event = self.channels[channel] = Event()
            self._wanted.set()
            self._send("ssubscribe" if self.sharded else "subscribe", channel)
        return event

    def unsubscribe(self, channel: str) -> None:
        if self.channels.pop(channel, None) is not None and self._pubsub is not None:
            self._unsubscribing[channel] = self._unsubscribing.get(channel, 0) + 1
            self._send("sunsubscribe" if self.sharded else "unsubscribe", channel)

    def stop(self) -> None:
        self._greenlet.kill()  # it closes its connection on the way out
        self.publisher.stop()

    def _send(self, method: str, channel: str) -> None:
        pubsub = self._pubsub
        if pubsub is not None:
            try:  # the greenlet reads the confirmation; a failure there reconnects
                getattr(pubsub, method)(channel)
            except (redis_py.RedisError, OSError):
                pass

    def _run(self) -> None:
        delay = RECONNECT_BACKOFF
        while True:
            if not self.channels:
                self._wanted.clear()  # subscribe() sets it again
            self._wanted.wait()
            try:
                pubsub = self.client.pubsub()  # type: ignore[no-untyped-call,unused-ignore]  # typed from redis 8.2
                subscribe = pubsub.ssubscribe if self.sharded else pubsub.subscribe
                channels = list(self.channels)
                for channel in channels:  # one by one: on a cluster, one SSUBSCRIBE must not span slots
                    subscribe(channel)
                self._pubsub = pubsub  # from now on subscribe() sends the command itself
                for channel in [channel for channel in self.channels if channel not in channels]:
                    subscribe(channel)
                self.health.recovered()
                self.publisher.reconnect_now()  # rather than at the end of its backoff
                self._connected(self)
                delay = RECONNECT_BACKOFF
                self._listen(pubsub)
                continue  # no channel left: the connection is closed until one comes
            except (redis_py.RedisError, OSError) as error:
                self.health.lost(error)
                self.publisher.disconnect()  # it would only notice at its next publish, and lose that
                if self._lost is not None:
                    self._lost(self)
            except Exception:  # a bug must not end delivery for the process: log it, reconnect
                logger.exception("The Redis subscriber of %s failed; reconnecting", self.name)
            finally:
                self._close_pubsub()
            gevent.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, RECONNECT_BACKOFF_CAP)

    def _listen(self, pubsub: Any) -> None:
        quiet_since = time.monotonic()
        while self.channels or self._unsubscribing:
            message = pubsub.get_message(timeout=1.0)
            if message is None or message["channel"] is None:
                if time.monotonic() - quiet_since > HEALTH_CHECK_INTERVAL:
                    pubsub.ping()  # a connection that died silently fails within the socket timeout
                    quiet_since = time.monotonic()
                continue
            quiet_since = time.monotonic()
            kind = message["type"]
            channel = message["channel"].decode("utf-8", "replace")
            if kind in ("message", "smessage"):
                self._receive(channel, message["data"])
            elif kind in ("subscribe", "ssubscribe"):
                event = self.channels.get(channel)
                if event is not None:
                    event.set()
            elif kind in ("unsubscribe", "sunsubscribe"):
                pending = self._unsubscribing.pop(channel, 0)
                if pending > 1:
                    self._unsubscribing[channel] = pending - 1
                elif not pending and channel in self.channels:  # not ours: the cluster moved the slot
                    self.channels.pop(channel).clear()
                    self._moved(self, channel)
        self._wanted.clear()

    def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        self._unsubscribing.clear()
        for event in self.channels.values():
            event.clear()
        if pubsub is not None:
            try:
                pubsub.close()
            except (redis_py.RedisError, OSError):
                pass
