"""The Redis gateway: a gateway whose sends reach the clients of every process subscribed to its channel."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import redis as redis_py
from gevent import monkey

from ..connection.client import WebsocketClient
from ..gateway import SendResult, WebsocketClientGateway
from ..history import BinaryPayload, TextPayload, messages_after
from .envelope import Envelope, encode_envelope
from .history import StreamHistory
from .subscriber import SharedSubscriber

if TYPE_CHECKING:
    from ..gateway import WebsocketGateway


class RedisUnavailableError(ConnectionError):
    """Redis could not be reached when a gateway needed it."""


class RedisGateway:
    """A :class:`~geventws.gateway.WebsocketGateway` whose sends reach the clients of every process on the channel.

    ``redis`` is a URL (``redis://``, ``rediss://``, ``unix://``) or a
    redis-py client (Sentinel, TLS, ACL users, Valkey).  Gateways of one
    process on the same Redis share one subscriber connection.  ``local`` is
    the gateway that delivers to this process's clients (its options set the
    pending bounds and slow-consumer policy).  The constructor waits up to
    ``connect_timeout`` for the subscription and raises
    :class:`RedisUnavailableError` if Redis cannot be reached, unless
    ``start_degraded``: then it delivers locally and keeps retrying.

    Needs gevent's monkey-patching (redis-py's sockets must yield to other
    greenlets); create gateways in each worker process, after any fork.
    """

    def __init__(
        self,
        redis: str | redis_py.Redis,
        channel: str,
        *,
        local: WebsocketClientGateway | None = None,
        start_degraded: bool = False,
        connect_timeout: float = 5.0,
        history: int = 0,
    ) -> None:
        if not monkey.is_module_patched("socket"):
            raise RuntimeError("RedisGateway needs gevent.monkey.patch_all() before redis-py is used")
        self.channel = channel
        self.local = local if local is not None else WebsocketClientGateway()
        #: The room's history in Redis (see :mod:`geventws.redis.history`), or None.
        self.history = StreamHistory(channel, history) if history else None
        self._client_ids: set[int] = set()  # this process's clients: a send to one of them is not published
        self._shared = SharedSubscriber.shared(redis)
        self._shared.add(self)
        self._closed = False
        if not start_degraded and not self.wait_connected(connect_timeout):
            error = self._shared.health.last_error
            self.close()
            raise RedisUnavailableError(
                f"Cannot subscribe to {channel!r} on Redis at {self._shared.name} within {connect_timeout} s"
                + (f": {error}" if error else "")
            )

    @property
    def connected(self) -> bool:
        """Whether this gateway's channel is subscribed and publishing works, now."""
        subscribed = self._shared.ready.get(self.channel)
        return subscribed is not None and subscribed.is_set() and self._shared.publisher.ready.is_set()

    def counters(self) -> dict[str, int]:
        """Counts of the shared connection: published, dropped (Redis away or slow), received, ignored, reconnects."""
        return dict(self._shared.health.counters)

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until the channel is subscribed and publishing works (again); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for event in (self._shared.ready.get(self.channel), self._shared.publisher.ready):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if event is None or not event.wait(left):
                return False
        return True

    def close(self) -> None:
        """Leave the channel; the last gateway on a Redis closes the shared connection."""
        if not self._closed:
            self._closed = True
            self._shared.remove(self)

    def __enter__(self) -> RedisGateway:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add_client(self, client: WebsocketClient, since: str | None = None) -> None:
        """Add one of this process's clients; it leaves when it closes.

        With ``since``, it first gets what was broadcast to the room after
        that offset, from whichever process (see :mod:`geventws.redis.history`);
        :class:`~geventws.history.HistoryGap` when that cannot be done.
        """
        if since is None:
            self.local.add_client(client)
        elif self.history is None:
            messages_after(None, since)
        else:
            self.history.join(self, client, since)
        if client.id not in self._client_ids:
            self._client_ids.add(client.id)
            client.on_close(lambda closed, info: self._client_ids.discard(closed.id))

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
            shared.publisher.publish(self.channel, message)
        return shared.deliver(self.channel, envelope, self) or SendResult(0)


if TYPE_CHECKING:

    def _is_a_gateway(gateway: RedisGateway) -> WebsocketGateway:
        return gateway  # mypy checks that RedisGateway has the WebsocketGateway interface
