"""Connections served by a thread of their own (werkzeug's development server, gunicorn's ``gthread`` worker).

Such a server runs each request in an OS thread of an unpatched process.
The connection then lives on that thread's own gevent hub (gevent makes one
per thread): its reader is a callback of that hub's loop, its timers and
close handshake run there, and its handler runs in the thread's greenlet.

Guarantees:

- A send, close or receive from another thread is handed to the owning hub
  (:meth:`OwnerHub.call`) and runs there, in a greenlet of its own, while the
  caller waits: the connection's writer, engine and reader are only ever
  touched from the thread that owns them.  A caller on a hub of its own
  (another connection's thread) keeps its hub running while it waits; a
  plain thread just blocks.
- When the connection is over, the owning thread stops taking calls and
  finishes the ones it took before it returns to the server
  (:meth:`OwnerHub.close`); later calls fail with
  :class:`~geventws.WebsocketClosedException`.
- Connections of gevent servers are untouched: only a client adopted by
  :func:`serve_on_this_thread` has the class whose methods look at the
  calling thread, so the greenlet path pays nothing.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import gevent.monkey
from gevent._hub_local import get_hub_if_exists
from gevent.event import Event
from gevent.hub import Waiter

from ..protocol.close import CloseCode, WebsocketClosedException
from ..protocol.frames import EncodedMessage
from .client import WebsocketClient
from .message import WebsocketMessage
from .reader import READ_SIZE
from .writer import Writer

__all__ = ["OwnerHub", "serve_on_this_thread"]

_allocate_lock = gevent.monkey.get_original("_thread", "allocate_lock")
_owners: weakref.WeakKeyDictionary[object, OwnerHub] = weakref.WeakKeyDictionary()


class OwnerHub:
    """The hub of the thread that owns a connection, and the calls other threads handed it."""

    def __init__(self) -> None:
        self.hub = gevent.get_hub()
        self._lock = _allocate_lock()
        self._open = True
        self._pending = 0
        self._idle: Event | None = None

    def is_current(self) -> bool:
        """Whether the calling thread is the owner (the one cheap check of every thread-served call)."""
        return get_hub_if_exists() is self.hub

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function(*args)`` on the owning hub and return (or raise) what it does."""
        waiting_hub = get_hub_if_exists()
        result: Any = _HubResult(waiting_hub) if waiting_hub is not None else _ThreadResult()
        with self._lock:
            if not self._open:
                raise WebsocketClosedException(CloseCode.ABNORMAL_CLOSE, "The connection's thread has ended")
            self._pending += 1
            self.hub.loop.run_callback_threadsafe(self._start, function, args, result)
        return result.get()

    def close(self) -> None:
        """From the owning thread, at the end: take no more calls, and finish those taken."""
        with self._lock:
            self._open = False
            if not self._pending:
                return
            self._idle = Event()
        self._idle.wait()

    def _start(self, function: Callable[..., Any], args: tuple[Any, ...], result: Any) -> None:
        gevent.spawn(self._run, function, args, result)  # in the owning hub's loop, which may not block

    def _run(self, function: Callable[..., Any], args: tuple[Any, ...], result: Any) -> None:
        try:
            value = function(*args)
        except BaseException as error:  # handed to the caller, whatever it is
            result.set_exception(error)
        else:
            result.set(value)
        finally:
            with self._lock:
                self._pending -= 1
                done = not self._pending and self._idle is not None
            if done:
                assert self._idle is not None
                self._idle.set()


class _HubResult:
    """A result a greenlet waits for on its own hub, woken from the owning thread by an async watcher.

    The watcher also keeps the waiting hub's loop alive: with nothing else to
    watch, it would otherwise think the wait can never end.
    """

    def __init__(self, hub: Any) -> None:
        self._waiter: Waiter[Any] = Waiter(hub)
        self._async = hub.loop.async_()
        self._async.start(self._waiter.switch, None)
        self._value: Any = None
        self._error: BaseException | None = None

    def set(self, value: Any) -> None:
        self._value = value
        self._async.send()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._async.send()

    def get(self) -> Any:
        try:
            self._waiter.get()
        finally:
            self._async.stop()
            self._async.close()
        if self._error is not None:
            raise self._error
        return self._value


