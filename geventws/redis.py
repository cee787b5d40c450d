"""Broadcast across processes and machines through Redis (or Valkey) pub/sub.

:class:`RedisGateway` has the interface of the local gateway; one gateway is
one Redis channel (a room).  Each send is delivered at once to this process's
clients through a local :class:`~geventws.gateway.WebsocketClientGateway`
(encode once, bounded outboxes, slow-consumer policy) and published once;
every other process subscribed to the channel delivers it to its own clients
the same way.  A process ignores the echo of its own messages.
:class:`RedisEmitter` publishes the same messages from a process without
WebSocket clients (no gevent, no server needed).

Guarantees of a delivery to another process:

- at most once, and in the order the publishing process sent them (per
  process and Redis: one publishing connection, one subscriber connection);
- lost while Redis is unreachable: publishes are dropped (counted, logged
  once), never queued without bound; local delivery goes on meanwhile;
- :class:`~geventws.gateway.SendResult` covers the local deliveries only.

Client ids are unique across the processes sharing a Redis: each process
claims its id node number (see ``client_ids`` in
:mod:`geventws.connection.client`) as the key ``geventws:node:<n>``.

The message format (version 1), so other languages can publish too: one line
of JSON (UTF-8, no newline inside), a newline, then the payload bytes (UTF-8
for text)::

    {"geventws":1,"from":"<publisher id>","type":"text","exclude":[12]}\\n<payload>

``type`` is ``"text"`` or ``"binary"``; ``exclude`` (a broadcast) or ``to``
(a multicast to ids) are optional lists of client ids; ``from`` is any string
unique to the publisher.  A message that does not parse, or has another
version, is logged (once per kind of fault) and skipped.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import gevent
from gevent import monkey
from gevent.event import Event
from gevent.lock import Semaphore

try:
    import redis as redis_py
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as error:  # pragma: no cover - the extra is missing
    raise ImportError("geventws.redis needs redis-py: pip install 'geventws[redis]'") from error

from .connection.client import WebsocketClient, client_ids
from .gateway import SendResult, WebsocketClientGateway

if TYPE_CHECKING:
    from .gateway import WebsocketGateway

logger = logging.getLogger("geventws.redis")

#: The version of the message format this module writes and reads.
FORMAT_VERSION = 1
#: How long a node number claim lives without a refresh, and how often it is refreshed.
NODE_TTL = 60
NODE_REFRESH = 20.0
#: Reconnect delays: doubling from the first to the cap (with jitter), so a
#: Redis restart is noticed within about the cap and a long outage costs one
#: attempt per cap.
RECONNECT_BACKOFF = 0.1
RECONNECT_BACKOFF_CAP = 2.0
#: Bytes published but not yet answered by Redis (per Redis, all channels);
#: past it new publishes are dropped, so a Redis that stops answering cannot
#: make memory grow.  Normally only a few messages are in flight.
MAX_IN_FLIGHT_BYTES = 4 * 1024 * 1024
#: How long a Redis command may take before the connection counts as lost.
SOCKET_TIMEOUT = 10.0


class RedisUnavailableError(ConnectionError):
    """Redis could not be reached when a gateway needed it."""


class Envelope(NamedTuple):
    """One message on a channel, decoded."""

    origin: str
    data: str | bytes
    exclude: tuple[int, ...] = ()
    to: tuple[int, ...] | None = None


class EnvelopeError(ValueError):
    """Not a message of ours: ``kind`` names the fault, for logging once per kind."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}{': ' + detail if detail else ''}")
        self.kind = kind


def encode_envelope(
    origin: str, data: str | bytes, exclude: Iterable[int] = (), to: Iterable[int] | None = None
) -> bytes:
    """The bytes published for one send (see the module docstring for the format)."""
    header: dict[str, Any] = {"geventws": FORMAT_VERSION, "from": origin}
    if isinstance(data, str):
        header["type"] = "text"
        payload = data.encode("utf-8")
    else:
        header["type"] = "binary"
        payload = bytes(data)
    excluded = list(exclude)
    if excluded:
        header["exclude"] = excluded
    if to is not None:
        header["to"] = list(to)
    return json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\n" + payload


