"""Which Redis servers a gateway talks to: one server, a Sentinel-watched master, or a cluster's shards.

The URL (or the redis-py client) says which:

- ``redis://``, ``rediss://``, ``unix://``: one server (``redis.Redis``);
- ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]``:
  the master Sentinel names for ``service_name`` (``master_for``), found
  again after a failover; ``?db=N`` works too, and ``?sentinel_password=``
  for sentinels that need one (the userinfo is the master's);
- ``redis+cluster://[[user]:password@]host:port[,host:port...]``: a Redis
  Cluster (``redis.cluster.RedisCluster``), each channel published and
  subscribed on the shard that owns its slot, with sharded pub/sub
  (``SPUBLISH`` / ``SSUBSCRIBE``, Redis 7 or Valkey 7 and later).

Every shard is one :class:`redis.Redis` client: the publisher and the
subscriber connection of a shard (``geventws.redis.shard``) are taken from its pool.  A URL that
does not parse, an unknown scheme, or a cluster without sharded pub/sub
raises :class:`ValueError` here, when the gateway is made.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis as redis_py
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from .connection import SOCKET_TIMEOUT, describe

# redis-py's Sentinel and cluster classes are untyped.
_CLUSTER: Any = RedisCluster
_NODE: Any = ClusterNode
_SENTINEL: Any = Sentinel

SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "redis+cluster://")

#: No retries inside redis-py: a failure reaches our loops at once, which back off themselves.
_CLIENT_OPTIONS: dict[str, Any] = {"socket_connect_timeout": 5, "socket_timeout": SOCKET_TIMEOUT}


class Topology:
    """One server or a Sentinel-watched master: every channel on one shard."""

    sharded = False  # PUBLISH / SUBSCRIBE

    def __init__(self, client: redis_py.Redis, name: str, owned: bool) -> None:
        self.client = client
        #: The client for keys (node claims, presence).
        self.keys: Any = client
        self.name = name
        self._owned = owned

    def shard_of(self, channel: str) -> str:
        """The name of the shard that carries ``channel``."""
        return self.name

    def shard_client(self, shard: str) -> redis_py.Redis:
        return self.client

    def refresh(self) -> None:
        """Learn the shards again (after a failover or a resharding); nothing to learn for one server."""

    def close(self) -> None:
        if self._owned:
            self.client.close()


class ClusterTopology(Topology):
    """A Redis Cluster: each channel on the primary that owns its slot, with sharded pub/sub."""

    sharded = True  # SPUBLISH / SSUBSCRIBE

    def __init__(self, cluster: RedisCluster, owned: bool) -> None:
        api: Any = cluster  # redis-py's cluster API is untyped
        self.cluster = api
        self.keys = cluster
        nodes = sorted(node.name for node in api.get_primaries())
        self.name = "cluster " + ",".join(nodes[:3]) + ("..." if len(nodes) > 3 else "")
        self._owned = owned
        for node in api.get_primaries():
            if not _has_commands(api.get_redis_connection(node), "SPUBLISH", "SSUBSCRIBE"):
                self.close()
                raise ValueError(
                    f"The Redis Cluster node {node.name} has no sharded pub/sub (SPUBLISH, SSUBSCRIBE):"
                    " RedisGateway needs Redis 7 or Valkey 7 or later"
                )

    def shard_of(self, channel: str) -> str:
        node = self.cluster.nodes_manager.get_node_from_slot(self.cluster.keyslot(channel))
        return str(node.name)

    def shard_client(self, shard: str) -> redis_py.Redis:
        node = self.cluster.get_node(node_name=shard)
        if node is None:  # gone since: learn the cluster again
            self.refresh()
            node = self.cluster.get_node(node_name=shard)
        if node is None:
            raise redis_py.ConnectionError(f"no node {shard} in the cluster any more")
        client: redis_py.Redis = self.cluster.get_redis_connection(node)
        return client

    def refresh(self) -> None:
        self.cluster.nodes_manager.initialize()

    def close(self) -> None:
        if self._owned:
            self.cluster.close()


def _has_commands(client: redis_py.Redis, *names: str) -> bool:
    """Whether the server knows these commands (``COMMAND INFO``, read raw: redis-py's parser fails on a gap)."""
    pool = client.connection_pool
    connection: Any = pool.get_connection()
    try:
        connection.send_command("COMMAND", "INFO", *names)
        reply = connection.read_response()
    finally:
        pool.release(connection)
    entries = reply.values() if isinstance(reply, dict) else reply
    return len(entries) == len(names) and all(entries)


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def _hosts(url: str, netloc: str) -> list[tuple[str, int]]:
    hosts = []
    for item in netloc.rpartition("@")[2].split(","):
        host, colon, port = item.strip().rpartition(":")
        host = host.strip("[]")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"Cannot parse the Redis URL {_redacted(url)!r}: {item!r} is not host:port")
        hosts.append((host, int(port)))
    return hosts


