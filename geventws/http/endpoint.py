"""The WebSocket endpoint: a WSGI app that upgrades accepted requests and runs the client handler.

Flow of one request: the acceptor judges the handshake
before anything is written, so a refusal is a normal HTTP response;
on acceptance compression is negotiated, the server's socket is taken over
(:mod:`.handover`) with the 101, and the client handler runs in this very
greenlet until the connection ends (under our server, when nothing wraps the
endpoint, just after the endpoint returns: see :meth:`.Handover.serve_later`).

Each connection is logged at INFO on the endpoint's logger when it is accepted
and when it has ended, with what an operator asks first: who, where, how it
closed and how much went each way.

Every endpoint joins a process-wide registry (weakly held) so a process that
is shutting down can close every client with 1001, including those of endpoints
made without a ``server`` (see :func:`close_all_websockets`).
"""

from __future__ import annotations

import logging
import socket
import time
import warnings
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Callable, Protocol

import gevent
from werkzeug.wrappers import Request, Response

from ..connection.client import WebsocketClient
from ..connection.client_factory import Rfc6455ClientFactory, WebsocketClientFactory
from ..protocol.close import CloseCode, WebsocketClosedException, WebsocketCloseInfo
from ..protocol.deflate import NegotiatedDeflate
from .acceptor import Rfc6455Acceptor, WebsocketAcceptor
from .client_handler import ClientHandler, as_callable
from .handover import UnsupportedServerError, find_handover

if TYPE_CHECKING:
    from .server import Server


#: The environ key of a connection upgraded before the app was called (by gevent-websocket's
#: handler, :mod:`geventws.compat.geventwebsocket`): an endpoint then runs its handler on it.
UPGRADED_KEY = "geventws.upgraded"


class CompressionFactory(Protocol):
    """Negotiates a compression extension (:class:`~geventws.Rfc7692CompressionFactory`)."""

    def negotiate(self, offers: str | None) -> tuple[str, NegotiatedDeflate] | None:
        """Answer a ``Sec-WebSocket-Extensions`` request header value: the response value and what was agreed."""
        ...


