"""Publishing to one Redis: one connection, written by the senders, its replies read by a greenlet.

Publishes go out in the order they were sent and never wait for Redis: while
it is away or slow they are dropped and counted (see :class:`Publisher`).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
import redis as redis_py
from gevent.event import Event
from gevent.lock import Semaphore
from redis.exceptions import MovedError

from .connection import RECONNECT_BACKOFF, RECONNECT_BACKOFF_CAP
from .health import Health

#: Bytes published but not yet answered by Redis (per Redis, all channels);
#: past it new publishes are dropped, so a Redis that stops answering cannot
#: make memory grow.  Normally only a few messages are in flight.
MAX_IN_FLIGHT_BYTES = 4 * 1024 * 1024
#: Seconds between checks that an idle publishing connection is still open.
IDLE_CHECK_INTERVAL = 1.0


class Publisher:
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
    message or :data:`~.connection.SOCKET_TIMEOUT` passes.
    """

    def __init__(
        self,
        client: redis_py.Redis,
        health: Health,
        command: str = "PUBLISH",
        connected: Callable[[], None] | None = None,
        moved: Callable[[], None] | None = None,
    ) -> None:
        self._client = client
        self._connected = connected  # called on each (re)connect
        self._moved = moved  # called when a cluster answers MOVED: the slot lives elsewhere now
        self._command = command  # SPUBLISH on a cluster
        self._health = health
        self._connection: Any = None
        self.ready = Event()  # set while the connection is up
        self._lock = Semaphore()
        self._in_flight: deque[int] = deque()  # sizes of the publishes awaiting their reply
        self._in_flight_bytes = 0
        self._wake = Event()
        self.greenlet = gevent.spawn(self._run)

    def publish(self, channel: str, message: bytes) -> None:
        self.send(len(message), self._command, channel, message)

    def send(self, size: int, *command: object) -> bool:
        """Send a command that publishes (of about ``size`` bytes) in its turn; False if it was dropped."""
        health = self._health
        if not self.ready.is_set():
            health.counters["dropped"] += 1  # Redis is away: lost, not queued
            return False
        if self._in_flight and self._in_flight_bytes + size > MAX_IN_FLIGHT_BYTES:
            health.counters["dropped"] += 1
            health.log_fault("too slow", "Redis at %s does not keep up: dropping publishes", health.name)
            return False
        with self._lock:
            if not self.ready.is_set():  # lost while this sender waited for the lock
                health.counters["dropped"] += 1
                return False
            try:
                self._connection.send_command(*command)
            except (redis_py.RedisError, OSError) as error:
                self._fail(error, 1)
                return False
        self._in_flight.append(size)
        self._in_flight_bytes += size
        self._wake.set()
        return True

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
                        self._connection = self._client.connection_pool.get_connection()
                    self._connection.connect()
                except (redis_py.RedisError, OSError) as error:
                    self._health.lost(error)
                    self._wake.clear()
                    self._wake.wait(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, RECONNECT_BACKOFF_CAP)
                    continue
                delay = RECONNECT_BACKOFF
                self.ready.set()
                self._health.recovered()
                if self._connected is not None:
                    self._connected()
            if not self._wake.wait(IDLE_CHECK_INTERVAL) and not self._in_flight:
                self._check_idle()
                continue
            self._wake.clear()
            self._read_replies()

    def _check_idle(self) -> None:
        """Notice a Redis that went away while nothing was published (its socket reads the end)."""
        try:
            if self._connection.can_read(timeout=0):
                self._connection.read_response()  # nothing is expected: an end of file or an error
        except (redis_py.RedisError, OSError) as error:
            self._fail(error, 0)

    def _read_replies(self) -> None:
        health = self._health
        while self._in_flight:
            try:
                self._connection.read_response()
            except redis_py.ResponseError as error:  # refused (e.g. ACL, MOVED): the connection is fine
                health.counters["dropped"] += 1
                health.log_fault("publish refused", "Redis at %s refused a publish: %s", health.name, error)
                if isinstance(error, MovedError) and self._moved is not None:
                    self._moved()
            except (redis_py.RedisError, OSError) as error:
                self._fail(error, 0)
                return
            else:
                health.counters["published"] += 1
                if not health.connected:
                    health.recovered()
            self._in_flight_bytes -= self._in_flight.popleft()

    def _fail(self, error: BaseException, unsent: int) -> None:
        """Drop what awaits a reply and close the connection; the greenlet reconnects."""
        self.ready.clear()
        self._health.counters["dropped"] += unsent + len(self._in_flight)
        self._in_flight.clear()
        self._in_flight_bytes = 0
        if self._connection is not None:
            self._connection.disconnect()
        self._health.lost(error)
        self._wake.set()

    def stop(self) -> None:
        self.greenlet.kill()
        self.ready.clear()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.disconnect()
            self._client.connection_pool.release(connection)
