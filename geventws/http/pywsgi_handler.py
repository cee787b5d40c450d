"""Our pywsgi request handler: strict heads, deadlines, a fast environ and the upgrade's hand-over.

Every environ carries a :class:`~.transport.Transport` (see :mod:`.transport`)
through which the WebSocket endpoint takes the connection over.
"""

from __future__ import annotations

import io
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent.socket
from gevent import getcurrent
from gevent.pywsgi import MAX_REQUEST_LINE, WSGIHandler, _InvalidClientInput, format_date_time, unquote_latin1
from greenlet import GreenletExit

from ..connection.blocking_write import send_nowait
from .request_body import DEFAULT_BODY_TIMEOUT, NO_BODY, BodyInput
from .request_head import (
    MAX_HEADER_FIELDS,
    BadRequestHead,
    RequestHead,
    error_response,
    parse_request_head,
    quote,
)
from .transport import TRANSPORT_KEY, Transport, buffered_reader, take_buffered

#: 16 KiB of request header fields, like common reverse proxies.
DEFAULT_MAX_HEADER_SIZE = 16 * 1024
#: The level of access log lines (``server.access_logger``).
ACCESS_LOG_LEVEL = logging.INFO
_STATUS_101 = "101 Switching Protocols"


def _whole_fields(buffered: bytes, limit: int) -> bytes:
    """The header fields and the empty line after them, if ``buffered`` holds them all within the limits; else ``b""``.

    The same bytes the line-by-line read takes: lines end with LF, the first
    line that is a bare CRLF or LF ends the head.
    """
    if buffered[:1] == b"\n" or buffered[:2] == b"\r\n":
        return buffered[: 1 if buffered[:1] == b"\n" else 2]
    crlf, lf = buffered.find(b"\n\r\n", 0, limit), buffered.find(b"\n\n", 0, limit)
    if crlf < 0 and lf < 0:
        return b""
    end = crlf + 3 if lf < 0 or 0 <= crlf < lf else lf + 2
    fields = buffered[:end]
    if end > limit or fields.count(b"\n") > MAX_HEADER_FIELDS + 1:
        return b""
    return fields


#: Header name -> environ key (``Sec-WebSocket-Key`` -> ``HTTP_SEC_WEBSOCKET_KEY``; ``""``: not passed on),
#: for the first names seen: each request then shares the key strings instead of making its own.
_environ_keys: dict[str, str] = {}
_ENVIRON_KEYS_LIMIT = 512


def _environ_key(name: str) -> str:
    """The environ key of header ``name``, as pywsgi makes it; ``""`` for a name it drops."""
    key = _environ_keys.get(name)
    if key is None:
        if "_" in name:
            key = ""  # like pywsgi: X_Forwarded_For must not pass for X-Forwarded-For
        else:
            key = name.upper().replace("-", "_")
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = "HTTP_" + key
        if len(_environ_keys) < _ENVIRON_KEYS_LIMIT:
            _environ_keys[name] = key
    return key


def _add_headers(environ: dict[str, Any], headers: list[tuple[str, str]]) -> None:
    """Put ``headers`` in ``environ`` as pywsgi does.

    Repeated headers are joined with commas (cookies with ``"; "``); the
    first ``Content-Type`` and the first non-empty ``Content-Length`` become
    ``CONTENT_TYPE`` and ``CONTENT_LENGTH``.
    """
    for name, value in headers:
        key = _environ_keys.get(name)  # known names without a call
        if key is None:
            key = _environ_key(name)
        if not key:
            continue
        if key[0] == "C":  # CONTENT_TYPE or CONTENT_LENGTH: the first one counts
            if key not in environ and (value or key == "CONTENT_TYPE"):
                environ[key] = value
        elif key in environ:
            environ[key] += ("; " if "COOKIE" in key else ",") + value
        else:
            environ[key] = value


_date: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The ``Date`` header value of this second, formatted once a second (pywsgi formats it per response)."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, format_date_time(now).decode("latin-1"))
    return _date[1]


_CLOSED_READER: Any = io.BytesIO()
_CLOSED_READER.close()


