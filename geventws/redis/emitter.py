"""Publishing to Redis gateways' channels from a process without WebSocket clients."""

from __future__ import annotations

import os
from collections.abc import Iterable

import redis as redis_py
from redis.cluster import RedisCluster

from .envelope import encode_envelope
from .topology import from_client, from_url


class RedisEmitter:
    """Publishes to :class:`RedisGateway` channels from a process without WebSocket clients.

    Plain redis-py, synchronous: works in an unpatched process (a Flask view
    under a sync worker, a job queue worker, a cron script).  ``redis`` takes
    the URLs and clients :class:`RedisGateway` takes (a cluster publishes
    with ``SPUBLISH`` on the channel's shard).  Each method returns how many
    subscribed processes Redis handed the message to.
    """

    def __init__(self, redis: str | redis_py.Redis | RedisCluster) -> None:
        self._topology = from_url(redis) if isinstance(redis, str) else from_client(redis)
        self._origin = "emitter-" + os.urandom(8).hex()

    def broadcast_text(self, channel: str, data: str, exclude: Iterable[int] = ()) -> int:
        """Send to every client of the channel's gateways but ``exclude``."""
        return self._publish(channel, encode_envelope(self._origin, data, exclude))

    def broadcast_binary(self, channel: str, data: bytes, exclude: Iterable[int] = ()) -> int:
        """Send to every client of the channel's gateways but ``exclude``."""
        return self._publish(channel, encode_envelope(self._origin, bytes(data), exclude))

    def multicast_text(self, channel: str, client_ids: Iterable[int], data: str) -> int:
        """Send to these clients of the channel's gateways, wherever they are connected."""
        return self._publish(channel, encode_envelope(self._origin, data, to=client_ids))

    def multicast_binary(self, channel: str, client_ids: Iterable[int], data: bytes) -> int:
        """Send to these clients of the channel's gateways, wherever they are connected."""
        return self._publish(channel, encode_envelope(self._origin, bytes(data), to=client_ids))

    def send_text(self, channel: str, client_id: int, data: str) -> int:
        """Send to one client of the channel's gateways, wherever it is connected."""
        return self._publish(channel, encode_envelope(self._origin, data, to=(client_id,)))

    def send_binary(self, channel: str, client_id: int, data: bytes) -> int:
        """Send to one client of the channel's gateways, wherever it is connected."""
        return self._publish(channel, encode_envelope(self._origin, bytes(data), to=(client_id,)))

    def close(self) -> None:
        """Close the connections of a client this emitter made from a URL."""
        self._topology.close()

    def _publish(self, channel: str, message: bytes) -> int:
        if self._topology.sharded:
            return int(self._topology.keys.spublish(channel, message))
        return int(self._topology.client.publish(channel, message))