def decode_envelope(raw: bytes) -> Envelope:
    """Parse a published message; :class:`EnvelopeError` for anything that is not ours."""
    end = raw.find(b"\n")
    if end < 0 or not raw.startswith(b"{"):
        raise EnvelopeError("not a geventws message")
    try:
        header = json.loads(raw[:end])
    except ValueError as error:
        raise EnvelopeError("not a geventws message", str(error)) from None
    if not isinstance(header, dict) or "geventws" not in header:
        raise EnvelopeError("not a geventws message")
    if header["geventws"] != FORMAT_VERSION:
        raise EnvelopeError(f"unsupported format version {header['geventws']!r}")
    origin, kind = header.get("from"), header.get("type")
    exclude, to = header.get("exclude", []), header.get("to")
    if not isinstance(origin, str) or kind not in ("text", "binary") or not _is_ids(exclude) or not _is_ids(to, None):
        raise EnvelopeError("malformed header", raw[:end].decode("utf-8", "replace")[:200])
    payload = raw[end + 1 :]
    if kind == "text":
        try:
            return Envelope(origin, payload.decode("utf-8"), tuple(exclude), None if to is None else tuple(to))
        except UnicodeDecodeError:
            raise EnvelopeError("text payload is not UTF-8") from None
    return Envelope(origin, payload, tuple(exclude), None if to is None else tuple(to))


def _is_ids(value: object, *also: None) -> bool:
    """Whether ``value`` is a list of client ids (or one of ``also``)."""
    if value is None:
        return None in also
    return isinstance(value, list) and all(type(item) is int for item in value)


_token: tuple[int, str] | None = None


def _process_token() -> str:
    """A random token of this process (drawn again in a forked child); its node number claims carry it."""
    global _token
    if _token is None or _token[0] != os.getpid():
        _token = (os.getpid(), os.urandom(8).hex())
    return _token[1]


def _client(url_or_client: str | redis_py.Redis) -> redis_py.Redis:
    if isinstance(url_or_client, str):
        # No retries inside redis-py: a failure reaches our loops at once, which back off themselves.
        return redis_py.Redis.from_url(
            url_or_client, retry=Retry(NoBackoff(), 0), socket_connect_timeout=5, socket_timeout=SOCKET_TIMEOUT
        )
    if url_or_client.get_connection_kwargs().get("decode_responses"):
        raise ValueError("RedisGateway needs a redis-py client with decode_responses=False: payloads are bytes")
    return url_or_client


def _describe(client: redis_py.Redis) -> str:
    """Where the client connects, for logs: never the URL, which may hold a password."""
    kwargs = client.get_connection_kwargs()
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


