"""A gunicorn worker: ``gunicorn -k geventws.gunicorn.Worker -w 4 app:app``.

gunicorn's ``gevent_pywsgi`` worker with our request handler
(:class:`~geventws.http.pywsgi_handler.WebsocketWSGIHandler`) and a graceful
stop for WebSocket clients.  gunicorn's options keep their meaning:
``--worker-connections`` bounds each worker's greenlet pool, ``--keep-alive``
is how long an idle HTTP connection may wait for its next request,
``--max-requests`` (with its jitter) recycles a worker, the TLS options apply
and handshakes appear in gunicorn's access log with status 101.

The deadlines and the resource handling of our :class:`~geventws.Server`
hold here too: a TLS handshake must complete within
:attr:`Worker.tls_handshake_timeout` (10 s; subclass the worker to change it,
gunicorn has no option for it), and out of file descriptors a worker pauses
accepting (50 ms, doubling up to 1 s) with one ERROR line every 10 s at most
in gunicorn's error log, instead of a traceback per failed accept.

Stopping: on SIGTERM, SIGINT and SIGQUIT, when ``--max-requests`` is reached
and when ``--reload`` sees a change, the worker stops accepting, closes every
WebSocket client of the process with 1001 "Server shutting down" at once
(:func:`~geventws.http.endpoint.close_all_websockets`), waits for the close
handshakes and the remaining requests, and exits within ``--graceful-timeout``.
gunicorn's own gevent workers only wait out the graceful timeout and then
drop WebSocket clients without a close frame.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import gevent
from gunicorn.http.wsgi import base_environ
from gunicorn.sock import ssl_context
from gunicorn.workers.ggevent import VERSION, GeventPyWSGIWorker, PyWSGIHandler

from .http.connections import ConnectionGreenlets
from .http.endpoint import close_all_websockets
from .http.patching import warn_if_unpatched
from .http.pywsgi_handler import WebsocketWSGIHandler
from .http.server import (
    DEFAULT_MAX_HEADER_SIZE,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
)
from .http.server import _WSGIServer as HardenedWSGIServer

__all__ = ["Worker"]

logger = logging.getLogger("geventws.gunicorn")

#: How often the worker checks whether it should stop (signals only set a flag).
_POLL_INTERVAL = 0.1
#: gunicorn's arbiter expects a sign of life at least this often (it allows ``--timeout``).
_NOTIFY_INTERVAL = 1.0


class _Handler(WebsocketWSGIHandler, PyWSGIHandler):  # type: ignore[misc]
    """Our handshake-aware handler, logging through gunicorn's access log, counting requests."""

    close_connection: bool

    def read_request(self, raw_requestline: str) -> Any:
        result = super().read_request(raw_requestline)
        if getattr(self.server, "close_after_each_request", False):
            self.close_connection = True  # --keep-alive 0: one request per connection
        return result

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        # What gunicorn's own handler adds (ours builds the environ without it).
        environ["gunicorn.sock"] = self.socket
        environ["RAW_URI"] = self.path
        worker = getattr(self.server, "worker", None)
        if worker is not None:
            worker.count_request()
        return environ


class Worker(GeventPyWSGIWorker):  # type: ignore[misc]
    """The gunicorn worker class; see the module documentation."""

    #: Our server's pywsgi server: the TLS handshake deadline and the pause on EMFILE.
    server_class = HardenedWSGIServer
    wsgi_handler = _Handler
    #: Seconds a TLS handshake may take (``None``: no deadline), as ``Server(tls_handshake_timeout=...)``.
    tls_handshake_timeout: float | None = DEFAULT_TLS_HANDSHAKE_TIMEOUT
    alive: bool
    nr: int
    max_requests: int

    def patch(self) -> None:
        """Monkey-patch as gevent's worker does, and warn if that did not take."""
        # gevent's worker patches everything; the check only speaks if that failed.
        super().patch()
        warn_if_unpatched(logger)

    def count_request(self) -> None:
        """One more request: at ``--max-requests`` the worker stops gracefully and gunicorn starts another."""
        self.nr += 1
        if self.nr >= self.max_requests and self.alive:
            self.log.info("Autorestarting worker after current request.")
            self.alive = False

    def handle_quit(self, sig: int, frame: Any) -> None:
        """SIGINT and SIGQUIT: stop gracefully, as on SIGTERM."""
        # SIGINT and SIGQUIT stop as gracefully as SIGTERM: the clients get their 1001 either way.
        self.alive = False
        gevent.spawn(self.cfg.worker_int, self)

    def run(self) -> None:
        """Serve every listener until told to stop, then close WebSocket clients with 1001 and drain."""
        servers = [self._start_server(listener) for listener in self.sockets]
        # From here on a stop signal is handled: one that reaches a worker still booting is
        # lost (it runs the master's handler), so this line is what "ready" means.
        self.log.info("Worker ready (pid: %s)", self.pid)
        last_notified = 0.0
        while self.alive:
            if time.monotonic() - last_notified >= _NOTIFY_INTERVAL:
                self.notify()
                last_notified = time.monotonic()
            gevent.sleep(_POLL_INTERVAL)
        self._stop(servers)

    def _start_server(self, listener: Any) -> HardenedWSGIServer:
        listener.setblocking(1)
        environ = base_environ(self.cfg)
        environ.update({"wsgi.multithread": True, "SERVER_SOFTWARE": VERSION})
        extra: dict[str, Any] = {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}
        server = self.server_class(
            listener,
            application=self.wsgi,
            spawn=ConnectionGreenlets(self.worker_connections, logger),
            log=self.log,
            handler_class=self.wsgi_handler,
            environ=environ,
            **extra,
        )
        # Read by the handler for each connection.
        server.worker = self
        keepalive = self.cfg.keepalive
        server.close_after_each_request = keepalive <= 0
        # Without keep-alive, a new connection still gets no longer than a request head to start.
        server.keepalive_timeout = keepalive if keepalive > 0 else DEFAULT_REQUEST_TIMEOUT
        server.request_timeout = DEFAULT_REQUEST_TIMEOUT
        server.max_header_size = DEFAULT_MAX_HEADER_SIZE
        server.tls_handshake_timeout = self.tls_handshake_timeout
        # TLS failures and EMFILE pauses go to gunicorn's error log (a custom logger_class may have none).
        server.geventws_logger = getattr(self.log, "error_log", None) or logger
        server.start()
        return server

    def _stop(self, servers: list[HardenedWSGIServer]) -> None:
        deadline = time.monotonic() + self.cfg.graceful_timeout
        for server in servers:
            server.close()  # stop accepting; requests in progress go on
        closing = gevent.spawn(close_all_websockets)
        while time.monotonic() < deadline:
            busy = not closing.dead or any(len(server.pool) for server in servers)
            if not busy:
                return
            self.notify()
            gevent.sleep(_POLL_INTERVAL)
        self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
        closing.kill(block=False)
        for server in servers:
            server.stop(timeout=1)
