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
request in an OS thread (werkzeug's server in an unpatched process, gunicorn's
``gthread`` worker).  There the connection is served on that thread's own
gevent hub, one thread per connection, for as long as it lasts
(:mod:`geventws.connection.threads`: sends from other threads are handed to
that hub): the socket is duplicated as a gevent socket of the thread, and
when the connection is over the thread's hub finishes what it was handed and
is destroyed before the thread goes back to the server.  werkzeug is then
told the connection dropped by a failing write of its own (not by an error
of the application, which its debugger would catch and report), and
gunicorn finds the connection closed when it waits for the next request.
TLS on a thread server, and gunicorn's ``sync`` worker (one request at a
time, killed after ``--timeout``), are refused
(:data:`UNSUPPORTED_SERVER_MESSAGE`).
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gevent
import gevent.socket
import gevent.ssl
from gevent._hub_local import get_hub_if_exists

from ..connection.client import WebsocketClient
from ..connection.threads import OwnerHub, serve_on_this_thread
from ..protocol.handshake import serialize_101
from .transport import TRANSPORT_KEY, Transport, drain_reader

#: What the log says when a server cannot hand its socket over.
UNSUPPORTED_SERVER_MESSAGE = (
    "Cannot upgrade to WebSocket: %s. WebSocket connections need a gevent server "
    "(geventws.Server, gevent.pywsgi.WSGIServer, gunicorn with -k geventws.gunicorn.Worker, "
    "-k gevent or -k gevent_pywsgi) or a thread server without TLS "
    "(werkzeug's development server, flask run; gunicorn -k gthread)."
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

    def adopt(self, client: WebsocketClient) -> None:
        """The client of the connection was just made (a thread server's handover makes it safe across threads)."""

    def finish(self) -> Iterable[bytes]:
        """What the application returns to the server once the connection is over (or handed to ``serve_later``)."""
        return []


class _ThreadHandover(Handover):
    """What thread servers share: the connection on the request thread's own hub (see the module documentation)."""

    _client: WebsocketClient | None = None
    _owner: OwnerHub | None = None
    _own_hub = False

    def _thread_socket(self, sock: socket.socket) -> socket.socket:
        """A gevent socket of this thread's hub (made now if the thread has none) over a duplicate of ``sock``."""
        self._own_hub = get_hub_if_exists() is None
        duplicate = sock.dup()
        family, kind, proto = duplicate.family, duplicate.type, duplicate.proto
        thread_socket: socket.socket = gevent.socket.socket(family, kind, proto, fileno=duplicate.detach())
        return thread_socket

    def adopt(self, client: WebsocketClient) -> None:
        self._client = client
        self._owner = serve_on_this_thread(client)

    def _end(self) -> None:
        """The connection is over: let its reader finish, finish the calls other threads handed it, drop the hub."""
        if self._client is not None:
            self._client.wait_closed()
        if self._owner is not None:
            self._owner.close()
        if self._own_hub:
            gevent.get_hub().destroy(destroy_loop=True)


class _ThreadWerkzeugHandover(_ThreadHandover):
    """werkzeug's development server in an unpatched process: it serves each connection in a thread."""

    def __init__(self, sock: socket.socket, reader: Any, start_response: StartResponse) -> None:
        self._socket = sock
        self._reader = reader
        self._start_response = start_response

    def upgrade(self, headers: Headers) -> tuple[socket.socket, bytes]:
        leftover = drain_reader(self._reader, self._socket)
        self._socket.sendall(serialize_101(headers))
        return self._thread_socket(self._socket), leftover

    def finish(self) -> Iterable[bytes]:
        self._end()
        return _LoggedAsSwitched(self._start_response)


class _LoggedAsSwitched:
    """A body that has werkzeug log the request with 101 and then fail writing to the closed connection.

    werkzeug takes the failed write (a ``BrokenPipeError`` of its own) for a
    dropped connection and goes quietly; an exception of the body would reach
    the debugger of ``flask run --debug``, which would report it.
    """

    def __init__(self, start_response: StartResponse) -> None:
        self._start_response = start_response

    def __iter__(self) -> Iterator[bytes]:
        self._start_response(_STATUS_101, [])
        yield b""


class _ThreadGunicornHandover(_ThreadHandover):
    """gunicorn's ``gthread`` worker: it writes the 101; the connection ends closed before the next request."""

    def __init__(self, sock: socket.socket, start_response: StartResponse, environ: dict[str, Any]) -> None:
        self._socket = sock
        self._start_response = start_response
        self._environ = environ

    def upgrade(self, headers: Headers) -> tuple[socket.socket, bytes]:
        self._start_response(_STATUS_101, [(k, v) for k, v in headers if k.lower() not in _BODY_HEADERS])(b"")
        return self._thread_socket(self._socket), _gunicorn_leftover(self._environ)

    def finish(self) -> Iterable[bytes]:
        self._end()
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
        if _is_gevent_socket(sock):
            return _WerkzeugHandover(sock, environ.get("wsgi.input"), environ)
        _require_plain(sock, "werkzeug's development server")
        return _ThreadWerkzeugHandover(sock, environ.get("wsgi.input"), start_response)
    if "gunicorn.socket" in environ:
        sock = environ["gunicorn.socket"]
        if not environ.get("wsgi.multithread"):
            raise UnsupportedServerError(
                UNSUPPORTED_SERVER_MESSAGE % "gunicorn's sync worker serves one request at a time"
            )
        if _is_gevent_socket(sock):
            return _GunicornHandover(sock, start_response, lambda: _gunicorn_leftover(environ))
        _require_plain(sock, "gunicorn's gthread worker")
        return _ThreadGunicornHandover(sock, start_response, environ)
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


def _require_plain(sock: Any, server: str) -> None:
    if isinstance(sock, ssl.SSLSocket) or not isinstance(sock, socket.socket):
        raise UnsupportedServerError(UNSUPPORTED_SERVER_MESSAGE % f"{server} serves this request in a thread, over TLS")


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