class _Publisher:
    """Publishes on a connection of its own: written at once by the sender, replies read by a greenlet.

    A send does not wait for Redis: the PUBLISH is written in the sending
    greenlet (so Redis and the other processes work while this one still
    delivers locally), under a lock so that commands never interleave and go
    out in the order they were sent.  The publisher greenlet connects (and
    reconnects, with backoff) and reads the answers in order, so a Redis that
    is down or unreachable never holds a sender up.  While it is away, or has
    more than :data:`MAX_IN_FLIGHT_BYTES` unanswered, publishes are dropped and
    counted.  The one wait left: a Redis that stops reading without closing
    the connection can hold a sender until the socket's buffers take the
    message or :data:`SOCKET_TIMEOUT` passes.
    """

    def __init__(self, shared: _SharedSubscriber) -> None:
        self._shared = shared
        self._connection: Any = None
        self.ready = Event()  # set while the connection is up
        self._lock = Semaphore()
        self._in_flight: deque[int] = deque()  # sizes of the publishes awaiting their reply
        self._in_flight_bytes = 0
        self._wake = Event()
        self.greenlet = gevent.spawn(self._run)

    def publish(self, channel: str, message: bytes) -> None:
        shared = self._shared
        if not self.ready.is_set():
            shared.counters["dropped"] += 1  # Redis is away: lost, not queued
            return
        if self._in_flight and self._in_flight_bytes + len(message) > MAX_IN_FLIGHT_BYTES:
            shared.counters["dropped"] += 1
            shared.log_fault("too slow", "Redis at %s does not keep up: dropping publishes", shared.name)
            return
        with self._lock:
            if not self.ready.is_set():  # lost while this sender waited for the lock
                shared.counters["dropped"] += 1
                return
            try:
                self._connection.send_command("PUBLISH", channel, message)
            except (redis_py.RedisError, OSError) as error:
                self._fail(error, 1)
                return
        self._in_flight.append(len(message))
        self._in_flight_bytes += len(message)
        self._wake.set()

    def disconnect(self) -> None:
        """Drop the connection because the subscriber lost Redis: a restart closed this one too."""
        if self.ready.is_set():
            self._fail(redis_py.ConnectionError("the subscriber lost Redis"), 0)

    def reconnect_now(self) -> None:
        """Cut the reconnect backoff short (the subscriber just reached Redis)."""
        if not self.ready.is_set():
            self._wake.set()

    def _run(self) -> None:
        delay = RECONNECT_BACKOFF
        while True:
            if not self.ready.is_set():
                try:
                    if self._connection is None:
                        self._connection = self._shared.client.connection_pool.get_connection()
                    self._connection.connect()
                except (redis_py.RedisError, OSError) as error:
                    self._shared.lost(error)
                    self._wake.clear()
                    self._wake.wait(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, RECONNECT_BACKOFF_CAP)
                    continue
                delay = RECONNECT_BACKOFF
                self.ready.set()
            self._wake.wait()
            self._wake.clear()
            self._read_replies()

    def _read_replies(self) -> None:
        shared = self._shared
        while self._in_flight:
            try:
                self._connection.read_response()
            except redis_py.ResponseError as error:  # refused (e.g. ACL): the connection is fine
                shared.counters["dropped"] += 1
                shared.log_fault("publish refused", "Redis at %s refused a publish: %s", shared.name, error)
            except (redis_py.RedisError, OSError) as error:
                self._fail(error, 0)
                return
            else:
                shared.counters["published"] += 1
                if not shared.connected:
                    shared.recovered()
            self._in_flight_bytes -= self._in_flight.popleft()

    def _fail(self, error: BaseException, unsent: int) -> None:
        """Drop what awaits a reply and close the connection; the greenlet reconnects."""
        self.ready.clear()
        self._shared.counters["dropped"] += unsent + len(self._in_flight)
        self._in_flight.clear()
        self._in_flight_bytes = 0
        if self._connection is not None:
            self._connection.disconnect()
        self._shared.lost(error)
        self._wake.set()

    def stop(self) -> None:
        self.greenlet.kill()
        self.ready.clear()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.disconnect()
            self._shared.client.connection_pool.release(connection)


