"""Handing a WSGI request's raw connection over to the WebSocket endpoint.

WSGI has no standard way to take over the socket after a 101, so the server's
request handler puts a :class:`Transport` into the environ under
:data:`TRANSPORT_KEY`.  The endpoint has pywsgi write the 101 (through
``start_response``, so the access log records it) and then calls
:meth:`Transport.take_over`: from then on the HTTP server writes nothing more
on that connection, ends keep-alive and closes it when the endpoint returns.
"""

from __future__ import annotations

import io
import socket
import ssl
import time
from typing import Any, BinaryIO

import gevent
from gevent.pywsgi import WSGIHandler

TRANSPORT_KEY = "geventws.transport"


class Transport:
    """The socket and buffered reader behind one HTTP request."""

    def __init__(self, sock: socket.socket, reader: BinaryIO, on_take_over: Any = None) -> None:
        self.socket = sock
        self.reader = reader
        self.taken = False
        self._on_take_over = on_take_over

    def take_over(self) -> tuple[socket.socket, bytes]:
        """Claim the connection: the socket, and what the client sent after the handshake that was read already.

        The HTTP server's buffered reader is emptied and let go: held by an idle
        WebSocket connection it would cost its buffer for nothing.
        """
        self.taken = True
        leftover = drain_reader(self.reader, self.socket)
        self.reader = _CLOSED_READER
        if self._on_take_over is not None:
            self._on_take_over()
        return self.socket, leftover


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


_CLOSED_READER: BinaryIO = io.BytesIO()
_CLOSED_READER.close()


class HeaderTooLargeError(ValueError):
    """The request head is larger than the server accepts."""


class _HeadReader:
    """Counts what the header parser reads, refusing past ``limit`` bytes."""

    def __init__(self, reader: BinaryIO, limit: int) -> None:
        self._reader = reader
        self._left = limit

    def readline(self, size: int = -1) -> bytes:
        line = self._reader.readline(min(size, self._left + 1) if size >= 0 else self._left + 1)
        self._left -= len(line)
        if self._left < 0:
            raise HeaderTooLargeError("Request header fields too large")
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)


_HEADER_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class WebsocketWSGIHandler(WSGIHandler):  # type: ignore[misc]
    """gevent's pywsgi request handler with a :class:`Transport` in every environ, and HTTP-side limits.

    pywsgi waits for a request head as long as the peer likes; here the whole
    head must arrive within ``server.request_timeout`` seconds (so a client
    trickling one byte a second cannot hold a greenlet), an idle keep-alive
    connection is dropped after ``server.keepalive_timeout`` seconds, and the
    head may not exceed ``server.max_header_size`` bytes (431).
    """

    _head_deadline: gevent.Timeout | None = None
    _upgrade_logged = False

    def read_requestline(self) -> str:
        """Read the request line: idle keep-alive time first, then the head's deadline."""
        idle = getattr(self.server, "keepalive_timeout", None)
        self._arm(idle, "Idle connection")
        line: str = super().read_requestline()
        self._arm(getattr(self.server, "request_timeout", None), "Request head took too long")
        return line

    def read_request(self, raw_requestline: str) -> Any:
        """Parse the head, refusing one over the server's ``max_header_size`` with 431."""
        limit = getattr(self.server, "max_header_size", None)
        if limit is None:
            return super().read_request(raw_requestline)
        rfile: Any = self.rfile
        self.rfile = _HeadReader(rfile, limit)
        try:
            return super().read_request(raw_requestline)
        finally:
            self.rfile = rfile

    def _handle_client_error(self, ex: BaseException) -> Any:
        if isinstance(ex, HeaderTooLargeError):
            return ("431", _HEADER_TOO_LARGE)
        return super()._handle_client_error(ex)

    rfile: Any
    client_address: Any

    def get_environ(self) -> dict[str, Any]:
        """The environ, with the :class:`Transport` that lets the endpoint take the socket over."""
        self._arm(None, "")  # the head is complete: the application has all the time it needs
        environ: dict[str, Any] = super().get_environ()
        environ[TRANSPORT_KEY] = Transport(self.socket, self.rfile, self._taken_over)
        return environ

    def _arm(self, seconds: float | None, reason: str) -> None:
        if self._head_deadline is not None:
            self._head_deadline.close()
            self._head_deadline = None
        if seconds is not None:
            # A TimeoutError is an OSError: pywsgi drops the connection quietly.
            self._head_deadline = gevent.Timeout.start_new(seconds, TimeoutError(reason))

    def handle(self) -> None:
        """Serve the connection's requests; the head deadline never outlives it."""
        try:
            super().handle()
        finally:
            self._arm(None, "")

    def _taken_over(self) -> None:
        # Keep-alive ends here: the bytes that follow are WebSocket frames.
        self.close_connection = True
        # Let the buffered reader go (see Transport.take_over); a closed one ends pywsgi's request loop.
        self.rfile = _CLOSED_READER
        self.wsgi_input.rfile = _CLOSED_READER
        self.environ["wsgi.input"] = io.BytesIO()
        # The access line is written now, when the upgrade happens: pywsgi would
        # write it when the request returns, that is when the connection ends.
        self._orig_status = "101 Switching Protocols"
        self.time_finish = time.time()
        self.log_request()
        self._upgrade_logged = True

    def log_request(self) -> None:
        """Write the access line, once: an upgraded request was logged at take-over."""
        if not self._upgrade_logged:  # an upgraded request was logged at take-over
            super().log_request()

    def format_request(self) -> str:
        """The access line, naming the client address the application saw."""
        # The access line names the client the application saw: behind a proxy
        # and werkzeug's ProxyFix, the forwarded address rather than the proxy's.
        environ = getattr(self, "environ", None) or {}
        remote = environ.get("REMOTE_ADDR")
        if not remote:
            return str(super().format_request())
        address = self.client_address
        self.client_address = (remote, environ.get("REMOTE_PORT"))
        try:
            return str(super().format_request())
        finally:
            self.client_address = address
