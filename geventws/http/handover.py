"""Taking a connection over from whichever WSGI server parsed its handshake.

WSGI has no standard way to hand a socket to the application after a 101, so
each server is asked in its own terms (:func:`find_handover`):

- our :class:`~geventws.http.pywsgi_handler.WebsocketWSGIHandler` (our
  ``Server`` and the gunicorn worker) puts a ``Transport`` in the environ,
  which also ends keep-alive and lets pywsgi's buffered reader go;
- gevent's stock ``pywsgi.WSGIServer`` (also gunicorn's ``gevent_pywsgi``
  worker) gives upgrade requests the connection's buffered reader as
  ``wsgi.input``, whose raw stream holds the socket;
- gunicorn's ``gevent`` worker puts it in ``environ["gunicorn.socket"]``;
- werkzeug's development server in ``environ["werkzeug.socket"]``.

Where the server can write the 101 itself (pywsgi, gunicorn) it is asked to,
through ``start_response`` and an empty ``write``, so its access log records a
101 with the connection's duration.  When the connection is over the
application returns an empty body: pywsgi then finds the peer gone and closes
the connection; gunicorn is told to close it by a body whose ``close()`` raises
``StopIteration`` (its own signal for "close after this request").  werkzeug
would add ``Connection: close`` to a 101, so there the 101 is written on the
socket (and logged on the ``werkzeug`` logger) and the server is told that the
connection dropped, which it takes quietly.

The WebSocket handler runs inside the server's own call of the application,
in the request's greenlet, so the server neither writes to nor closes the
socket until the connection is over.  With our handler, an endpoint the
server calls directly (or through a :class:`~.router.Router`, which hands the
request on, ``hand_on``) lets its client handler run just after that call
instead (:meth:`Handover.serve_later`), in the same greenlet, with less of the
request kept alive beneath it.

A socket that is not a gevent socket belongs to a server that runs each
request in a blocking thread (gunicorn's ``sync`` and ``gthread`` workers,
werkzeug's server in an unpatched process): the connection's greenlets could
not run beside the handler there, so the upgrade is refused
(:data:`UNSUPPORTED_SERVER_MESSAGE`).
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gevent.socket
import gevent.ssl

from ..protocol.handshake import serialize_101
from .transport import TRANSPORT_KEY, Transport, drain_reader

#: What the log says when a server cannot hand its socket over.
UNSUPPORTED_SERVER_MESSAGE = (
    "Cannot upgrade to WebSocket: %s. WebSocket connections need a gevent server: "
    "geventws.Server, gevent.pywsgi.WSGIServer, gunicorn with -k geventws.gunicorn.Worker "
    "(or -k gevent / -k gevent_pywsgi), or werkzeug's development server in a gevent-patched "
    "process (python -m gevent.monkey --module flask run)."
)

#: werkzeug's request log, where its development server logs every request.
_werkzeug_logger = logging.getLogger("werkzeug")

Headers = list[tuple[str, str]]
StartResponse = Callable[..., Any]
_STATUS_101 = "101 Switching Protocols"
#: Body headers a WSGI response carries by default; they make no sense on a 101.
_BODY_HEADERS = frozenset({"content-type", "content-length"})


class UnsupportedServerError(RuntimeError):
    """The WSGI server serving this request cannot hand its socket over; the message says why."""


class Handover:
    """One server's way of giving a connection to the WebSocket endpoint."""

    def upgrade(self, headers: Headers) -> tuple[socket.socket, bytes]:
        """Send the 101 with ``headers`` and claim the socket.

        Returns the socket and what the client sent after its handshake that
        the server had read already.  Raises :class:`OSError` when the peer left.
        """
        raise NotImplementedError

    def serve_later(self, serve: Callable[[], None]) -> bool:
        """Have the server call ``serve()`` right after the application returns, if it can; ``False`` if not.

        Only where nothing of the server's application wraps the endpoint's
        call: ``serve()`` then runs in the same greenlet, before the server
        closes the connection, with the request's frames gone.
        """
        return False

    def finish(self) -> Iterable[bytes]:
        """What the application returns to the server once the connection is over (or handed to ``serve_later``)."""
        return []


class _StartResponseHandover(Handover):
    """Servers that write a 101 correctly through ``start_response`` (pywsgi, gunicorn's gevent worker)."""

    def __init__(self, sock: socket.socket, start_response: StartResponse, take_leftover: Callable[[], bytes]) -> None:
        self._socket = sock
        self._start_response = start_response
        self._take_leftover = take_leftover

    def upgrade(self, headers: Headers) -> tuple[socket.socket, bytes]:
        write = self._start_response(_STATUS_101, [(k, v) for k, v in headers if k.lower() not in _BODY_HEADERS])
        write(b"")  # the server sends the status line and headers now, with nothing after them
        return self._socket, self._take_leftover()


class _TransportHandover(Handover):
    """Our own pywsgi handler, through its :class:`Transport`.

    For the app the server calls directly the transport writes the 101 and
    runs the client handler after the response; otherwise pywsgi writes the
    101 through ``start_response`` (middleware may add headers) and the
    handler runs inside the application.
    """

    def __init__(self, transport: Transport, start_response: StartResponse, app: Any) -> None:
        self._transport = transport
        self._start_response = start_response
        self._direct = app is not None and transport.direct_app is app

    def upgrade(self, headers: Headers) -> tuple[socket.socket, bytes]:
        sent = [(k, v) for k, v in headers if k.lower() not in _BODY_HEADERS]
        if self._direct:
            return self._transport.switch_protocols(sent)
        self._start_response(_STATUS_101, sent)(b"")
        return self._transport.take_over()

    def serve_later(self, serve: Callable[[], None]) -> bool:
        if self._direct:
            self._transport.serve_after_response(serve)
        return self._direct


