"""Handing a WSGI request's raw connection over to the WebSocket endpoint.

WSGI has no standard way to take over the socket after a 101, so the server's
request handler puts a :class:`Transport` into the environ under
:data:`TRANSPORT_KEY`.  Through it the endpoint writes the 101 (or has pywsgi
write it through ``start_response``) and claims the socket: from then on the
HTTP server writes nothing more on that connection, ends keep-alive, logs the
101 and closes the connection when the endpoint is done with it.

The app the server calls directly (a :class:`~.endpoint.Websocket`, or one a
:class:`~.router.Router` dispatches to) may also leave its client handler to
run after it has returned (:meth:`Transport.serve_after_response`), from the
connection's own frame: what an idle connection's greenlet keeps is then its
handler's frames and little of the HTTP request's (measured per connection
with tracemalloc and RSS, ``idle`` cell of ``bench/run.py``).
"""

from __future__ import annotations

import io
import socket
import ssl
from collections.abc import Callable
from typing import Any, Protocol

TRANSPORT_KEY = "geventws.transport"


class RequestHandler(Protocol):
    """What a :class:`Transport` needs of the server's request handler (ours: ``WebsocketWSGIHandler``)."""

    socket: socket.socket
    _serve_after: Callable[[], None] | None

    def _write_101(self, headers: list[tuple[str, str]]) -> None: ...

    def _hand_over(self) -> bytes: ...


class Transport:
    """The connection behind one HTTP request, as the endpoint that upgrades it sees it.

    ``direct_app`` is the WSGI app the server calls with nothing of its own
    around the call; an app that passes the request on unwrapped hands it on
    (``handover.hand_on``).  Only that app writes the 101 itself
    (:meth:`switch_protocols`, its ``start_response`` is the server's own) and
    may leave its client handler for after the response
    (:meth:`serve_after_response`).
    """

    def __init__(self, handler: RequestHandler, app: Any) -> None:
        self.socket: socket.socket = handler.socket
        self.direct_app = app
        self.taken = False
        self._handler: RequestHandler | None = handler

    def switch_protocols(self, headers: list[tuple[str, str]]) -> tuple[socket.socket, bytes]:
        """Write the 101 with ``headers`` and claim the connection (see :meth:`take_over`)."""
        self._live_handler()._write_101(headers)
        return self.take_over()

    def take_over(self) -> tuple[socket.socket, bytes]:
        """Claim the connection once the 101 is out: the socket, and what the client sent after the handshake.

        The HTTP server's buffered reader is emptied and let go: held by an idle
        WebSocket connection it would cost its buffer for nothing.
        """
        self.taken = True
        return self.socket, self._live_handler()._hand_over()

    def serve_after_response(self, serve: Callable[[], None]) -> None:
        """Have the server call ``serve()`` once the application has returned, before it closes the connection."""
        self._live_handler()._serve_after = serve

    def release(self) -> None:
        """Forget the request handler (which holds the environ that holds this transport)."""
        self._handler = None

    def _live_handler(self) -> RequestHandler:
        if self._handler is None:
            raise RuntimeError("The request this transport belonged to is over")
        return self._handler


def drain_reader(reader: Any, sock: socket.socket) -> bytes:
    """What the buffered ``reader`` over ``sock`` holds already, without blocking if it holds nothing."""
    if reader is None or not hasattr(reader, "read1"):
        return b""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        return reader.read1(65536) or b""
    except (BlockingIOError, ssl.SSLWantReadError):  # nothing buffered (TLS says it its own way)
        return b""
    finally:
        sock.settimeout(timeout)


class _SocketInput(socket.SocketIO):
    """The raw stream under the request handler's buffered reader.

    Once ``held`` it reads nothing more from the socket: emptying the buffer
    at take-over then costs no read that can only fail with ``EAGAIN``.
    """

    held = False

    def readinto(self, b: Any) -> int | None:
        """Read from the socket into ``b``, unless held (``None``: nothing to read now)."""
        if self.held:
            return None
        count: int | None = super().readinto(b)
        return count


def buffered_reader(sock: socket.socket) -> io.BufferedReader:
    """A buffered reader over ``sock``, as ``sock.makefile("rb")`` builds it, on a :class:`_SocketInput`."""
    raw = _SocketInput(sock, "rb")
    sock._io_refs += 1  # type: ignore[attr-defined]  # as makefile: closing the reader releases it
    return io.BufferedReader(raw, io.DEFAULT_BUFFER_SIZE)


def take_buffered(reader: Any, sock: socket.socket) -> bytes:
    """What the buffered ``reader`` holds already (the first bytes after the head), reading no more from ``sock``."""
    raw = getattr(reader, "raw", None)
    if not isinstance(raw, _SocketInput):
        return drain_reader(reader, sock)
    raw.held = True
    return reader.read1(65536) or b""  # the buffer, without touching the socket (TLS: the SSL object keeps its own)
