"""The state of one Redis as this process sees it, shared by its publisher and its subscriber.

Either connection may notice that Redis is gone or back; the loss and the
return are logged once each (a return counts once it has held for
:data:`SETTLE` seconds: a Sentinel failover, which drops the clients of the
promoted replica once more, is one outage), and faults of one kind (a garbled message, a
refused command) once per process, so an outage or a noisy publisher cannot
flood the log.
"""

from __future__ import annotations

import logging
import time

import gevent

logger = logging.getLogger("geventws.redis")

#: Seconds a return must hold before it is logged and counted; a loss within them continues the outage.
SETTLE = 3.0


class Health:
    """Counters, whether Redis answers, and the faults already logged, for one Redis."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.counters = {"published": 0, "dropped": 0, "received": 0, "ignored": 0, "reconnects": 0}
        self.connected = False
        self.last_error: BaseException | None = None
        self._lost_at = 0.0
        self._back_at = 0.0
        self._settling: gevent.Greenlet[[], None] | None = None
        self._faults_logged: set[str] = set()

    def lost(self, error: BaseException) -> None:
        """Either connection failed: log the loss once (until :meth:`recovered`)."""
        self.last_error = error
        if self._settling is not None:  # lost again before the return held: the same outage
            self._settling.kill(block=False)
            self._settling = None
            self.connected = False
            return
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
        """Redis answers again: log it once, when it has held for :data:`SETTLE` seconds."""
        if self._lost_at and not self.connected and self._settling is None:
            self._back_at = time.monotonic()
            self._settling = gevent.spawn_later(SETTLE, self._settled)
        self.connected = True

    def _settled(self) -> None:
        self._settling = None
        logger.warning(
            "Redis at %s is back after %.1f s (%d publishes dropped so far)",
            self.name,
            self._back_at - self._lost_at,
            self.counters["dropped"],
        )
        self.counters["reconnects"] += 1

    def log_fault(self, kind: str, message: str, *args: object) -> None:
        """Log a fault the first time one of its ``kind`` happens."""
        if kind not in self._faults_logged:
            self._faults_logged.add(kind)
            logger.warning(message + " (logged once)", *args)