class _ThreadResult:
    """A result a plain thread (one without a hub) waits for by blocking."""

    def __init__(self) -> None:
        self._done = _allocate_lock()
        self._done.acquire()
        self._value: Any = None
        self._error: BaseException | None = None

    def set(self, value: Any) -> None:
        self._value = value
        self._done.release()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._done.release()

    def get(self) -> Any:
        self._done.acquire()
        if self._error is not None:
            raise self._error
        return self._value


def serve_on_this_thread(client: WebsocketClient) -> OwnerHub:
    """Make ``client`` (just created on this thread's hub) safe to use from other threads; returns its owner.

    Its reader gets a read buffer of this thread's own: the one the loop
    readers of a process share is safe only among greenlets of one thread.
    """
    owner = OwnerHub()
    _owners[client] = owner
    client.__class__ = ThreadServedClient
    client.writer = _ThreadServedWriter(client.writer, owner)  # type: ignore[assignment]
    client._reader._buffer = _thread_buffer()
    return owner


_buffers: weakref.WeakKeyDictionary[object, memoryview] = weakref.WeakKeyDictionary()


def _thread_buffer() -> memoryview:
    hub = gevent.get_hub()
    buffer = _buffers.get(hub)
    if buffer is None:
        buffer = _buffers[hub] = memoryview(bytearray(READ_SIZE))
    return buffer


class ThreadServedClient(WebsocketClient):
    """A :class:`~.client.WebsocketClient` whose calls from other threads run on its own thread's hub."""

    __slots__ = ()

    def receive(self, timeout: float | None = None) -> WebsocketMessage | None:
        owner = _owners[self]
        if owner.is_current():
            return super().receive(timeout)
        message: WebsocketMessage | None = owner.call(super().receive, timeout)
        return message

    def send_text(self, text: str) -> None:
        owner = _owners[self]
        if owner.is_current():
            super().send_text(text)
        else:
            owner.call(super().send_text, text)

    def send_binary(self, data: bytes | bytearray | memoryview) -> None:
        owner = _owners[self]
        if owner.is_current():
            super().send_binary(data)
        else:
            owner.call(super().send_binary, bytes(data))

    def stream_text(self, chunks: Iterable[str]) -> None:
        owner = _owners[self]
        if owner.is_current():
            super().stream_text(chunks)
        else:
            owner.call(super().stream_text, list(chunks))

    def stream_binary(self, chunks: Iterable[bytes]) -> None:
        owner = _owners[self]
        if owner.is_current():
            super().stream_binary(chunks)
        else:
            owner.call(super().stream_binary, list(chunks))

    def send_encoded(self, message: EncodedMessage) -> None:
        owner = _owners[self]
        if owner.is_current():
            super().send_encoded(message)
        else:
            owner.call(super().send_encoded, message)

    def ping(self) -> None:
        owner = _owners[self]
        if owner.is_current():
            super().ping()
        else:
            owner.call(super().ping)

    def close(self, code: int = CloseCode.NORMAL_CLOSE, reason: str = "") -> None:
        owner = _owners[self]
        if owner.is_current():
            super().close(code, reason)
            return
        try:
            owner.call(super().close, code, reason)
        except WebsocketClosedException:
            pass  # its thread ended it already

    def abort(self) -> None:
        owner = _owners[self]
        if owner.is_current():
            super().abort()
            return
        try:
            owner.call(super().abort)
        except WebsocketClosedException:
            pass


class _ThreadServedWriter:
    """The writer of a thread-served client: another thread's broadcast leaves the write to the client's own send.

    The rest of the writer is used by the client itself, on its own thread, through this wrapper.
    """

    __slots__ = ("_writer", "_owner")

    def __init__(self, writer: Writer, owner: OwnerHub) -> None:
        self._writer = writer
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)

    def write_nowait(self, message: EncodedMessage) -> int:
        if not self._owner.is_current():
            return -1  # the gateway then sends it through the client, which hands it to the owning hub
        written: int = self._writer.write_nowait(message)
        return written

    def flush(self) -> None:
        if self._owner.is_current():
            self._writer.flush()
        else:
            self._owner.call(self._writer.flush)
