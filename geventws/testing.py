"""Testing WebSocket handlers: a real server in the test process, real clients, fast teardown.

:func:`serve` starts a WSGI app on an ephemeral 127.0.0.1 port in the current
process and yields a :class:`TestServer` whose :meth:`~TestServer.connect`
opens websocket-client connections to it.  The test and the server share
gevent's loop, which only works when the process is monkey-patched
(``gevent.monkey.patch_all()`` before anything else is imported): a client
blocked on ``recv()`` must let the server run.  :func:`serve` patches nothing
itself; it checks, and says so plainly when the process is not patched.  The
pytest plugin (:mod:`geventws.pytest_plugin`) patches at startup.

Leaving the block closes every connection at once: the clients opened with
:meth:`~TestServer.connect` are dropped first, then the server stops with a
short timeout, so a test that leaves clients open costs milliseconds, not the
3 s close period a polite shutdown would wait for.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from gevent import monkey

from .http.server import Server, WSGIApp

if TYPE_CHECKING:
    import websocket

#: How long leaving :func:`serve` waits for the server's connections before killing them.
DEFAULT_STOP_TIMEOUT = 0.2
#: websocket-client's timeout for connections made by :meth:`TestServer.connect`.
DEFAULT_CONNECT_TIMEOUT = 5.0

logger = logging.getLogger("geventws.testing")


class NotPatchedError(RuntimeError):
    """The process is not monkey-patched, so blocking clients would stall the server in the same process."""


class TestServer:
    """A running test server: its URLs, and websocket-client connections to it."""

    __test__ = False  # not a test class, whatever pytest's name patterns say

    def __init__(self, server: Server) -> None:
        self.server = server
        host, port = server.addresses[0][:2]
        self.host: str = host
        self.port: int = port
        self._connections: list[websocket.WebSocket] = []

    @property
    def url(self) -> str:
        """The HTTP base URL, ``http://127.0.0.1:PORT`` (also the Origin that :meth:`connect` sends)."""
        return f"http://{self.host}:{self.port}"

    def ws_url(self, path: str = "/") -> str:
        """The ``ws://`` URL of ``path`` on this server."""
        return f"ws://{self.host}:{self.port}{path}"

    def connect(self, path: str = "/", **options: Any) -> websocket.WebSocket:
        """Open a websocket-client connection to ``path``; ``options`` go to ``websocket.create_connection``.

        Defaults: a 5 s timeout (a test waiting for a message that never comes
        fails instead of hanging) and this server's own URL as ``Origin``, as
        a page served by it would send.  Raises websocket-client's
        ``WebSocketBadStatusException`` (with ``status_code``) when the
        handshake is refused.
        """
        try:
            import websocket
        except ImportError as error:  # a test dependency, not one of the server's
            raise ImportError("TestServer.connect() needs websocket-client: pip install websocket-client") from error
        options.setdefault("timeout", DEFAULT_CONNECT_TIMEOUT)
        options.setdefault("origin", self.url)
        connection = websocket.create_connection(self.ws_url(path), **options)
        self._connections.append(connection)
        return connection

    def drop_connections(self) -> None:
        """Drop every connection made by :meth:`connect` without a close handshake (the server sees 1006)."""
        connections, self._connections = self._connections, []
        for connection in connections:
            sock = connection.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            connection.shutdown()  # type: ignore[no-untyped-call]


def require_patched() -> None:
    """Raise :class:`NotPatchedError` unless the process is monkey-patched by gevent."""
    if not monkey.is_module_patched("socket"):
        raise NotPatchedError(
            "geventws.testing needs a gevent-monkey-patched process: websocket-client's blocking "
            "sockets would stall the server running in the same process.  Call "
            "gevent.monkey.patch_all() before importing anything else (at the top of conftest.py), "
            "or let the geventws pytest plugin do it."
        )


@contextlib.contextmanager
def serve(app: WSGIApp, *, stop_timeout: float = DEFAULT_STOP_TIMEOUT, **server_options: Any) -> Iterator[TestServer]:
    """Serve ``app`` on an ephemeral 127.0.0.1 port for the duration of the block.

    ``server_options`` go to :class:`~geventws.Server` (``request_timeout``,
    ``max_connections``, ...).  On exit the connections made through the
    yielded :class:`TestServer` are dropped and the server is stopped within
    about ``stop_timeout`` seconds: clients still open then (made some other
    way) are cut off.
    """
    require_patched()
    server = Server(server_options.pop("logger", logger), **server_options)
    server.expose(("127.0.0.1", 0))
    server.start(app)
    running = TestServer(server)
    try:
        yield running
    finally:
        running.drop_connections()
        server.stop(timeout=stop_timeout)