class Websocket:
    """A WSGI app serving WebSocket connections on whatever route it is mounted.

    It works under any gevent WSGI server (:mod:`.handover` takes the socket
    over in each server's own way) and behind any middleware that passes
    ``start_response`` on.  :meth:`handshake` and :meth:`upgrade` are the two
    halves of a call, for integrations that judge the handshake in their own
    dispatch (the Flask extension).

    ``server`` (optional) closes this endpoint's clients with 1001 when it
    stops; ``logger`` defaults to ``geventws.websocket``; ``acceptor`` to
    :class:`~geventws.Rfc6455Acceptor`; ``client_handler`` is a
    :class:`~geventws.WebsocketClientHandler` or a plain function with the
    same signature.  ``compression_factory`` turns on permessage-deflate
    (:class:`~geventws.Rfc7692CompressionFactory`); ``client_factory`` sets
    the limits, heartbeat and rate limit (:class:`~geventws.Rfc6455ClientFactory`).
    """

    def __init__(
        self,
        server: Server | None,
        logger: logging.Logger | None,
        acceptor: WebsocketAcceptor | None,
        client_handler: ClientHandler,
        *deprecated: Any,
        compression_factory: CompressionFactory | None = None,
        client_factory: WebsocketClientFactory | None = None,
    ) -> None:
        if deprecated:
            warnings.warn(
                "pass compression_factory and client_factory to Websocket() by keyword",
                DeprecationWarning,
                stacklevel=2,
            )
            compression_factory = deprecated[0]
            client_factory = deprecated[1] if len(deprecated) > 1 else client_factory
        self.logger = logger or logging.getLogger("geventws.websocket")
        self._acceptor = acceptor or Rfc6455Acceptor()
        self._handle_client = as_callable(client_handler)
        self._compression_factory = compression_factory
        self._client_factory = client_factory or Rfc6455ClientFactory()
        self._clients: set[WebsocketClient] = set()
        self._accepting = True
        self._client_callbacks: list[Callable[[WebsocketClient], Any]] = []
        self._log_closed_callback = self._log_closed  # one bound method for every client, not one each
        if server is not None:
            server.on_stop(self.close_all)
        _live_endpoints.add(self)

    @property
    def clients(self) -> frozenset[WebsocketClient]:
        """The clients connected through this endpoint right now."""
        return frozenset(self._clients)

    def on_client(self, callback: Callable[[WebsocketClient], Any]) -> None:
        """Call ``callback(client)`` for every accepted client, before its handler runs.

        For observers such as :mod:`geventws.metrics`; a callback that raises is logged, not fatal.
        """
        self._client_callbacks.append(callback)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Judge the handshake; on acceptance run the handler in this greenlet until the connection ends."""
        request = Request(environ)
        response = self.handshake(request)
        if response.status_code == 101:
            return self.upgrade(environ, start_response, request, response)
        response.headers["Connection"] = "close"
        return response(environ, start_response)

    def handshake(self, request: Request) -> Response:
        """The acceptor's answer to ``request`` (503 once the endpoint is shutting down); nothing is written yet."""
        response = self._acceptor.handle_handshake(request)
        if response.status_code == 101 and not self._accepting:
            response = Response("Server shutting down", status=503)
        return response

    def upgrade(
        self, environ: dict[str, Any], start_response: Callable[..., Any], request: Request, response: Response
    ) -> Iterable[bytes]:
        """Complete an accepted handshake and run the client handler until the connection ends.

        ``response`` is the 101 from :meth:`handshake` (other middleware may
        have added headers).  Returns what the WSGI app returns to the server.
        When the server cannot hand its socket over, answers 500 and logs
        which servers can.
        """
        upgraded = environ.get(UPGRADED_KEY)
        if upgraded is not None:
            return self._serve_upgraded(upgraded, request, response)
        try:
            handover = find_handover(environ, start_response, self)
        except UnsupportedServerError as error:
            self.logger.error("%s", error)
            refusal = Response("WebSocket upgrade not supported by this server (see the server log)", status=500)
            refusal.headers["Connection"] = "close"
            return refusal(environ, start_response)
        compression = self._negotiate_compression(request, response)
        try:
            sock, leftover = handover.upgrade(response.headers.to_wsgi_list())
        except OSError as error:
            self.logger.debug("Peer left during the handshake: %s", error)
            return handover.finish()
        client = self._client_factory.create_client(request, response, sock, leftover, compression)
        _disable_nagle(sock, client.remote_address)
        handover.adopt(client)
        _use_forwarded_address(client, environ)
        self._clients.add(client)
        self._log_accepted(client, request)
        client.on_close(self._log_closed_callback)
        if not handover.serve_later(_Accepted(self, client, request, response).serve):
            self._serve(client, request, response)
        return handover.finish()

    def _serve_upgraded(self, client: WebsocketClient, request: Request, response: Response) -> Iterable[bytes]:
        """Run the handler on a connection the server upgraded already (gevent-websocket's handler does)."""
        self._clients.add(client)
        try:
            self._run_handler(client, request, response)
        finally:
            self._clients.discard(client)
        return []

    def close_all(self, code: int = CloseCode.GOING_AWAY, reason: str = "Server shutting down") -> None:
        """Stop accepting and close every client at once; returns within the close period."""
        self._accepting = False
        closers = [gevent.spawn(client.close, code, reason) for client in list(self._clients)]
        gevent.joinall(closers)

    def _negotiate_compression(self, request: Request, response: Response) -> NegotiatedDeflate | None:
        if self._compression_factory is None:
            return None
        negotiated = self._compression_factory.negotiate(request.headers.get("Sec-WebSocket-Extensions"))
        if negotiated is None:
            return None
        header, agreed = negotiated
        response.headers["Sec-WebSocket-Extensions"] = header
        return agreed

    def _serve(self, client: WebsocketClient, request: Request, response: Response) -> None:
        """Start the client and run its handler until the connection ends; the client leaves the endpoint either way."""
        try:
            for callback in self._client_callbacks:
                try:
                    callback(client)
                except Exception:
                    self.logger.exception("on_client callback %r failed", callback)
            client.start()
            self._run_handler(client, request, response)
        finally:
            self._clients.discard(client)
            client.abort()

    def _run_handler(self, client: WebsocketClient, request: Request, response: Response) -> None:
        try:
            self._handle_client(client, request, response)
        except WebsocketClosedException:
            pass
        except Exception:
            self.logger.exception("Client handler failed for %r", client)
            client.close(CloseCode.UNEXPECTED_SERVER_ERROR, "Internal server error")
            return
        client.close(CloseCode.NORMAL_CLOSE)

    def _log_accepted(self, client: WebsocketClient, request: Request) -> None:
        if not self.logger.isEnabledFor(logging.INFO):
            return  # the arguments cost more to format than the check
        self.logger.info(
            "WebSocket #%d accepted from %s on %s (subprotocol %s, compression %s)",
            client.id,
            _format_address(client.remote_address),
            request.path,
            client.subprotocol or "none",
            "on" if client.is_compression_enabled else "off",
        )

    def _log_closed(self, client: WebsocketClient, info: WebsocketCloseInfo) -> None:
        stats = client.stats
        self.logger.info(
            "WebSocket #%d closed by %s with %d%s after %.3f s;"
            " received %d messages (%d bytes), sent %d messages (%d bytes)",
            client.id,
            "the peer" if info.by_peer else "the server",
            info.code,
            f" {info.reason!r}" if info.reason else "",
            max(0.0, (stats.closed or time.time()) - stats.connected),
            stats.messages_received,
            stats.bytes_received,
            stats.messages_sent,
            stats.bytes_sent,
        )


