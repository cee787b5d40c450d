"""One Redis in this process: the subscriber connection every gateway on it shares, and local delivery.

The subscriber greenlet subscribes to the channels of the gateways (again
after each reconnect, with backoff), hands each message from another process
to the local gateways on its channel, and refreshes the client id node claim
(see :mod:`.nodes`).  Publishing goes through the one
:class:`~.publisher.Publisher` of the same Redis.
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Any, Protocol

import gevent
import redis as redis_py
from gevent.event import Event

from ..gateway import SendResult, WebsocketClientGateway
from .connection import RECONNECT_BACKOFF, RECONNECT_BACKOFF_CAP, describe, make_client
from .envelope import Envelope, EnvelopeError, decode_envelope
from .health import Health
from .history import Echoes, StreamHistory
from .nodes import NODE_REFRESH, NodeClaim
from .publisher import Publisher

logger = logging.getLogger("geventws.redis")


class ChannelGateway(Protocol):
    """A gateway as the subscriber sees it: its channel, where its messages go, its clients' ids."""

    @property
    def channel(self) -> str: ...

    @property
    def local(self) -> WebsocketClientGateway: ...

    @property
    def _client_ids(self) -> set[int]: ...

    @property
    def history(self) -> StreamHistory | None: ...


class SharedSubscriber:
    """One Redis in this process: one subscriber connection and greenlet, one :class:`~.publisher.Publisher`.

    Every :class:`RedisGateway` of this process on the same Redis (URL or
    client object) shares it; it stops when the last one closes.
    """

    _instances: dict[tuple[int, object], SharedSubscriber] = {}

    @classmethod
    def shared(cls, url_or_client: str | redis_py.Redis) -> SharedSubscriber:
        # Keyed by pid too: a forked child must not use its parent's connections.
        key = (os.getpid(), url_or_client if isinstance(url_or_client, str) else id(url_or_client))
        instance = cls._instances.get(key)
        if instance is None:
            instance = cls._instances[key] = cls(key, url_or_client)
        return instance

    def __init__(self, key: tuple[int, object], url_or_client: str | redis_py.Redis) -> None:
        self._key = key
        self.client = make_client(url_or_client)
        self.name = describe(self.client)
        self.origin = os.urandom(8).hex()  # our messages carry it; the echo is recognized by it
        self.gateways: dict[str, list[ChannelGateway]] = {}
        self.ready: dict[str, Event] = {}
        self.health = Health(self.name)
        self.nodes = NodeClaim(self.client, self.health)
        self._pubsub: Any = None
        self.publisher = Publisher(self.client, self.health)
        self.echoes = Echoes()  # broadcasts with history, until Redis sends them back
        self._subscriber = gevent.spawn(self._subscribe_loop)

    # -- gateways

    def add(self, gateway: ChannelGateway) -> None:
        channel = gateway.channel
        gateways = self.gateways.setdefault(channel, [])
        gateways.append(gateway)
        if len(gateways) == 1:
            self.ready[channel] = Event()
            pubsub = self._pubsub
            if pubsub is not None:
                try:  # the subscriber greenlet reads the confirmation; a failure there reconnects
                    pubsub.subscribe(channel)
                except (redis_py.RedisError, OSError):
                    pass

    def remove(self, gateway: ChannelGateway) -> None:
        gateways = self.gateways.get(gateway.channel, [])
        if gateway in gateways:
            gateways.remove(gateway)
        if not gateways:
            self.gateways.pop(gateway.channel, None)
            self.ready.pop(gateway.channel, None)
            pubsub = self._pubsub
            if pubsub is not None:
                try:
                    pubsub.unsubscribe(gateway.channel)
                except (redis_py.RedisError, OSError):
                    pass
        if not self.gateways:
            self.stop()

    def stop(self) -> None:
        if self._instances.get(self._key) is self:
            del self._instances[self._key]
        self._subscriber.kill()  # it closes its connection on the way out
        self.publisher.stop()
        try:
            self.nodes.release()
        except (redis_py.RedisError, OSError):
            pass

    # -- local delivery

    def deliver(self, channel: str, envelope: Envelope, origin: ChannelGateway | None = None) -> SendResult | None:
        """Hand a message to every local gateway on ``channel``; the result of ``origin``'s own delivery."""
        result = None
        for gateway in tuple(self.gateways.get(channel, ())):
            exclude = envelope.exclude
            if envelope.offset is not None and gateway.history is not None:
                exclude += gateway.history.observe(envelope)  # replayed to them already
            local = gateway.local
            data = envelope.data
            if envelope.to is None:
                if isinstance(data, str):
                    sent = local.broadcast_text(data, exclude)
                else:
                    sent = local.broadcast_binary(data, exclude)
            elif isinstance(data, str):
                sent = local.multicast_text(data, envelope.to)
            else:
                sent = local.multicast_binary(data, envelope.to)
            if gateway is origin:
                result = sent
        return result

    def is_local(self, channel: str, client_id: int) -> bool:
        return any(client_id in gateway._client_ids for gateway in self.gateways.get(channel, ()))

    # -- subscribing

    def _subscribe_loop(self) -> None:
        delay = RECONNECT_BACKOFF
        while True:
            try:
                self.nodes.claim()
                pubsub = self.client.pubsub()  # type: ignore[no-untyped-call]
                channels = list(self.gateways)
                if channels:
                    pubsub.subscribe(*channels)
                self._pubsub = pubsub  # from now on add() subscribes new channels itself
                missing = [channel for channel in self.gateways if channel not in channels]
                if missing:
                    pubsub.subscribe(*missing)
                self._recovered()
                delay = RECONNECT_BACKOFF
                self._listen(pubsub)
            except (redis_py.RedisError, OSError) as error:
                self.health.lost(error)
                self.publisher.disconnect()  # it would only notice at its next publish, and lose that
            except Exception:  # a bug must not end delivery for the process: log it, reconnect
                logger.exception("The Redis subscriber failed; reconnecting")
            finally:
                self._close_pubsub()
            gevent.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, RECONNECT_BACKOFF_CAP)

    def _listen(self, pubsub: Any) -> None:
        next_claim = time.monotonic() + NODE_REFRESH
        while True:
            message = pubsub.get_message(timeout=1.0)
            if message is not None and message["channel"] is not None:
                kind = message["type"]
                channel = message["channel"].decode("utf-8", "replace")
                if kind == "message":
                    self._receive(channel, message["data"])
                elif kind == "subscribe" and channel in self.ready:
                    self.ready[channel].set()
            self.echoes.expire(self)
            if time.monotonic() >= next_claim:  # doubles as a health check of Redis
                self.nodes.claim()
                next_claim = time.monotonic() + NODE_REFRESH

    def _receive(self, channel: str, raw: bytes) -> None:
        self.health.counters["received"] += 1
        try:
            envelope = decode_envelope(raw)
        except EnvelopeError as error:
            self.health.counters["ignored"] += 1
            self.health.log_fault(error.kind, "Ignored a message on channel %r: %s (%r...)", channel, error, raw[:60])
            return
        try:
            if envelope.origin != self.origin:
                self.deliver(channel, envelope)
            elif envelope.ref is not None:  # ours, with history: delivered here now, in its place
                self.echoes.arrived(self, channel, envelope)
            # else ours: delivered to this process's clients when it was sent
        except Exception:  # never let one delivery end the subscriber
            logger.exception("Delivering a message from channel %r failed", channel)

    def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        for event in self.ready.values():
            event.clear()
        self.echoes.expire(self, everything=True)  # they would not come back now
        if pubsub is not None:
            try:
                pubsub.close()
            except (redis_py.RedisError, OSError):
                pass

    def _recovered(self) -> None:
        """Redis answers again: the publisher reconnects at once rather than at the end of its backoff."""
        self.health.recovered()
        self.publisher.reconnect_now()
