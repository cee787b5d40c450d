"""One Redis (server, Sentinel master or cluster) in this process: the shards every gateway on it shares.

:class:`SharedSubscriber` holds one :class:`~.shard.Shard` per server it
needs (one, or one per cluster shard that carries a channel with members
here), hands each message from another process to the local gateways of
its channel, and runs the keeper greenlet that refreshes the client id node
claim (see :mod:`.nodes`) and this process's presence entries (see
:mod:`.presence`).  A channel is subscribed while a gateway on it has
members in this process, and only then.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Protocol

import gevent
import redis as redis_py
from gevent.event import Event
from redis.cluster import RedisCluster

from ..gateway import SendResult, WebsocketClientGateway
from .envelope import Envelope, EnvelopeError, decode_envelope
from .health import Health
from .history import Echoes, StreamHistory
from .nodes import NODE_REFRESH, NodeClaim
from .presence import Presence
from .shard import Shard
from .topology import Topology, from_client, from_url

logger = logging.getLogger("geventws.redis")


class ChannelGateway(Protocol):
    """A gateway as the subscriber sees it: its channel, where its messages go, its clients, its presence."""

    @property
    def channel(self) -> str: ...

    @property
    def local(self) -> WebsocketClientGateway: ...

    @property
    def presence(self) -> Presence: ...

    @property
    def _client_ids(self) -> set[int]: ...

    @property
    def history(self) -> StreamHistory | None: ...


class SharedSubscriber:
    """The shards of one Redis in this process, the gateways on it, and their keeper greenlet.

    Every :class:`RedisGateway` of this process on the same Redis (URL or
    client object) shares it; it stops when the last one closes.
    """

    _instances: dict[tuple[int, object], SharedSubscriber] = {}

    @classmethod
    def shared(cls, url_or_client: str | redis_py.Redis | RedisCluster) -> SharedSubscriber:
        # Keyed by pid too: a forked child must not use its parent's connections.
        key = (os.getpid(), url_or_client if isinstance(url_or_client, str) else id(url_or_client))
        instance = cls._instances.get(key)
        if instance is None:
            topology = from_url(url_or_client) if isinstance(url_or_client, str) else from_client(url_or_client)
            instance = cls._instances[key] = cls(key, topology)
        return instance

    def __init__(self, key: tuple[int, object], topology: Topology) -> None:
        self._key = key
        self.topology = topology
        self.name = topology.name
        self.origin = os.urandom(8).hex()  # our messages carry it; the echo is recognized by it
        self.gateways: list[ChannelGateway] = []
        #: The gateways with members in this process, by channel: the subscribed channels.
        self.members: dict[str, list[ChannelGateway]] = {}
        self.shards: dict[str, Shard] = {}
        self._where: dict[str, str] = {}  # subscribed channel -> shard name
        self.health = Health(topology.name)  # of the key commands (node claims, presence)
        self.nodes = NodeClaim(topology.keys, self.health)
        self.claimed = Event()
        self.echoes = Echoes()  # broadcasts with history, until Redis sends them back
        self._last_refresh = 0.0
        self._wake = Event()
        self._keeper = gevent.spawn(self._keep)

    def shard_for(self, channel: str) -> Shard:
        name = self.topology.shard_of(channel)
        shard = self.shards.get(name)
        if shard is None:
            client = self.topology.shard_client(name)
            health = Health(name) if self.topology.sharded else self.health  # one server: one loss, logged once
            shard = self.shards[name] = Shard(
                client,
                health,
                self.topology.sharded,
                self._receive,
                self._shard_connected,
                self._moved,
                self._shard_lost,
            )
        return shard

    def counters(self) -> dict[str, int]:
        if not self.topology.sharded:
            return dict(self.health.counters)
        totals = dict(self.health.counters)  # the key commands', and the history broadcasts dropped
        for shard in self.shards.values():
            for name, value in shard.health.counters.items():
                totals[name] += value
        return totals

    # -- gateways and their members

    def add(self, gateway: ChannelGateway) -> None:
        self.gateways.append(gateway)

    def remove(self, gateway: ChannelGateway) -> None:
        self.leave(gateway)
        if gateway in self.gateways:
            self.gateways.remove(gateway)
        if not self.gateways:
            self.stop()

    def join(self, gateway: ChannelGateway) -> Event:
        """``gateway`` has its first member here: subscribe its channel (the event is set once confirmed)."""
        channel = gateway.channel
        gateways = self.members.setdefault(channel, [])
        if gateway not in gateways:
            gateways.append(gateway)
        shard = self.shard_for(channel) if channel not in self._where else self.shards[self._where[channel]]
        self._where[channel] = shard.name
        return shard.subscribe(channel)

    def leave(self, gateway: ChannelGateway) -> None:
        """``gateway`` has no member here any more: unsubscribe its channel unless another gateway needs it."""
        gateways = self.members.get(gateway.channel, [])
        if gateway in gateways:
            gateways.remove(gateway)
        if not gateways and self.members.pop(gateway.channel, None) is not None:
            name = self._where.pop(gateway.channel, None)
            shard = self.shards.get(name) if name is not None else None
            if shard is not None:
                shard.unsubscribe(gateway.channel)

    def subscribed(self, channel: str) -> Event | None:
        name = self._where.get(channel)
        shard = self.shards.get(name) if name is not None else None
        return shard.channels.get(channel) if shard is not None else None

    def stop(self) -> None:
        if self._instances.get(self._key) is self:
            del self._instances[self._key]
        self._keeper.kill()
        for shard in self.shards.values():
            shard.stop()
        self.shards.clear()
        try:
            self.nodes.release()
        except (redis_py.RedisError, OSError):
            pass
        self.topology.close()

    # -- local delivery

    def deliver(self, channel: str, envelope: Envelope, origin: ChannelGateway | None = None) -> SendResult | None:
        """Hand a message to every local gateway with members on ``channel``; the result of ``origin``'s."""
        result = None
        for gateway in tuple(self.members.get(channel, ())):
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
        return any(client_id in gateway._client_ids for gateway in self.members.get(channel, ()))

    def _receive(self, channel: str, raw: bytes) -> None:
        shard = self.shards.get(self._where.get(channel, ""))
        health = shard.health if shard is not None else self.health
        health.counters["received"] += 1
        try:
            envelope = decode_envelope(raw)
        except EnvelopeError as error:
            health.counters["ignored"] += 1
            health.log_fault(error.kind, "Ignored a message on channel %r: %s (%r...)", channel, error, raw[:60])
            return
        try:
            if envelope.origin != self.origin:
                self.deliver(channel, envelope)
            elif envelope.ref is not None:  # ours, with history: delivered here now, in its place
                self.echoes.arrived(self, channel, envelope)
            # else ours: delivered to this process's clients when it was sent
        except Exception:  # never let one delivery end the subscriber
            logger.exception("Delivering a message from channel %r failed", channel)

    # -- topology changes

    def _shard_connected(self, shard: Shard) -> None:
        self._wake.set()  # claim and refresh presence now: Redis may have lost them

    def _moved(self, shard: Shard, channel: str) -> None:
        """The cluster ended a subscription (its slot moved): learn the cluster again, subscribe on the new owner."""
        gevent.spawn(self._resubscribe, channel)

    def _shard_lost(self, shard: Shard) -> None:
        """A shard's connection failed: its echoes will not come back; on a cluster, follow moved slots."""
        self.echoes.expire(self, everything=True)
        if not self.topology.sharded:
            return
        now = time.monotonic()
        if now - self._last_refresh < 1.0:
            return  # once a second at most, however many shards fail
        self._last_refresh = now
        gevent.spawn(self._reroute, shard)

    def _reroute(self, shard: Shard) -> None:
        try:
            self.topology.refresh()
        except (redis_py.RedisError, OSError):
            return  # the next failure tries again
        for channel in list(shard.channels):
            if self.topology.shard_of(channel) != shard.name and channel in self.members:
                shard.channels.pop(channel, None)
                self._where.pop(channel, None)
                for gateway in self.members[channel][:1]:
                    self.join(gateway)

    def _resubscribe(self, channel: str) -> None:
        try:
            self.topology.refresh()
        except (redis_py.RedisError, OSError) as error:
            logger.warning("Cannot learn the cluster's shards again (%s): retrying %r on the old shard", error, channel)
        if channel in self.members:
            self._where.pop(channel, None)
            for gateway in self.members[channel][:1]:
                self.join(gateway)

    # -- node claims and presence

    def _keep(self) -> None:
        next_claim = next_presence = 0.0
        while True:
            now = time.monotonic()
            try:
                if now >= next_claim or not self.claimed.is_set():
                    self.nodes.claim()
                    self.claimed.set()
                    next_claim = now + NODE_REFRESH
                if now >= next_presence:
                    next_presence = now + self._refresh_presence()
                self.health.recovered()
            except (redis_py.RedisError, OSError) as error:
                self.health.lost(error)
                next_claim = next_presence = 0.0
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            except redis_py.ResponseError as error:  # e.g. an ACL user without scripts: pub/sub still works
                self.health.log_fault("presence refused", "Cannot keep presence in Redis at %s: %s", self.name, error)
                next_presence = time.monotonic() + 60
            except Exception:
                logger.exception("Refreshing the client id claim or presence in Redis at %s failed", self.name)
                next_presence = time.monotonic() + 60
            self.echoes.expire(self)  # delivered here, unkept, what Redis did not send back in time
            self._wake.wait(max(0.05, min(next_claim, next_presence, time.monotonic() + 1.0) - time.monotonic()))
            if self._wake.is_set():
                self._wake.clear()
                next_claim = next_presence = 0.0

    def _refresh_presence(self) -> float:
        """Push this process's members' expiry forward; seconds until the next refresh is due."""
        interval = 60.0
        for gateways in tuple(self.members.values()):
            for gateway in tuple(gateways):
                gateway.presence.add(tuple(gateway._client_ids))
                interval = min(interval, gateway.presence.ttl / 3)
        return interval

    def keys_connected(self) -> bool:
        return self.health.connected and self.claimed.is_set()

    def presence_of(self, channel: str, ttl: float) -> Presence:
        return Presence(self.topology.keys, channel, ttl)

    def describe(self) -> dict[str, Any]:
        """For logs and tests: the shards and their channels."""
        return {name: sorted(shard.channels) for name, shard in self.shards.items()}
