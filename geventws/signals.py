"""Waiting for a termination signal without blocking the event loop."""

from __future__ import annotations

import signal
from collections.abc import Iterable

import gevent
from gevent.event import AsyncResult


def trap_signal(signals: Iterable[int] = (signal.SIGINT, signal.SIGTERM), timeout: float | None = None) -> int:
    """Block the calling greenlet until one of ``signals`` arrives and return its number.

    Other greenlets keep running; the handlers are removed again on return.
    Raises :class:`TimeoutError` when ``timeout`` passes first.
    """
    received: AsyncResult = AsyncResult()
    handlers = [gevent.signal_handler(signum, received.set, signum) for signum in signals]
    try:
        return int(received.get(timeout=timeout))
    except gevent.Timeout as error:
        raise TimeoutError("No signal within the timeout") from error
    finally:
        for handler in handlers:
            handler.cancel()
