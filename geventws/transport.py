"""Handing a WSGI request's raw connection over to the WebSocket endpoint.

WSGI has no standard way to take over the socket after a 101, so the server's
request handler puts a :class:`Transport` into the environ under
:data:`TRANSPORT_KEY`.  The endpoint calls :meth:`Transport.take_over` once it
has decided to accept; from then on the HTTP server writes nothing more on that
connection and closes it when the endpoint returns.
"""

from __future__ import annotations

import socket
from typing import Any, BinaryIO

from gevent.pywsgi import WSGIHandler

TRANSPORT_KEY = "geventws.transport"


class Transport:
    """The socket and buffered reader behind one HTTP request."""

    def __init__(self, sock: socket.socket, reader: BinaryIO, on_take_over: Any = None) -> None:
        self.socket = sock
        self.reader = reader
        self.taken = False
        self._on_take_over = on_take_over

    def take_over(self) -> tuple[socket.socket, BinaryIO]:
        """Claim the connection; the reader may already hold bytes sent after the handshake."""
        self.taken = True
        if self._on_take_over is not None:
            self._on_take_over()
        return self.socket, self.reader


class WebsocketWSGIHandler(WSGIHandler):  # type: ignore[misc]
    """gevent's pywsgi request handler, plus a :class:`Transport` in every environ."""

    def get_environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = super().get_environ()
        environ[TRANSPORT_KEY] = Transport(self.socket, self.rfile, self._taken_over)
        return environ

    def _taken_over(self) -> None:
        # Keep-alive ends here: the bytes that follow are WebSocket frames.
        self.close_connection = True

    def run_application(self) -> None:
        super().run_application()
        if self.environ[TRANSPORT_KEY].taken:
            self._orig_status = "101 Switching Protocols"  # for the access log line
