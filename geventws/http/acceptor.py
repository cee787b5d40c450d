"""Deciding whether a handshake request is accepted, before anything is written.

An acceptor answers a werkzeug :class:`~werkzeug.wrappers.Request` with a
:class:`~werkzeug.wrappers.Response`: a 101 accepts the upgrade, anything else
is sent as an ordinary HTTP response and the connection is closed.  Acceptors
compose: :class:`AllowOriginAcceptor` and :class:`SameOriginAcceptor` check the
origin, then ask the acceptor they wrap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, Union
from urllib.parse import urlsplit

from werkzeug.datastructures import Headers
from werkzeug.sansio.utils import get_content_length
from werkzeug.wrappers import Request, Response

from ..protocol.handshake import accept_key, is_valid_key, split_tokens
from .error_handler import DefaultErrorHandler, ErrorHandler

__all__ = [
    "AllowOriginAcceptor",
    "Rfc6455Acceptor",
    "SameOriginAcceptor",
    "WebsocketAcceptor",
    "accept_key",
    "header_tokens",
    "normalize_origin",
    "request_origin",
]

#: Chooses one of the offered subprotocols (or none) for a request.
SubprotocolSelector = Callable[[Request, Sequence[str]], Union[str, None]]


class _SwitchingProtocols(Response):
    """A 101: no body, so no ``Content-Type`` and no body list of its own.

    Every idle connection keeps its 101 (the handler is given it), so what it
    does not hold is saved once per connection.
    """

    default_mimetype = None

    def __init__(self) -> None:
        # What werkzeug's __init__ would set, less its search for a Content-Type
        # header, which a new response has not: werkzeug answers that with a
        # BadRequestKeyError raised and caught, about a tenth of a handshake.
        # tests/test_acceptor.py checks this against werkzeug's own.
        self.headers = Headers()
        self.status = "101 SWITCHING PROTOCOLS"  # as werkzeug spells it, one string for every response
        self.response = ()
        self.direct_passthrough = False
        self._on_close = []


class WebsocketAcceptor(Protocol):
    """Decides on a handshake before anything is written."""

    def handle_handshake(self, request: Request) -> Response:
        """A 101 to accept, or the error response to send (the connection is then closed)."""
        ...


def header_tokens(request: Request, name: str) -> list[str]:
    """The comma-separated tokens of every ``name`` header, stripped, in order.

    WSGI servers join repeated headers with commas in the environ, so one
    ``get`` (a dict lookup) sees them all; werkzeug's ``getlist`` would scan
    the whole environ for each header, a cost every handshake pays.
    """
    return split_tokens(request.headers.get(name))


def _has_token(value: str | None, token: str) -> bool:
    """Whether the comma-separated ``value`` holds ``token`` (``token`` in lower case; the match ignores case)."""
    return value is not None and token in split_tokens(value.lower())


class Rfc6455Acceptor:
    """Checks a request against RFC 6455 section 4.2.1 and answers 101 or the specific error.

    ``subprotocols`` is the list of supported subprotocols in order of
    preference (the first the client also offers wins), or a callable
    ``(request, offered) -> str | None``.  A client offering none that fits
    is still accepted, without ``Sec-WebSocket-Protocol``: RFC 6455 leaves it to
    the client to go on or not.
    """

    def __init__(
        self,
        subprotocols: Iterable[str] | SubprotocolSelector | None = None,
        error_handler: ErrorHandler | None = None,
    ) -> None:
        if subprotocols is None or callable(subprotocols):
            self._select: SubprotocolSelector | None = subprotocols
        else:
            self._select = _preference_selector(list(subprotocols))
        self._error_handler = error_handler or DefaultErrorHandler()

    def handle_handshake(self, request: Request) -> Response:
        """101 with ``Sec-WebSocket-Accept`` (and the subprotocol), or the status RFC 6455 names for what is wrong."""
        error = self._check(request)
        if error is not None:
            return error
        response = _SwitchingProtocols()
        headers = response.headers
        # add, not set: the headers are new (set would look for each one first).
        headers.add("Upgrade", "websocket")
        headers.add("Connection", "Upgrade")
        headers.add("Sec-WebSocket-Accept", accept_key(request.environ["HTTP_SEC_WEBSOCKET_KEY"].strip()))
        subprotocol = self._select_subprotocol(request)
        if subprotocol is not None:
            headers.add("Sec-WebSocket-Protocol", subprotocol)
        return response

    def _check(self, request: Request) -> Response | None:
        # The environ, not request.headers: each header lookup there costs a
        # key translation, and every handshake makes eight of them.
        environ = request.environ
        if request.method != "GET":
            response = self._error(405, "WebSocket handshakes use GET", request)
            response.headers["Allow"] = "GET"
            return response
        if environ.get("SERVER_PROTOCOL") != "HTTP/1.1":
            return self._error(505, "WebSocket handshakes need HTTP/1.1", request)
        if "HTTP_TRANSFER_ENCODING" in environ or get_content_length(environ.get("CONTENT_LENGTH")):
            return self._error(400, "A WebSocket handshake has no body", request)
        if not _has_token(environ.get("HTTP_UPGRADE"), "websocket"):
            return self._upgrade_required('"Upgrade: websocket" header missing', request)
        if not _has_token(environ.get("HTTP_CONNECTION"), "upgrade"):
            return self._upgrade_required('"Connection: Upgrade" header missing', request)
        if not is_valid_key(environ.get("HTTP_SEC_WEBSOCKET_KEY")):
            return self._error(400, "Sec-WebSocket-Key missing or not the base64 of 16 bytes", request)
        version = environ.get("HTTP_SEC_WEBSOCKET_VERSION", "").strip()
        if version != "13":
            status = 400 if not version else 426
            response = self._error(status, "Only WebSocket version 13 is supported", request)
            response.headers["Sec-WebSocket-Version"] = "13"
            return response
        return None

    def _select_subprotocol(self, request: Request) -> str | None:
        if self._select is None:
            return None
        offered = split_tokens(request.environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL"))
        if not offered:
            return None
        selected = self._select(request, offered)
        if selected is not None and selected not in offered:
            raise ValueError(f"Subprotocol selector chose {selected!r}, which the client did not offer")
        return selected

    def _upgrade_required(self, reason: str, request: Request) -> Response:
        response = self._error(426, reason, request)
        response.headers["Upgrade"] = "websocket"
        return response

    def _error(self, status: int, reason: str, request: Request) -> Response:
        return self._error_handler.handle_error(status, reason, request)


def _preference_selector(supported: list[str]) -> SubprotocolSelector:
    def select(request: Request, offered: Sequence[str]) -> str | None:
        return next((protocol for protocol in supported if protocol in offered), None)

    return select


class AllowOriginAcceptor:
    """Refuses (403) requests whose ``Origin`` is missing or not one of ``origins``.

    Browsers always send ``Origin``; checking it is what keeps other sites'
    pages from opening connections with the user's cookies.
    """

    def __init__(
        self,
        origins: Iterable[str],
        acceptor: WebsocketAcceptor | None = None,
        error_handler: ErrorHandler | None = None,
    ) -> None:
        self._origins = frozenset(origin.lower().rstrip("/") for origin in origins)
        self._acceptor = acceptor or Rfc6455Acceptor(error_handler=error_handler)
        self._error_handler = error_handler or DefaultErrorHandler()

    def handle_handshake(self, request: Request) -> Response:
        """403 "Origin forbidden" unless the ``Origin`` is allowed; otherwise the wrapped acceptor's answer."""
        origin = request.environ.get("HTTP_ORIGIN", "").strip().lower()
        if origin not in self._origins:
            return self._error_handler.handle_error(403, "Origin forbidden", request)
        return self._acceptor.handle_handshake(request)