class _Accepted:
    """An accepted connection whose handler the server runs after the endpoint returned (see ``serve_later``).

    Two objects for the collector to track per idle connection, where a
    closure over the same four names takes six.
    """

    __slots__ = ("endpoint", "client", "request", "response")

    def __init__(self, endpoint: Websocket, client: WebsocketClient, request: Request, response: Response) -> None:
        self.endpoint = endpoint
        self.client = client
        self.request = request
        self.response = response

    def serve(self) -> None:
        """Run the client handler until the connection ends."""
        self.endpoint._serve(self.client, self.request, self.response)


_live_endpoints: weakref.WeakSet[Websocket] = weakref.WeakSet()


def close_all_websockets(code: int = CloseCode.GOING_AWAY, reason: str = "Server shutting down") -> None:
    """Close the clients of every live :class:`Websocket` in this process at once.

    For a process that is shutting down (``geventws serve`` calls it on
    SIGTERM): endpoints made without a ``server`` are not told by any
    ``Server.stop()``, yet their clients deserve a 1001 too.  Returns within
    the clients' close period.
    """
    closers = [gevent.spawn(endpoint.close_all, code, reason) for endpoint in list(_live_endpoints)]
    gevent.joinall(closers)


def _use_forwarded_address(client: WebsocketClient, environ: dict[str, Any]) -> None:
    """Name the peer as the application saw it: behind a proxy and werkzeug's
    ``ProxyFix``, ``REMOTE_ADDR`` is the forwarded client address, not the proxy's."""
    remote = environ.get("REMOTE_ADDR")
    peer = client.remote_address
    if not remote or (isinstance(peer, tuple) and peer[0] == remote):
        return
    try:
        port = int(environ.get("REMOTE_PORT") or 0)
    except ValueError:
        port = 0
    client.remote_address = (remote, port)


def _format_address(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address) or "unix socket"


def _disable_nagle(sock: socket.socket, peer: Any) -> None:
    """Frames go out whole with one sendall each; Nagle plus delayed ACKs would hold
    back the second of two frames by tens of milliseconds (as asyncio, we turn it off).

    Only TCP peers have a tuple for an address: asking the socket its family
    would cost an enum conversion on every handshake.
    """
    if isinstance(peer, tuple):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
