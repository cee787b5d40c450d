"""Connecting to one Redis: the redis-py client, how logs name it, and the timings every connection shares."""

from __future__ import annotations

import redis as redis_py
from redis.backoff import NoBackoff
from redis.retry import Retry

#: Reconnect delays: doubling from the first to the cap (with jitter), so a
#: Redis restart is noticed within about the cap and a long outage costs one
#: attempt per cap.
RECONNECT_BACKOFF = 0.1
RECONNECT_BACKOFF_CAP = 2.0
#: How long a Redis command may take before the connection counts as lost.
SOCKET_TIMEOUT = 10.0


def make_client(url_or_client: str | redis_py.Redis) -> redis_py.Redis:
    """The client for a URL, or the given one once checked: payloads are bytes, so it must not decode responses."""
    if isinstance(url_or_client, str):
        # No retries inside redis-py: a failure reaches our loops at once, which back off themselves.
        return redis_py.Redis.from_url(
            url_or_client, retry=Retry(NoBackoff(), 0), socket_connect_timeout=5, socket_timeout=SOCKET_TIMEOUT
        )
    if url_or_client.get_connection_kwargs().get("decode_responses"):
        raise ValueError("RedisGateway needs a redis-py client with decode_responses=False: payloads are bytes")
    return url_or_client


def describe(client: redis_py.Redis) -> str:
    """Where the client connects, for logs: never the URL, which may hold a password."""
    kwargs = client.get_connection_kwargs()
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
