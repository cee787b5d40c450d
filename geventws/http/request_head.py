"""Strict parsing of an HTTP/1.x request head, on h11.

pywsgi's own parser is lenient where a proxy in front of the server may read
the same bytes differently, which is what request smuggling feeds on: it takes
the first of two ``Transfer-Encoding`` headers, treats ``gzip, chunked`` or
``xchunked`` as no body, keeps the last of two different ``Content-Length``
values, accepts ``Content-Length: +5``, hands obs-folded lines, NUL bytes and
bare CRs to the application, silently drops every header after a line without
a colon, and joins two ``Host`` headers.  h11 refuses each of these (400, or
501 for a transfer coding other than ``chunked``); this module adds what h11
resolves instead of refusing (``Content-Length`` together with
``Transfer-Encoding``: 400), what it lets through (control characters other
than HTAB in a field value, which RFC 9110 section 5.5 excludes from
field-value: 400) and a cap on the number of header fields.

The server closes the connection after any of these errors: once framing is in
doubt, nothing that follows on the connection can be trusted to be a request.

Most heads (every WebSocket handshake) are plain: ``\\r\\n`` line ends, no
folded lines, no body framing, one ``Host``.  Those are parsed by
``_parse_plain`` with h11's own grammar, in a tenth of the time h11's
state machine takes (about 67 µs a handshake, an eighth of the server's CPU per
handshake in the ``idle`` cell of ``bench/run.py``); it returns the very
``RequestHead`` h11 would give and leaves every other head, including
every head h11 refuses, to h11.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import h11
from werkzeug.http import HTTP_STATUS_CODES

#: Header fields per request, as Python's http.client allows; more get 431.
MAX_HEADER_FIELDS = 100
#: How much of a client's input a log line or an error body quotes.
QUOTE_LIMIT = 120


class BadRequestHead(ValueError):
    """The request head is malformed or ambiguous; ``status`` is the HTTP status it earns."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def response(self) -> bytes:
        """The complete error response, which also announces that the connection closes."""
        return error_response(self.status, self.reason)


def error_response(status: int, reason: str) -> bytes:
    """A minimal ``Connection: close`` response with ``reason`` as its plain-text body."""
    body = f"{reason}\n".encode("latin-1", "replace")
    phrase = HTTP_STATUS_CODES.get(status, "Error")
    return (
        f"HTTP/1.1 {status} {phrase}\r\nConnection: close\r\nContent-Type: text/plain; charset=latin-1\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1") + body


def quote(text: str | bytes, limit: int = QUOTE_LIMIT) -> str:
    """``text`` for a log line or an error body: repr'd, and cut to ``limit`` characters."""
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[:limit]}... ({len(text)} chars)"


@dataclass
class RequestHead:
    """A request head that passed h11's checks, with the accessors pywsgi's handler reads.

    ``headers`` keeps the names as sent (values decoded as latin-1, as WSGI wants).
    """

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    content_length: int | None
    chunked: bool
    keep_alive: bool
    status: str = ""  # pywsgi checks this attribute of its header object

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive), like ``email.message.Message.get``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return default

    getheader = get

    def items(self) -> list[tuple[str, str]]:
        """Every ``(name, value)`` pair, in order (gunicorn's access log reads them)."""
        return list(self.headers)

    @property
    def typeheader(self) -> str | None:
        """The ``Content-Type`` value, as pywsgi reads it."""
        return self.get("content-type")


def parse_request_head(data: bytes) -> RequestHead:
    """Parse a whole request head (request line to the empty line), or raise :class:`BadRequestHead`."""
    return _parse_plain(data) or _parse_with_h11(data)