def _credentials(netloc: str) -> dict[str, Any]:
    userinfo, at, _ = netloc.rpartition("@")
    if not at:
        return {}
    user, colon, password = userinfo.partition(":")
    options = {"password": unquote(password)} if colon else {"password": unquote(user)}
    if colon and user:
        options["username"] = unquote(user)
    return options


def _db(url: str, value: str) -> int:
    if not value.isdigit():
        raise ValueError(f"Cannot parse the Redis URL {_redacted(url)!r}: the db {value!r} is not a number")
    return int(value)


def from_url(url: str) -> Topology:
    """The topology a URL names; :class:`ValueError` for one that does not parse or has another scheme."""
    scheme = url.partition("://")[0].lower() + "://"
    if "://" not in url or scheme not in SCHEMES:
        raise ValueError(f"Unknown Redis URL scheme in {_redacted(url)!r}: use one of {', '.join(SCHEMES)}")
    if scheme in ("redis://", "rediss://", "unix://"):
        path = urlsplit(url).path.strip("/")
        if scheme != "unix://" and path:
            _db(url, path)  # redis-py would ignore a db that is not a number
        try:
            client = redis_py.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **_CLIENT_OPTIONS)
        except ValueError as error:
            raise ValueError(f"Cannot parse the Redis URL {_redacted(url)!r}: {error}") from None
        return Topology(client, describe(client), owned=True)
    netloc, _, rest = url.partition("://")[2].partition("/")
    path, _, query_string = rest.partition("?")
    query = {name: values[-1] for name, values in parse_qs(query_string).items()}
    hosts = _hosts(url, netloc)
    credentials = _credentials(netloc)
    if scheme == "redis+cluster://":
        if path not in ("", "0"):
            raise ValueError(f"Cannot parse the Redis URL {_redacted(url)!r}: a cluster has only db 0")
        return ClusterTopology(
            _CLUSTER(
                startup_nodes=[_NODE(host, port) for host, port in hosts],
                retry=Retry(NoBackoff(), 0),
                **credentials,
                **_CLIENT_OPTIONS,
            ),
            owned=True,
        )
    service, _, db = path.partition("/")
    if not service:
        raise ValueError(f"Cannot parse the Redis URL {_redacted(url)!r}: no service name (…/service_name)")
    sentinel_options = {"password": query["sentinel_password"]} if "sentinel_password" in query else {}
    sentinel = _SENTINEL(hosts, sentinel_kwargs={**_CLIENT_OPTIONS, **sentinel_options}, **_CLIENT_OPTIONS)
    client = sentinel.master_for(
        service,
        db=_db(url, db or query.get("db", "0")),
        retry=Retry(NoBackoff(), 0),
        **credentials,
        **_CLIENT_OPTIONS,
    )
    names = ",".join(f"{host}:{port}" for host, port in hosts)
    return Topology(client, f"sentinel {service} via {names}", owned=True)


def from_client(client: redis_py.Redis | RedisCluster) -> Topology:
    """The topology of a redis-py client (a ``Redis``, one from ``Sentinel.master_for``, or a ``RedisCluster``)."""
    if client.get_connection_kwargs().get("decode_responses"):
        raise ValueError("RedisGateway needs a redis-py client with decode_responses=False: payloads are bytes")
    if isinstance(client, RedisCluster):
        return ClusterTopology(client, owned=False)
    pool = client.connection_pool
    service = getattr(pool, "service_name", None)
    if service is not None:
        return Topology(client, f"sentinel {service}", owned=False)
    return Topology(client, describe(client), owned=False)
