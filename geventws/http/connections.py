"""The greenlets of a server's open connections: bare greenlets, counted, joined and killed together.

gevent's :class:`~gevent.pool.Pool` runs each connection in a
:class:`gevent.Greenlet`: links, a result, an exception record, a list of
callbacks and the pool's own bound methods, for every connection, however
long it lasts.  A connection's greenlet needs none of them: the server only
counts them (``max_connections``), waits for them when it stops and kills
what is left.  A bare greenlet with the hub as parent does that for about
900 bytes less per idle connection (``bench/quiet.py idle``: RSS 14.4 KiB
per connection with the pool, measured with this class in docs/performance.rst).

It is given to gevent's servers as their ``spawn``, in the place of a pool:
they call :meth:`spawn`, :meth:`full`, :meth:`join` and :meth:`kill`, and link
to ``_semaphore`` to resume accepting when a connection ends while full.

An exception that escapes a connection's function is logged, never printed;
:class:`~greenlet.GreenletExit` (what :meth:`kill` throws) ends it quietly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from greenlet import GreenletExit, greenlet


class ConnectionGreenlets:
    """At most ``max_connections`` greenlets (``None``: no limit) running connection functions."""

    def __init__(self, max_connections: int | None, logger: logging.Logger) -> None:
        self.size = max_connections
        self._logger = logger
        self._running: set[greenlet] = set()
        self._on_free: list[Callable[[Any], Any]] = []
        self._empty = Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._running)

    def full(self) -> bool:
        return self.size is not None and len(self._running) >= self.size

    @property
    def _semaphore(self) -> ConnectionGreenlets:
        """What gevent's server links to (a pool's semaphore there): :meth:`rawlink` and :meth:`unlink`."""
        return self

    def rawlink(self, callback: Callable[[Any], Any]) -> None:
        """Call ``callback(self)`` whenever a connection ends while full (gevent's server resumes accepting)."""
        if callback not in self._on_free:
            self._on_free.append(callback)

    def unlink(self, callback: Callable[[Any], Any]) -> None:
        if callback in self._on_free:
            self._on_free.remove(callback)

    def spawn(self, function: Callable[..., Any], *args: Any) -> greenlet:
        """Run ``function(*args)`` in a new greenlet, started by the hub's next callback round."""
        hub = gevent.get_hub()
        runner = greenlet(self._run, hub)
        self._running.add(runner)
        self._empty.clear()
        hub.loop.run_callback(runner.switch, function, args)
        return runner

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every connection ended, at most ``timeout`` seconds; whether they all did."""
        return bool(self._empty.wait(timeout))

    def kill(self, block: bool = True, timeout: float | None = None) -> bool:
        """Throw :class:`~greenlet.GreenletExit` into every running connection, then :meth:`join` them."""
        loop = gevent.get_hub().loop
        for runner in list(self._running):
            loop.run_callback(_kill, runner)  # after the callbacks that start them: each has started
        return self.join(timeout) if block else not self._running

    def _run(self, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            if len(args) == 2:  # what gevent's servers pass: a plain call keeps no C frame under the handler
                function(args[0], args[1])
            else:
                function(*args)
        except GreenletExit:
            pass
        except Exception:
            self._logger.exception("Unexpected error serving a connection")
        finally:
            self._finished(gevent.getcurrent())

    def _finished(self, runner: greenlet) -> None:
        was_full = self.full()
        self._running.discard(runner)
        if not self._running:
            self._empty.set()
        if was_full and not self.full():
            for callback in list(self._on_free):
                callback(self)


def _kill(runner: greenlet) -> None:
    if runner:  # still running: started and not dead
        runner.throw(GreenletExit)