# h11's grammar (h11/_abnf.py), which these patterns must match exactly: a head
# _parse_plain accepts is one h11 accepts, with the same fields.  One
# difference: a field character is RFC 9110's (VCHAR or obs-text), where h11
# also takes the control characters; heads with one go to h11, then get 400.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_FIELD_VCHAR = rb"[\x21-\x7e\x80-\xff]"
_FIELD_CONTENT = _FIELD_VCHAR + rb"+(?:[ \t]+" + _FIELD_VCHAR + rb"+)*"
_REQUEST_LINE = re.compile(b"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/(1\.[01])")
_HEADER_FIELD = re.compile(b"(" + _TOKEN + rb"):[ \t]*((?:" + _FIELD_CONTENT + rb")?)[ \t]*")
#: Headers whose every use h11 checks further: heads carrying them go to h11.
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
#: Fields whose values most clients of one server send alike: decoded once, then shared by every
#: request's environ (an idle WebSocket keeps its environ; about 250 bytes less each, ``bench/quiet.py idle``).
_SHARED_FIELDS = frozenset(
    {
        b"host",
        b"upgrade",
        b"connection",
        b"origin",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"user-agent",
        b"accept-encoding",
        b"accept-language",
        b"cache-control",
        b"pragma",
    }
)
#: Bounded both ways, so that distinct values (a scan, a hostile client) cannot grow it: at most
#: this many values of at most this many bytes; others are decoded for their request alone.
_SHARED_VALUES_LIMIT = 512
_SHARED_VALUE_SIZE = 128
_shared_values: dict[bytes, str] = {}
#: Control characters h11 lets through in a field value (HTAB is allowed; NUL, CR and LF h11 refuses itself).
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _parse_plain(data: bytes) -> RequestHead | None:
    """The head of a plain request, or ``None`` for anything else (h11 then decides)."""
    if not data.endswith(b"\r\n\r\n"):
        return None
    lines = data[:-4].split(b"\r\n")
    request = _REQUEST_LINE.fullmatch(lines[0])
    if request is None:
        return None
    method, target, version = request.groups()
    headers: list[tuple[str, str]] = []
    hosts = 0
    close = keep_alive_asked = False
    for line in lines[1:]:
        field = _HEADER_FIELD.fullmatch(line)
        if field is None:
            return None  # obs-fold, a bad name or value: h11 folds or refuses
        name, value = field.groups()
        lowered = name.lower()
        if lowered in _FRAMING:
            return None
        if lowered == b"host":
            hosts += 1
        elif lowered == b"connection":
            close, keep_alive_asked = _connection_tokens(value, close, keep_alive_asked)
        if lowered in _SHARED_FIELDS:
            text = _shared_values.get(value) or _shared_value(value)  # a value seen before without a call
        else:
            text = value.decode("latin-1")
        headers.append((name.decode("latin-1"), text))
    if hosts > 1 or (hosts == 0 and version == b"1.1"):
        return None  # h11 says which Host rule is broken
    return RequestHead(
        method=method.decode("ascii"),
        target=target.decode("latin-1"),
        version="HTTP/1.1" if version == b"1.1" else "HTTP/1.0",
        headers=headers,
        content_length=None,
        chunked=False,
        keep_alive=not close and (version == b"1.1" or keep_alive_asked),
    )


def _shared_value(value: bytes) -> str:
    text = _shared_values.get(value)
    if text is None:
        text = value.decode("latin-1")
        if len(value) <= _SHARED_VALUE_SIZE and len(_shared_values) < _SHARED_VALUES_LIMIT:
            _shared_values[value] = text
    return text


def _connection_tokens(value: bytes, close: bool, keep_alive_asked: bool) -> tuple[bool, bool]:
    """``close`` and ``keep_alive_asked`` updated with one ``Connection`` header's tokens."""
    tokens = {token.strip().lower() for token in value.split(b",")}
    return close or b"close" in tokens, keep_alive_asked or b"keep-alive" in tokens


def _parse_with_h11(data: bytes) -> RequestHead:
    """Any head, through h11's state machine: its checks and its error statuses."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=len(data) + 1)
    connection.receive_data(data)
    try:
        event = connection.next_event()
    except h11.RemoteProtocolError as error:
        raise BadRequestHead(error.error_status_hint, f"Bad request head: {quote(str(error))}") from None
    if not isinstance(event, h11.Request):
        raise BadRequestHead(400, "Incomplete request head")
    if event.http_version not in (b"1.0", b"1.1"):
        raise BadRequestHead(505, "HTTP/1.0 and HTTP/1.1 only")
    content_length: int | None = None
    chunked = False
    close = keep_alive_asked = False
    raw_items = event.headers.raw_items()  # one list; iterating the Headers sequence costs a call per item
    for raw_name, value in raw_items:
        if _CONTROL.search(value) is not None:
            raise BadRequestHead(400, f"Control character in header field {quote(raw_name.decode('latin-1'))}")
        name = raw_name.lower()
        if name == b"content-length":
            content_length = int(value)  # h11 checked it: digits only, one value
        elif name == b"transfer-encoding":
            chunked = True  # h11 accepts "chunked" alone, once
        elif name == b"connection":
            close, keep_alive_asked = _connection_tokens(value, close, keep_alive_asked)
    if chunked and content_length is not None:
        raise BadRequestHead(400, "Both Content-Length and Transfer-Encoding")
    version = event.http_version.decode("ascii")
    return RequestHead(
        method=event.method.decode("ascii"),
        target=event.target.decode("latin-1"),
        version=f"HTTP/{version}",
        headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw_items],
        content_length=content_length,
        chunked=chunked,
        keep_alive=not close and (version == "1.1" or keep_alive_asked),
    )