class _GunicornHandover(_StartResponseHandover):
    """gunicorn's gevent worker: it would read the next request from the socket unless told to stop."""

    def finish(self) -> Iterable[bytes]:
        return _EndConnection()


class _EndConnection:
    """An empty body whose ``close()`` raises ``StopIteration``: gunicorn's async workers
    take that (after writing the access log line) as "close this connection", quietly."""

    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    def close(self) -> None:
        raise StopIteration("The WebSocket connection is over")


class _WerkzeugHandover(Handover):
    """werkzeug's development server: the 101 goes out on the socket, the end is a dropped connection.

    The client gets a duplicate of the socket: werkzeug still polls its own
    after the application returns, and the client closes its copy whenever
    its reader finishes.
    """

    def __init__(self, sock: socket.socket, reader: Any, environ: dict[str, Any]) -> None:
        self._socket = sock
        self._reader = reader
        self._environ = environ

    def upgrade(self, headers: Headers) -> tuple[socket.socket, bytes]:
        leftover = drain_reader(self._reader, self._socket)
        self._socket.sendall(serialize_101(headers))
        _werkzeug_logger.info(
            '%s - - [%s] "%s %s %s" 101 -',
            self._environ.get("REMOTE_ADDR", "-"),
            time.strftime("%d/%b/%Y %H:%M:%S"),
            self._environ.get("REQUEST_METHOD"),
            self._environ.get("REQUEST_URI") or self._environ.get("PATH_INFO"),
            self._environ.get("SERVER_PROTOCOL"),
        )
        if isinstance(self._socket, ssl.SSLSocket):
            return self._socket, leftover  # TLS state cannot be duplicated
        return self._socket.dup(), leftover

    def finish(self) -> Iterable[bytes]:
        return _Dropped()


class _Dropped:
    """A body that raises ``ConnectionAbortedError`` when iterated: werkzeug takes a
    ConnectionError from the body for a dropped connection, writes nothing more and logs nothing."""

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        raise ConnectionAbortedError("The WebSocket connection is over")


def find_handover(environ: dict[str, Any], start_response: StartResponse, app: Any = None) -> Handover:
    """The way the server behind ``environ`` hands its socket over to ``app``, the endpoint asking.

    Raises :class:`UnsupportedServerError` (with a message for the log) when
    it cannot do so safely.
    """
    transport = environ.get(TRANSPORT_KEY)
    if transport is not None:
        return _TransportHandover(transport, start_response, app)
    if "werkzeug.socket" in environ:
        sock = environ["werkzeug.socket"]
        _require_gevent(sock, "werkzeug's development server runs this request in a blocking thread")
        return _WerkzeugHandover(sock, environ.get("wsgi.input"), environ)
    if "gunicorn.socket" in environ:
        sock = environ["gunicorn.socket"]
        if not environ.get("wsgi.multithread") or not _is_gevent_socket(sock):
            raise UnsupportedServerError(
                UNSUPPORTED_SERVER_MESSAGE % "gunicorn's sync and gthread workers serve a request in a blocking thread"
            )
        return _GunicornHandover(sock, start_response, lambda: _gunicorn_leftover(environ))
    reader = environ.get("wsgi.input")
    sock = getattr(getattr(reader, "raw", None), "_sock", None)  # pywsgi: the reader over the connection
    if sock is None:
        raise UnsupportedServerError(
            UNSUPPORTED_SERVER_MESSAGE % f"the server ({environ.get('SERVER_SOFTWARE', 'unknown')}) offers no socket"
        )
    _require_gevent(sock, "this server runs the request in a blocking thread")
    return _StartResponseHandover(sock, start_response, lambda: drain_reader(reader, sock))


def hand_on(environ: dict[str, Any], app: Any, to: Any) -> None:
    """``app`` is about to call ``to`` with the same environ and ``start_response``, and nothing around the call.

    If the server called ``app`` directly, it now calls ``to`` directly as far
    as an endpoint can tell (see :meth:`Handover.serve_later`).
    """
    transport = environ.get(TRANSPORT_KEY)
    if transport is not None and transport.direct_app is app:
        transport.direct_app = to


def _require_gevent(sock: Any, reason: str) -> None:
    if not _is_gevent_socket(sock):
        raise UnsupportedServerError(UNSUPPORTED_SERVER_MESSAGE % reason)


def _is_gevent_socket(sock: Any) -> bool:
    return isinstance(sock, (gevent.socket.socket, gevent.ssl.SSLSocket))


def _gunicorn_leftover(environ: dict[str, Any]) -> bytes:
    """What gunicorn's parser read past the handshake (gunicorn 23 and later can hand it over)."""
    unreader = getattr(getattr(environ.get("wsgi.input"), "reader", None), "unreader", None)
    take_buffered = getattr(unreader, "take_buffered", None)
    if take_buffered is None:
        return b""
    leftover: bytes = take_buffered()
    return leftover


__all__ = ["UNSUPPORTED_SERVER_MESSAGE", "Handover", "UnsupportedServerError", "find_handover", "hand_on"]