_HEAD_TIMEOUT_RESPONSE = error_response(408, "The request head did not arrive in time")
#: Request lines longer than this are cut in log lines.
_LOGGED_LINE_LIMIT = 200
_logger = logging.getLogger("geventws.http")


class WebsocketWSGIHandler(WSGIHandler):  # type: ignore[misc]
    """gevent's pywsgi request handler with a :class:`~.transport.Transport` in each environ, strict and bounded.

    - Deadlines: a new connection has ``server.request_timeout`` seconds for
      its first request head; between keep-alive requests the connection may
      idle ``server.keepalive_timeout`` seconds, and once the next request's
      first byte arrives its head has ``request_timeout`` seconds again (a
      client trickling a byte a second cannot hold a greenlet).  The body must
      keep arriving (``server.body_timeout``, see :mod:`.request_body`).
    - Strict heads: parsed by h11 (see :mod:`.request_head`), at most
      ``server.max_header_size`` bytes of header fields and 100 fields (431);
      any malformed or ambiguous head gets its 4xx and the connection closes.
    - Client mistakes are logged as one line at INFO on the server's logger,
      application errors with their traceback at ERROR; nothing is printed.
    - Upgrades: see :class:`~.transport.Transport`.  A client handler left for after the
      response runs once this handler's request loop has returned and the
      handler object is gone (``serve_upgraded``, the server's ``handle``).
    """

    _head_deadline: Any = None  # a timer of the loop
    _upgrade_logged = False
    _transport: Transport | None = None
    _serve_after: Callable[[], None] | None = None
    #: What the server runs once this handler's request loop has returned (``serve_upgraded``).
    upgraded: Callable[[], None] | None = None
    #: Requests read on this connection so far.
    _served = 0
    rfile: Any
    headers: Any
    environ: dict[str, Any]
    wsgi_input: Any
    socket: Any
    server: Any

    def __init__(self, sock: socket.socket, address: Any, server: Any, rfile: Any = None) -> None:
        self.socket = sock
        self.client_address = address
        self.server = server
        self.rfile = buffered_reader(sock) if rfile is None else rfile

    def read_requestline(self) -> str:
        """Read the request line: idle keep-alive time first (between requests), then the head's deadline."""
        server = self.server
        request_timeout = getattr(server, "request_timeout", None)
        if self._served:
            # Keep-alive: the connection may idle; the deadline of a request starts with its first byte.
            self._arm(getattr(server, "keepalive_timeout", None), "Idle connection")
            self.rfile.peek(1)
        self._arm(request_timeout, "Request head took too long")
        line: bytes = self.rfile.readline(MAX_REQUEST_LINE)
        return line.decode("latin-1")

    def read_request(self, raw_requestline: str) -> bool:
        """Parse the head strictly (see :mod:`.request_head`); raises :class:`BadRequestHead` with its status."""
        head = parse_request_head(self._read_head(raw_requestline))
        self.requestline = raw_requestline.rstrip()
        self.command, self.path, self.request_version = head.method, head.target, head.version
        self.headers = head
        self.content_length = head.content_length
        self.close_connection = not head.keep_alive
        return True

    def _read_head(self, raw_requestline: str) -> bytes:
        """The request line and the header fields up to the empty line, within the size limits."""
        limit: int = getattr(self.server, "max_header_size", None) or DEFAULT_MAX_HEADER_SIZE
        fields = _whole_fields(self.rfile.peek(), limit)
        if fields:
            self.rfile.read(len(fields))
            return raw_requestline.encode("latin-1") + fields
        # Not all there yet, or over a limit: line by line, which also says which limit.
        lines = [raw_requestline.encode("latin-1")]
        size = 0
        while True:
            line: bytes = self.rfile.readline(limit - size + 1)
            size += len(line)
            if size > limit:
                raise BadRequestHead(431, f"Request header fields larger than {limit} bytes")
            if not line.endswith(b"\n"):
                raise ConnectionResetError("The peer closed the connection inside the request head")
            lines.append(line)
            if line in (b"\r\n", b"\n"):
                return b"".join(lines)
            if len(lines) > MAX_HEADER_FIELDS + 1:
                raise BadRequestHead(431, f"More than {MAX_HEADER_FIELDS} header fields")

    def _handle_client_error(self, ex: BaseException) -> tuple[str, bytes] | None:
        if isinstance(ex, BadRequestHead):
            self._log_client_error(ex.reason)
            return (str(ex.status), ex.response())
        if isinstance(ex, _InvalidClientInput):  # a malformed or stalled body (pywsgi then closes)
            self._log_client_error(str(ex) or type(ex).__name__)
            return None
        if isinstance(ex, TimeoutError):
            self._log_client_error(str(ex))
            return ("408", _HEAD_TIMEOUT_RESPONSE)
        if isinstance(ex, OSError):
            return None  # the peer left
        self._logger().error("Cannot parse the request head from %s", self._peer(), exc_info=ex)
        return ("400", error_response(400, "Bad request"))

    def _log_client_error(self, reason: str) -> None:
        self._logger().info("Bad request from %s: %s", self._peer(), reason)

    def _log_error(self, t: type[BaseException], v: BaseException, tb: Any) -> None:
        # pywsgi hands application errors to the hub, which prints them: log them instead.
        if not issubclass(t, GreenletExit):
            self._logger().error("Error handling %s from %s", quote(self.requestline or ""), self._peer(), exc_info=v)

    def _logger(self) -> logging.Logger:
        logger: logging.Logger = getattr(self.server, "geventws_logger", None) or _logger
        return logger

    client_address: Any

    def _peer(self) -> str:
        return _format_peer(self.client_address)

    def get_environ(self) -> dict[str, Any]:
        """The environ pywsgi would build, with a bounded ``wsgi.input`` and the :class:`~.transport.Transport`.

        Built here from the parsed head rather than by pywsgi, which looks each
        header up again and builds an input of its own only to have it replaced.
        """
        self._arm(None, "")  # the head is complete: the application has all the time it needs
        self._served += 1
        head: RequestHead = self.headers
        environ: dict[str, Any] = self.server.get_environ()
        environ["REQUEST_METHOD"] = head.method
        environ["SCRIPT_NAME"] = ""
        path, _, query = head.target.partition("?")
        environ["PATH_INFO"] = unquote_latin1(path) if "%" in path else path
        environ["QUERY_STRING"] = query
        environ["SERVER_PROTOCOL"] = head.version
        address = self.client_address
        if isinstance(address, tuple):
            environ["REMOTE_ADDR"] = str(address[0])
            environ["REMOTE_PORT"] = str(address[1])
        _add_headers(environ, head.headers)
        if self.content_length is None and not head.chunked:
            self.wsgi_input = NO_BODY
        else:
            continue_socket = self.socket if environ.get("HTTP_EXPECT", "").lower() == "100-continue" else None
            timeout = getattr(self.server, "body_timeout", DEFAULT_BODY_TIMEOUT)
            self.wsgi_input = BodyInput(self.rfile, self.content_length, continue_socket, head.chunked, timeout, self)
        # A body is read through the bounded input even on an upgrade request: the socket
        # itself is handed over through the Transport.
        environ["wsgi.input"] = self.wsgi_input
        environ["wsgi.input_terminated"] = True
        self._transport = environ[TRANSPORT_KEY] = Transport(self, self.server.application)
        return environ

    def handle_one_request(self) -> Any:
        """One request; a client handler left for after the response (see :class:`~.transport.Transport`) runs here."""
        try:
            result = super().handle_one_request()
        finally:
            self._end_transport()
        serve = self._serve_after
        if serve is None:
            return result
        # The server runs it once this handler is gone (serve_upgraded); pywsgi must
        # neither read from nor close the socket on its way out: it is the client's now.
        self.__dict__.clear()
        self.upgraded = serve
        self.socket = None
        return None  # the HTTP side of the connection is over

    def _end_transport(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.release()
            self.environ.pop(TRANSPORT_KEY, None)  # the environ may live on with the connection

    def _arm(self, seconds: float | None, reason: str) -> None:
        """Throw ``TimeoutError(reason)`` into this greenlet in ``seconds`` (``None``: never), replacing the last one.

        A bare timer of the loop, as ``gevent.Timeout`` arms one, without the
        ``Timeout`` object around it (a third of the cost of arming it).
        """
        timer = self._head_deadline
        if timer is not None:
            timer.close()
            self._head_deadline = None
        if seconds is not None:
            # A TimeoutError is an OSError: pywsgi drops the connection quietly.
            timer = self.server.loop.timer(seconds, ref=True, priority=-1)
            timer.start(getcurrent().throw, TimeoutError(reason))
            self._head_deadline = timer

    def handle(self) -> None:
        """Serve the connection's requests; the head deadline never outlives it."""
        try:
            super().handle()
        finally:
            self._arm(None, "")

    def _write_101(self, headers: list[tuple[str, str]]) -> None:
        """Send the 101 as pywsgi would through ``start_response`` and ``write``, with less work.

        Header names and values are checked as pywsgi checks them (no CR or
        LF: a header cannot be injected), and a ``Date`` is added.
        """
        lines = ["HTTP/1.1 101 Switching Protocols\r\n"]
        for name, value in headers:
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise ValueError(f"carriage return or newline in header {name!r}")
            lines.append(f"{name}: {value}\r\n")
        lines.append(f"Date: {_http_date()}\r\n\r\n")
        self.status = _STATUS_101.encode("latin-1")
        self._orig_status = _STATUS_101
        self.code = 101
        self.response_headers = headers
        self.headers_sent = True
        data = "".join(lines).encode("latin-1")
        sock = self.socket
        # A new connection's send buffer takes the 101 at once: one send on the OS
        # socket, without gevent's sendall (its loop, and a getsockopt each time).
        sent = send_nowait(sock._sock, (data,)) if type(sock) is gevent.socket.socket else 0
        if sent < len(data):
            self._sendall(data[sent:])
        self.response_length += sent

    def _hand_over(self) -> bytes:
        """End the HTTP side of the connection once the 101 is out; returns what the reader held already."""
        leftover = take_buffered(self.rfile, self.socket)
        # Keep-alive ends here: the bytes that follow are WebSocket frames.
        self.close_connection = True
        # Let the buffered reader go (see Transport.take_over); a closed one ends pywsgi's request loop.
        self.rfile = _CLOSED_READER
        self.wsgi_input.end()  # still the environ's wsgi.input, now empty
        # The access line is written now, when the upgrade happens: pywsgi would
        # write it when the request returns, that is when the connection ends.
        self._orig_status = _STATUS_101
        self.time_finish = time.time()
        self.log_request()
        self._upgrade_logged = True
        # Logged: the head and the response headers are of no more use, however long the connection lasts.
        self.__dict__.pop("headers", None)
        self.__dict__.pop("response_headers", None)
        return leftover

    def log_request(self) -> None:
        """Write the access line, once (an upgraded request was logged at take-over), unless no one would see it."""
        if self._upgrade_logged:
            return
        access_logger: logging.Logger | None = getattr(self.server, "access_logger", None)
        if access_logger is not None and not access_logger.isEnabledFor(ACCESS_LOG_LEVEL):
            return  # formatting the line costs more than parsing a handshake's head
        super().log_request()

    def format_request(self) -> str:
        """The access line, naming the client address the application saw, with the request line cut to 200 chars."""
        line = self.requestline
        if line and len(line) > _LOGGED_LINE_LIMIT:
            self.requestline = f"{line[:_LOGGED_LINE_LIMIT]}..."
        try:
            return self._format_request_as_seen()
        finally:
            self.requestline = line

    def _format_request_as_seen(self) -> str:
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


def serve_upgraded(server: Any, sock: Any, address: Any) -> None:
    """A connection's requests (``server.handler_class``), then the WebSocket one of them left to run after them.

    The handler object and its frames are gone by then: an idle connection's
    greenlet keeps the client handler's frames and what they hold (about 250
    bytes less each, ``bench/quiet.py idle``).
    """
    handler = server.handler_class(sock, address, server)
    handler.handle()
    serve = getattr(handler, "upgraded", None)
    if serve is None:
        return
    del handler
    try:
        serve()
    except Exception:  # as pywsgi would for an application error: logged, never printed
        logger: logging.Logger = getattr(server, "geventws_logger", None) or _logger
        logger.exception("Error serving the upgraded connection from %s", _format_peer(address))


def _format_peer(address: Any) -> str:
    return str(address[0]) if isinstance(address, tuple) and address else str(address or "-")
