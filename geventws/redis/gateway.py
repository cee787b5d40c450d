"""The Redis gateway: a gateway whose sends reach the clients of every process subscribed to its channel."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import redis as redis_py
from gevent import monkey
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from ..connection.client import WebsocketClient
from ..gateway import SendResult, WebsocketClientGateway
from ..history import BinaryPayload, TextPayload, messages_after
from .envelope import Envelope, encode_envelope
from .history import StreamHistory
from .presence import DEFAULT_PRESENCE_TTL
from .shard import Shard
from .subscriber import SharedSubscriber

if TYPE_CHECKING:
    from ..gateway import WebsocketGateway


class RedisUnavailableError(ConnectionError):
    """Redis could not be reached when a gateway needed it."""


class RedisGateway:
    """A :class:`~geventws.gateway.WebsocketGateway` whose sends reach the clients of every process on the channel.

    ``redis`` is a URL (``redis://``, ``rediss://``, ``unix://``,
    ``redis+sentinel://host:port,host:port/service_name``,
    ``redis+cluster://host:port[,host:port]``, see :mod:`.topology`) or a
    redis-py client (``Redis``, one from ``Sentinel.master_for``, a
    ``RedisCluster``).  Gateways of one process on the same Redis share its
    connections: one subscriber connection per Redis server (per cluster
    shard) that carries a channel with members here.  ``local`` is the
    gateway that delivers to this process's clients (its options set the
    pending bounds and slow-consumer policy).  ``presence_ttl`` is how long a
    member counts in :meth:`count_clients` after its process stops
    refreshing it (see :mod:`.presence`).  The constructor waits up to
    ``connect_timeout`` for Redis and raises :class:`RedisUnavailableError`
    if it cannot be reached, unless ``start_degraded``: then it delivers
    locally and keeps retrying.  A URL that does not parse, an unknown scheme
    or a cluster without sharded pub/sub raise :class:`ValueError`.

    Needs gevent's monkey-patching (redis-py's sockets must yield to other
    greenlets); create gateways in each worker process, after any fork.
    """

    def __init__(
        self,
        redis: str | redis_py.Redis | RedisCluster,
        channel: str,
        *,
        local: WebsocketClientGateway | None = None,
        start_degraded: bool = False,
        connect_timeout: float = 5.0,
        presence_ttl: float = DEFAULT_PRESENCE_TTL,
        history: int = 0,
    ) -> None:
        if not monkey.is_module_patched("socket"):
            raise RuntimeError("RedisGateway needs gevent.monkey.patch_all() before redis-py is used")
        self.channel = channel
        self.local = local if local is not None else WebsocketClientGateway()
        #: The room's history in Redis (see :mod:`geventws.redis.history`), or None.
        self.history = StreamHistory(channel, history) if history else None
        self._client_ids: set[int] = set()  # this process's clients: a send to one of them is not published
        self._watched: set[int] = set()  # clients whose close this gateway listens for
        self._connect_timeout = connect_timeout
        try:
            self._shared = SharedSubscriber.shared(redis)
        except (redis_py.ConnectionError, redis_py.TimeoutError, RedisClusterException) as error:
            if "cluster mode is not enabled" in str(error).lower():
                raise ValueError(f"{redis!r} is not a Redis Cluster: {error}") from None
            raise RedisUnavailableError(f"Cannot reach Redis for {channel!r}: {error}") from None
        self.presence = self._shared.presence_of(channel, presence_ttl)
        self._shared.add(self)
        self._shard = self._shared.shard_for(channel)
        self._closed = False
        if not start_degraded and not self.wait_connected(connect_timeout):
            last = self._shard.health.last_error or self._shared.health.last_error
            self.close()
            raise RedisUnavailableError(
                f"Cannot reach {channel!r} on Redis at {self._shard.name} within {connect_timeout} s"
                + (f": {last}" if last else "")
            )

    @property
    def connected(self) -> bool:
        """Whether publishing works and, with members here, the channel is subscribed, now."""
        if not self._shard.publisher.ready.is_set() or not self._shared.claimed.is_set():
            return False
        subscribed = self._shared.subscribed(self.channel)
        return not self._client_ids or (subscribed is not None and subscribed.is_set())

    def counters(self) -> dict[str, int]:
        """Counts of the shared connections: published, dropped (Redis away or slow), received, ignored, reconnects."""
        return self._shared.counters()

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until publishing works and, with members here, the channel is subscribed (again); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for event in (self._shared.claimed, self._shard_now().publisher.ready, self._shared.subscribed(self.channel)):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if event is not None and not event.wait(left):
                return False
        return True

    def close(self) -> None:
        """Leave the channel; the last gateway on a Redis closes the shared connections."""
        if not self._closed:
            self._closed = True
            self._shared.remove(self)

    def __enter__(self) -> RedisGateway:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add_client(self, client: WebsocketClient, since: str | None = None) -> None:
        """Add one of this process's clients; it leaves when it closes or is removed.

        The first member here subscribes the channel: this waits (up to
        ``connect_timeout``, not at all while Redis is away) until Redis
        confirms it, so the client misses nothing published after it joined.
        With ``since``, it first gets what was broadcast to the room after
        that offset, from whichever process (see :mod:`geventws.redis.history`);
        :class:`~geventws.history.HistoryGap` when that cannot be done.
        """
        if client.is_closed:
            return
        if since is not None and self.history is None:
            messages_after(None, since)  # raises: no history to resume from
        new = client.id not in self._client_ids
        if new:
            self._client_ids.add(client.id)
            if client.id not in self._watched:
                self._watched.add(client.id)
                client.on_close(self._closed_client)
            subscribed = self._shared.join(self)
            if not subscribed.is_set() and self._shard_now().health.connected:
                subscribed.wait(self._connect_timeout)  # subscribed before the replay reads the history
        try:
            if since is None or self.history is None:
                self.local.add_client(client)
            else:
                self.history.join(self, client, since)
        except BaseException:
            if new:
                self._left(client.id)
            raise
        if new:
            self._presence(self.presence.add, (client.id,))

    def remove_client(self, client: WebsocketClient) -> None:
        """Take one of this process's clients out: it stays connected and may join again.

        What was queued for it is dropped (see
        :meth:`~geventws.WebsocketClientGateway.remove_client`); the
        last member here unsubscribes the channel.
        """
        self.local.remove_client(client)
        self._left(client.id)

    def count_clients(self) -> int:
        """How many clients are in the room, in every process: one Redis round trip (``O(log N)``)."""
        return int(self._ask(self.presence.count))

    def get_client_ids(self) -> set[int]:
        """The ids of the room's clients, in every process: one Redis round trip (``O(log N + N)``)."""
        ids: set[int] = self._ask(self.presence.ids)
        return ids

    def _closed_client(self, client: WebsocketClient, info: object) -> None:
        self._watched.discard(client.id)
        self._left(client.id)

    def _left(self, client_id: int) -> None:
        if client_id in self._client_ids:
            self._client_ids.discard(client_id)
            self._presence(self.presence.remove, client_id)
            if not self._client_ids:
                self._shared.leave(self)

    def _shard_now(self) -> Shard:
        """The shard of the channel (another after a cluster moved its slot)."""
        shard = self._shared.shards.get(self._shared.topology.shard_of(self.channel))
        if shard is None:
            shard = self._shared.shard_for(self.channel)
        self._shard = shard
        return shard

    def _presence(self, method: Callable[[Any], object], argument: Any) -> None:
        """A presence write: skipped while Redis is away (the keeper writes every member again when it is back)."""
        if self._shared.keys_connected() and not self._closed:
            try:
                method(argument)
            except (redis_py.RedisError, OSError, ValueError) as error:  # ValueError: closed under the command
                self._shared.health.lost(error)

    def _ask(self, question: Callable[[], Any]) -> Any:
        if not self._shared.keys_connected():
            raise RedisUnavailableError(f"Redis at {self._shared.name} is unreachable: presence is unknown")
        try:
            return question()
        except (redis_py.ConnectionError, redis_py.TimeoutError, OSError) as error:
            self._shared.health.lost(error)
            raise RedisUnavailableError(f"Redis at {self._shared.name} is unreachable: {error}") from None

    def get_clients(self) -> dict[int, WebsocketClient]:
        """This process's clients in the gateway."""
        return self.local.get_clients()

    def broadcast_text(self, data: TextPayload, exclude: Iterable[int] = ()) -> SendResult:
        """Send to every client on the channel, in every process, but ``exclude``; the result is this process's."""
        if self.history is not None:
            return self._shared.echoes.send(self._shared, self, data, tuple(exclude), self.history.size)
        return self._send(Envelope("", data("") if callable(data) else data, tuple(exclude)))

    def broadcast_binary(self, data: BinaryPayload, exclude: Iterable[int] = ()) -> SendResult:
        """Send to every client on the channel, in every process, but ``exclude``; the result is this process's."""
        if self.history is not None:
            return self._shared.echoes.send(self._shared, self, data, tuple(exclude), self.history.size)
        return self._send(Envelope("", bytes(data("") if callable(data) else data), tuple(exclude)))

    def multicast_text(self, data: str, client_ids: Iterable[int]) -> SendResult:
        """Send to these clients wherever they are connected; the result covers those of this process."""
        return self._send(Envelope("", data, (), tuple(dict.fromkeys(client_ids))))

    def multicast_binary(self, data: bytes, client_ids: Iterable[int]) -> SendResult:
        """Send to these clients wherever they are connected; the result covers those of this process."""
        return self._send(Envelope("", bytes(data), (), tuple(dict.fromkeys(client_ids))))

    def send_text(self, data: str, client_id: int) -> SendResult:
        """Send to one client wherever it is connected; the result is empty when it is not in this process."""
        return self._send(Envelope("", data, (), (client_id,)))

    def send_binary(self, data: bytes, client_id: int) -> SendResult:
        """Send to one client wherever it is connected; the result is empty when it is not in this process."""
        return self._send(Envelope("", bytes(data), (), (client_id,)))

    def _send(self, envelope: Envelope) -> SendResult:
        shared = self._shared
        to = envelope.to
        if to is None or not all(shared.is_local(self.channel, client_id) for client_id in to):
            # Published first: the other processes deliver while this one writes to its own clients.
            message = encode_envelope(shared.origin, envelope.data, envelope.exclude, to)
            self._shard_now().publisher.publish(self.channel, message)
        return shared.deliver(self.channel, envelope, self) or SendResult(0)


if TYPE_CHECKING:

    def _is_a_gateway(gateway: RedisGateway) -> WebsocketGateway:
        return gateway  # mypy checks that RedisGateway has the WebsocketGateway interface
