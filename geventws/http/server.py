"""The HTTP server: one gevent WSGIServer per exposed address, one greenlet per connection."""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

import gevent
import gevent.socket
from gevent.pywsgi import LoggingLogAdapter, WSGIServer

from .connections import ConnectionGreenlets
from .patching import warn_if_unpatched
from .pywsgi_handler import ACCESS_LOG_LEVEL, WebsocketWSGIHandler, serve_upgraded
from .pywsgi_handler import DEFAULT_MAX_HEADER_SIZE as DEFAULT_MAX_HEADER_SIZE
from .request_body import DEFAULT_BODY_TIMEOUT as DEFAULT_BODY_TIMEOUT

#: A ``(host, port)`` tuple, or a filesystem path (optionally prefixed ``unix:``) for a unix socket.
Address = Union[tuple[str, int], str]
WSGIApp = Callable[..., Any]

DEFAULT_STOP_TIMEOUT = 3.0
#: 10 s for a whole request head: generous for real clients, short enough that
#: slow-header attacks cannot pile up greenlets.
DEFAULT_REQUEST_TIMEOUT = 10.0
#: An idle keep-alive HTTP connection is dropped after a minute.
DEFAULT_KEEPALIVE_TIMEOUT = 60.0
#: 10 s for a TLS handshake, as websockets: a peer that connects and never
#: says hello is dropped.
DEFAULT_TLS_HANDSHAKE_TIMEOUT = 10.0


@dataclass
class _Exposure:
    address: Address
    ssl_context: ssl.SSLContext | None
    backlog: int