#: The port a scheme implies, dropped from origins so that ``http://a:80`` is ``http://a``.
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: A WebSocket URL's scheme as the origin of the page that would use it.
_HTTP_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}

_logger = logging.getLogger("geventws.acceptor")


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port, or ``None`` for no usable origin.

    ``None`` for ``null`` (sandboxed frames, ``file:`` pages), for schemes other
    than http(s), and for anything with a path, credentials or a bad port.
    """
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = _HTTP_SCHEMES.get(parts.scheme.lower())
    host = parts.hostname
    if scheme is None or not host or parts.username is not None or parts.password is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address, as it is written in a URL
    return f"{scheme}://{host}" if port is None or port == _DEFAULT_PORTS[scheme] else f"{scheme}://{host}:{port}"


def request_origin(request: Request) -> str | None:
    """The request's own origin as the application sees it: its scheme and ``Host``.

    Behind a proxy that is what werkzeug's ``ProxyFix`` made of the
    ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` (and ``-Port``) headers.
    """
    return normalize_origin(f"{request.scheme}://{request.host}")


class SameOriginAcceptor:
    """Accepts a handshake from the request's own origin or without ``Origin``; 403 for every other origin.

    A browser always sends ``Origin``; a page of the site itself sends the
    site's origin, which is the handshake's own scheme and ``Host`` (see
    :func:`~geventws.http.acceptor.request_origin`).  Any other origin is another site's page, which
    would otherwise connect with the user's cookies (cross-site WebSocket
    hijacking).  A handshake without ``Origin`` does not come from a browser
    and is accepted: non-browser clients can send any ``Origin`` anyway.

    ``origins`` are allowed too (``"*"`` among them allows every origin).  Each
    refusal is one WARNING on ``logger`` naming the origin and the option that
    would allow it, so a proxy that hides the public host from the app shows
    at once.
    """

    def __init__(
        self,
        acceptor: WebsocketAcceptor | None = None,
        *,
        origins: Iterable[str] = (),
        error_handler: ErrorHandler | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        allowed = [origins] if isinstance(origins, str) else list(origins)
        self.allow_all = "*" in allowed
        self.origins = frozenset(filter(None, map(normalize_origin, allowed)))
        self._acceptor = acceptor or Rfc6455Acceptor(error_handler=error_handler)
        self._error_handler = error_handler or DefaultErrorHandler()
        self._logger = logger or _logger

    def handle_handshake(self, request: Request) -> Response:
        """403 "Origin forbidden" unless ``Origin`` is absent, the request's own or listed; else the inner answer."""
        origin = request.environ.get("HTTP_ORIGIN")
        if origin is None or self.allow_all:
            return self._acceptor.handle_handshake(request)
        normalized = normalize_origin(origin)
        own = request_origin(request)
        if normalized is None or (normalized != own and normalized not in self.origins):
            self._logger.warning(
                "WebSocket handshake on %s refused: Origin %r is not this site's (%s); "
                'allow it with origins=[%r] (or origins="*" for any origin)',
                request.path,
                origin[:120],
                own,
                origin[:120],
            )
            return self._error_handler.handle_error(403, "Origin forbidden", request)
        return self._acceptor.handle_handshake(request)
