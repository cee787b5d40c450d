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
``Transfer-Encoding``: 400) and a cap on the number of header fields.

The server closes the connection after any of these errors: once framing is in
doubt, nothing that follows on the connection can be trusted to be a request.
"""

from __future__ import annotations

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
        name = raw_name.lower()
        if name == b"content-length":
            content_length = int(value)  # h11 checked it: digits only, one value
        elif name == b"transfer-encoding":
            chunked = True  # h11 accepts "chunked" alone, once
        elif name == b"connection":
            tokens = {token.strip().lower() for token in value.split(b",")}
            close = close or b"close" in tokens
            keep_alive_asked = keep_alive_asked or b"keep-alive" in tokens
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