class Server:
    """Serves one WSGI app on every exposed address.

    ``stop()`` stops accepting, runs the ``on_stop`` callbacks (the WebSocket
    endpoints close their clients with 1001 there), then waits for the
    remaining requests and kills what is still running after the timeout.

    No connection is held without a deadline: ``tls_handshake_timeout`` for
    the TLS handshake, ``request_timeout`` for each request head (from the
    connection, then from the first byte of each later request),
    ``keepalive_timeout`` between requests, ``body_timeout`` for each 64 KiB
    of a request body; ``None`` turns one off.  Request heads are parsed
    strictly (see :mod:`.request_head`) and limited to ``max_header_size``
    bytes of header fields.
    """

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        max_connections: int | None = None,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        keepalive_timeout: float | None = DEFAULT_KEEPALIVE_TIMEOUT,
        max_header_size: int = DEFAULT_MAX_HEADER_SIZE,
        body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
        tls_handshake_timeout: float | None = DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    ) -> None:
        self.request_timeout = request_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_header_size = max_header_size
        self.body_timeout = body_timeout
        self.tls_handshake_timeout = tls_handshake_timeout
        self.logger = logger or logging.getLogger("geventws.server")
        self._access_logger = self.logger.getChild("access")
        self._access_log = LoggingLogAdapter(self._access_logger, ACCESS_LOG_LEVEL)
        self._error_log = LoggingLogAdapter(self.logger, logging.ERROR)
        self._exposures: list[_Exposure] = []
        self._servers: list[WSGIServer] = []
        self._connections = ConnectionGreenlets(max_connections, self.logger)
        self._stop_callbacks: list[Callable[[], Any]] = []
        self._running = False

    def expose(self, address: Address, ssl_context: ssl.SSLContext | None = None, backlog: int = 1024) -> None:
        """Listen on ``address`` once started; port 0 picks a free port (see :attr:`addresses`)."""
        if self._running:
            raise RuntimeError("expose() must be called before start()")
        self._exposures.append(_Exposure(address, ssl_context, backlog))

    def on_stop(self, callback: Callable[[], Any]) -> None:
        """Run ``callback()`` when the server stops, after it stopped accepting."""
        self._stop_callbacks.append(callback)

    @property
    def addresses(self) -> list[Any]:
        """The bound addresses (with the real port for port 0), in exposure order."""
        return [server.socket.getsockname() for server in self._servers]

    @property
    def is_running(self) -> bool:
        """Whether :meth:`start` was called and :meth:`stop` not yet."""
        return self._running

    def start(self, app: WSGIApp) -> None:
        """Listen on every exposed address and serve ``app``; returns at once (the servers run in greenlets).

        Raises :class:`RuntimeError` when already running or nothing was exposed, and
        :class:`OSError` when an address cannot be bound.
        """
        if self._running:
            raise RuntimeError("The server is already running")
        if not self._exposures:
            raise RuntimeError("Nothing to listen on: call expose() first")
        warn_if_unpatched(self.logger)
        for exposure in self._exposures:
            server = self._create_server(exposure, app)
            server.start()
            self._servers.append(server)
            self.logger.info("Listening on %s", _describe(server.socket.getsockname(), exposure.ssl_context))
        self._running = True

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Stop accepting, close clients, and return within about ``timeout`` seconds."""
        if not self._running:
            return
        self._running = False
        deadline = time.monotonic() + timeout
        for server in self._servers:
            server.close()
        callbacks = [gevent.spawn(callback) for callback in self._stop_callbacks]
        gevent.joinall(callbacks, timeout=timeout)
        for greenlet in callbacks:
            if not greenlet.successful() and greenlet.dead:
                self.logger.error("on_stop callback failed", exc_info=greenlet.exc_info)
        self._connections.join(timeout=max(0.0, deadline - time.monotonic()))
        self._connections.kill(block=True, timeout=1)
        self._servers.clear()
        self.logger.info("Stopped")

    def _create_server(self, exposure: _Exposure, app: WSGIApp) -> WSGIServer:
        listener = _listen(exposure.address, exposure.backlog)
        extra: dict[str, Any] = {}
        if exposure.ssl_context is not None:
            extra["ssl_context"] = exposure.ssl_context
        server = _WSGIServer(
            listener,
            app,
            spawn=self._connections,
            handler_class=WebsocketWSGIHandler,
            log=self._access_log,
            error_log=self._error_log,
            **extra,
        )
        # Read by WebsocketWSGIHandler for each connection.
        server.request_timeout = self.request_timeout
        server.keepalive_timeout = self.keepalive_timeout
        server.max_header_size = self.max_header_size
        server.body_timeout = self.body_timeout
        server.tls_handshake_timeout = self.tls_handshake_timeout
        server.geventws_logger = self.logger
        server.access_logger = self._access_logger
        return server


#: Accept errors that mean "out of resources for now": accepting pauses, then retries.
_ACCEPT_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: At most one log line per this many seconds while accepting is exhausted.
_ACCEPT_LOG_INTERVAL = 10.0
_ACCEPT_MAX_PAUSE = 1.0


class _WSGIServer(WSGIServer):  # type: ignore[misc]
    """pywsgi's server with a deadline on the TLS handshake, and quiet failures.

    gevent runs the handshake in the connection's greenlet with no deadline,
    and a failed one (a port scan, a peer that never says hello and leaves)
    ends in a traceback printed on stderr.  Here it gets
    ``tls_handshake_timeout`` seconds and a failure is one DEBUG line.

    Out of file descriptors (EMFILE and its kin), gevent prints a traceback for
    every failed accept; here accepting pauses (50 ms, doubling up to 1 s, as
    long as it keeps failing) and an ERROR line is logged at most every 10 s.
    """

    request_timeout: float | None = None
    keepalive_timeout: float | None = None
    max_header_size: int | None = None
    body_timeout: float | None = DEFAULT_BODY_TIMEOUT
    tls_handshake_timeout: float | None = DEFAULT_TLS_HANDSHAKE_TIMEOUT
    geventws_logger: logging.Logger = logging.getLogger("geventws.server")
    access_logger: logging.Logger | None = None
    _accept_pause = 0.0
    _accept_logged_at = -_ACCEPT_LOG_INTERVAL
    _resume_timer: Any = None

    def do_handle(self, *args: Any) -> None:
        """Serve an accepted connection in a greenlet of the pool (see :meth:`_serve_connection`)."""
        try:
            self._spawn(self._serve_connection, *args)
        except BaseException:
            self.do_close(*args)
            raise

    def _serve_connection(self, client_socket: socket.socket, address: Any) -> None:
        """Handle the connection, then close it.

        gevent's own wrapper calls the handler with ``handle(*args)``, a call
        the interpreter makes from a C frame of its own: with the WebSocket
        handler running beneath, every idle connection's greenlet would keep
        that frame too (about 600 bytes, tracemalloc on the ``idle`` cell).
        """
        try:
            self._handle(client_socket, address)
        finally:
            self.do_close(client_socket, address)

    def handle(self, sock: socket.socket, address: Any) -> None:
        """Serve the connection's requests, then the WebSocket one left to run after them (``serve_upgraded``)."""
        serve_upgraded(self, sock, address)

    def do_read(self) -> Any:
        """Accept one connection; out of descriptors, pause accepting instead of failing loudly."""
        try:
            accepted = super().do_read()
        except OSError as error:
            if error.errno not in _ACCEPT_EXHAUSTED:
                raise
            self._pause_accepting(error)
            return None
        self._accept_pause = 0.0
        return accepted

    def _pause_accepting(self, error: OSError) -> None:
        now = time.monotonic()
        if now - self._accept_logged_at >= _ACCEPT_LOG_INTERVAL:
            self._accept_logged_at = now
            self.geventws_logger.error("Cannot accept connections, pausing: %s", error)
        self._accept_pause = min(_ACCEPT_MAX_PAUSE, max(0.05, self._accept_pause * 2))
        self.stop_accepting()
        if self._resume_timer is not None:
            self._resume_timer.close()
        self._resume_timer = self.loop.timer(self._accept_pause)
        self._resume_timer.start(self._resume_accepting)

    def _resume_accepting(self) -> None:
        if self.started:
            self.start_accepting()

    def wrap_socket_and_handle(self, client_socket: socket.socket, address: Any) -> Any:
        """Complete the TLS handshake within the deadline, then serve the connection."""
        try:
            with gevent.Timeout(self.tls_handshake_timeout, TimeoutError("TLS handshake took too long")):
                tls_socket = self.wrap_socket(client_socket, **self.ssl_args)
        except OSError as error:  # ssl.SSLError and TimeoutError are OSErrors
            self.geventws_logger.debug("TLS handshake with %s failed: %s", _peer(address), error)
            client_socket.close()
            return None
        with tls_socket:
            return self.handle(tls_socket, address)


def _peer(address: Any) -> str:
    return str(address[0]) if isinstance(address, tuple) and address else str(address or "-")


def _listen(address: Address, backlog: int) -> socket.socket:
    if isinstance(address, str):
        return _listen_unix(address.removeprefix("unix:"), backlog)
    host, port = address
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # gevent.socket.create_server is the stdlib's and builds a blocking socket
    # unless the process is monkey-patched: build a gevent socket explicitly.
    sock: socket.socket = gevent.socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def _listen_unix(path: str, backlog: int) -> socket.socket:
    if os.path.exists(path) and stat.S_ISSOCK(os.stat(path).st_mode):
        os.unlink(path)  # a stale socket from an earlier run
    sock: socket.socket = gevent.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(backlog)
    return sock


def _describe(address: Any, ssl_context: ssl.SSLContext | None) -> str:
    scheme = "https" if ssl_context is not None else "http"
    if isinstance(address, str):
        return f"unix:{address}"
    host, port = address[0], address[1]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