class _SharedSubscriber:
    """One Redis in this process: one subscriber connection and greenlet, one :class:`_Publisher`.

    Every :class:`RedisGateway` of this process on the same Redis (URL or
    client object) shares it; it stops when the last one closes.
    """

    _instances: dict[tuple[int, object], _SharedSubscriber] = {}

    @classmethod
    def shared(cls, url_or_client: str | redis_py.Redis) -> _SharedSubscriber:
        # Keyed by pid too: a forked child must not use its parent's connections.
        key = (os.getpid(), url_or_client if isinstance(url_or_client, str) else id(url_or_client))
        instance = cls._instances.get(key)
        if instance is None:
            instance = cls._instances[key] = cls(key, url_or_client)
        return instance

    def __init__(self, key: tuple[int, object], url_or_client: str | redis_py.Redis) -> None:
        self._key = key
        self.client = _client(url_or_client)
        self.name = _describe(self.client)
        self.origin = os.urandom(8).hex()  # our messages carry it; the echo is recognized by it
        self.gateways: dict[str, list[RedisGateway]] = {}
        self.ready: dict[str, Event] = {}
        self.counters = {"published": 0, "dropped": 0, "received": 0, "ignored": 0, "reconnects": 0}
        self.connected = False
        self.last_error: BaseException | None = None
        self._lost_at = 0.0
        self._faults_logged: set[str] = set()
        self._collision_logged = False
        self._pubsub: Any = None
        self.publisher = _Publisher(self)
        self._subscriber = gevent.spawn(self._subscribe_loop)

    # -- gateways

    def add(self, gateway: RedisGateway) -> None:
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

    def remove(self, gateway: RedisGateway) -> None:
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
            self._release_node()
        except (redis_py.RedisError, OSError):
            pass

    # -- local delivery

    def deliver(self, channel: str, envelope: Envelope, origin: RedisGateway | None = None) -> SendResult | None:
        """Hand a message to every local gateway on ``channel``; the result of ``origin``'s own delivery."""
        result = None
        for gateway in tuple(self.gateways.get(channel, ())):
            local = gateway.local
            data = envelope.data
            if envelope.to is None:
                if isinstance(data, str):
                    sent = local.broadcast_text(data, envelope.exclude)
                else:
                    sent = local.broadcast_binary(data, envelope.exclude)
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
                self._claim_node()
                pubsub = self.client.pubsub()  # type: ignore[no-untyped-call]
                channels = list(self.gateways)
                if channels:
                    pubsub.subscribe(*channels)
                self._pubsub = pubsub  # from now on add() subscribes new channels itself
                missing = [channel for channel in self.gateways if channel not in channels]
                if missing:
                    pubsub.subscribe(*missing)
                self.recovered()
                delay = RECONNECT_BACKOFF
                self._listen(pubsub)
            except (redis_py.RedisError, OSError) as error:
                self.lost(error)
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
            if time.monotonic() >= next_claim:  # doubles as a health check of Redis
                self._claim_node()
                next_claim = time.monotonic() + NODE_REFRESH

    def _receive(self, channel: str, raw: bytes) -> None:
        self.counters["received"] += 1
        try:
            envelope = decode_envelope(raw)
        except EnvelopeError as error:
            self.counters["ignored"] += 1
            self.log_fault(error.kind, "Ignored a message on channel %r: %s (%r...)", channel, error, raw[:60])
            return
        if envelope.origin == self.origin:
            return  # ours: delivered to this process's clients when it was sent
        try:
            self.deliver(channel, envelope)
        except Exception:  # never let one delivery end the subscriber
            logger.exception("Delivering a message from channel %r failed", channel)

    def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        for event in self.ready.values():
            event.clear()
        if pubsub is not None:
            try:
                pubsub.close()
            except (redis_py.RedisError, OSError):
                pass

    # -- client id node numbers

    def _claim_node(self) -> None:
        """Claim this process's client id node number in Redis, drawing another while no id was handed out."""
        token = _process_token()  # not self.origin: gateways on several clients of one Redis share the claim
        for _ in range(8):
            node = client_ids.node
            key = f"geventws:node:{node}"
            try:
                if self.client.set(key, token, nx=True, ex=NODE_TTL):
                    return
                if self.client.get(key) == token.encode():
                    self.client.expire(key, NODE_TTL)
                    return
            except redis_py.ResponseError as error:  # e.g. an ACL user without keys: pub/sub still works
                self.log_fault(
                    "claim refused", "Cannot claim client id node numbers in Redis at %s: %s", self.name, error
                )
                return
            # client_ids.next() takes one id, harmlessly: counter 1 means none was handed out before.
            if client_ids.next() & 0xFFFFFFFF == 1:
                client_ids.reset()
                logger.info("Client id node %d is taken in Redis at %s: drew %d", node, self.name, client_ids.node)
                continue
            if not self._collision_logged:
                self._collision_logged = True
                logger.error(
                    "Client id node %d is also claimed by another process sharing Redis at %s, and this process"
                    " already has clients: ids may collide across processes until it restarts",
                    node,
                    self.name,
                )
            return

    def _release_node(self) -> None:
        key = f"geventws:node:{client_ids.node}"
        if self.client.get(key) == _process_token().encode():
            self.client.delete(key)

    # -- state and logging

    def lost(self, error: BaseException) -> None:
        """Either connection failed: log the loss once (until :meth:`recovered`)."""
        self.last_error = error
        if self.connected or not self._lost_at:
            logger.warning(
                "%s Redis at %s (%s): local delivery goes on, messages to other processes are dropped until it returns",
                "Lost" if self.connected else "Cannot reach",
                self.name,
                error,
            )
            self._lost_at = time.monotonic()
        self.connected = False

    def recovered(self) -> None:
        """Redis answers again: log it once, and let the publisher reconnect at once."""
        if self._lost_at and not self.connected:
            logger.warning(
                "Redis at %s is back after %.1f s (%d publishes dropped so far)",
                self.name,
                time.monotonic() - self._lost_at,
                self.counters["dropped"],
            )
            self.counters["reconnects"] += 1
        self.connected = True
        self.publisher.reconnect_now()

    def log_fault(self, kind: str, message: str, *args: object) -> None:
        if kind not in self._faults_logged:
            self._faults_logged.add(kind)
            logger.warning(message + " (logged once)", *args)


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
    ) -> None:
        if not monkey.is_module_patched("socket"):
            raise RuntimeError("RedisGateway needs gevent.monkey.patch_all() before redis-py is used")
        self.channel = channel
        self.local = local if local is not None else WebsocketClientGateway()
        self._client_ids: set[int] = set()  # this process's clients: a send to one of them is not published
        self._shared = _SharedSubscriber.shared(redis)
        self._shared.add(self)
        self._closed = False
        if not start_degraded and not self.wait_connected(connect_timeout):
            error = self._shared.last_error
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
        return dict(self._shared.counters)

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

    def add_client(self, client: WebsocketClient) -> None:
        """Add one of this process's clients; it leaves when it closes."""
        self.local.add_client(client)
        if client.id not in self._client_ids:
            self._client_ids.add(client.id)
            client.on_close(lambda closed, info: self._client_ids.discard(closed.id))

    def get_clients(self) -> dict[int, WebsocketClient]:
        """This process's clients in the gateway."""
        return self.local.get_clients()

    def broadcast_text(self, data: str, exclude: Iterable[int] = ()) -> SendResult:
        """Send to every client on the channel, in every process, but ``exclude``; the result is this process's."""
        return self._send(Envelope("", data, tuple(exclude)))

    def broadcast_binary(self, data: bytes, exclude: Iterable[int] = ()) -> SendResult:
        """Send to every client on the channel, in every process, but ``exclude``; the result is this process's."""
        return self._send(Envelope("", bytes(data), tuple(exclude)))

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


class RedisEmitter:
    """Publishes to :class:`RedisGateway` channels from a process without WebSocket clients.

    Plain redis-py, synchronous: works in an unpatched process (a Flask view
    under a sync worker, a job queue worker, a cron script).  Each method
    returns how many subscribed processes Redis handed the message to.
    """

    def __init__(self, redis: str | redis_py.Redis) -> None:
        self._client = redis_py.Redis.from_url(redis) if isinstance(redis, str) else redis
        self._origin = "emitter-" + os.urandom(8).hex()
        self._owned = isinstance(redis, str)

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
        if self._owned:
            self._client.close()

    def _publish(self, channel: str, message: bytes) -> int:
        return int(self._client.publish(channel, message))
