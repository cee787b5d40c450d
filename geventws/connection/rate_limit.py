"""Throttling how fast a client's data is read.

The reader greenlet asks the rate limit after every read; when a client sends
faster than allowed, the reader pauses before reading again, so the kernel's
buffers fill and TCP slows the peer down.  Nothing is disconnected, and a
pause never costs a well-behaved client its connection: the heartbeat does not
judge a paused client, a close wakes the reader at once (the close period
holds), and a peer that hangs up during a pause is noticed within a second.

The start of each throttling episode is logged at DEBUG on
``geventws.rate_limit`` (once, not per read), so a client held back by the
limit can be told from a slow handler.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING
from typing import Protocol as TypingProtocol

if TYPE_CHECKING:
    from .client import WebsocketClient

logger = logging.getLogger("geventws.rate_limit")


class RateLimit(TypingProtocol):
    """Slows down how fast a client's data is read (:class:`ConstantRateLimit`)."""

    def throttle(self, client: WebsocketClient, nbytes: int, nframes: int) -> float:
        """Account for a read of ``nbytes`` holding ``nframes`` frames; return how long to pause reading."""
        ...


class ConstantRateLimit:
    """At most ``bytes_per_second`` and ``frames_per_second`` per client, after a one-second burst.

    A leaky bucket per client: each read adds its cost in seconds
    (``bytes / bytes_per_second``, ``frames / frames_per_second``); once a
    client is more than ``burst`` seconds ahead, its reader pauses for the excess.
    """

    def __init__(self, bytes_per_second: int = 1024 * 1024, frames_per_second: int = 100, burst: float = 1.0) -> None:
        if bytes_per_second <= 0 or frames_per_second <= 0:
            raise ValueError("Rates must be positive; pass rate_limit=None to turn the limit off")
        self.bytes_per_second = bytes_per_second
        self.frames_per_second = frames_per_second
        self.burst = burst
        self._ready_at: dict[int, float] = {}
        self._throttled: set[int] = set()  # clients in a throttling episode

    def throttle(self, client: WebsocketClient, nbytes: int, nframes: int) -> float:
        """Account for one read; return the seconds the reader should pause (0.0: none)."""
        now = time.monotonic()
        ready_at = self._ready_at.get(client.id)
        if ready_at is None:
            client.on_close(self._forget)
            ready_at = now
        ready_at = max(ready_at, now - self.burst)
        ready_at += max(nbytes / self.bytes_per_second, nframes / self.frames_per_second)
        self._ready_at[client.id] = ready_at
        if ready_at <= now:
            self._throttled.discard(client.id)
            return 0.0
        if client.id not in self._throttled:
            self._throttled.add(client.id)
            logger.debug(
                "%r: rate limit reached (%d bytes/s, %d frames/s), reading slowed down",
                client,
                self.bytes_per_second,
                self.frames_per_second,
            )
        return ready_at - now

    def _forget(self, client: WebsocketClient, info: object) -> None:
        self._ready_at.pop(client.id, None)
        self._throttled.discard(client.id)
