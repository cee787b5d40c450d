"""What runs a connection once it is accepted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol, Union

from werkzeug.wrappers import Request, Response

if TYPE_CHECKING:
    from ..connection.client import WebsocketClient


class WebsocketClientHandler(Protocol):
    """Runs in the connection's own greenlet for the life of the connection.

    Returning closes with 1000; raising closes with 1011 (and logs the
    traceback); :class:`~geventws.WebsocketClosedException` is the normal way
    out when the peer has gone and is not logged.
    """

    def handle_client(self, client: WebsocketClient, request: Request, response: Response) -> None:
        """Serve ``client`` until it closes; ``request`` and ``response`` are the handshake's."""
        ...


ClientHandler = Union[WebsocketClientHandler, Callable[["WebsocketClient", Request, Response], None]]


def as_callable(handler: ClientHandler) -> Callable[[WebsocketClient, Request, Response], None]:
    """Accept a handler object or a plain function with the same signature."""
    method = getattr(handler, "handle_client", None)
    if method is not None:
        return method  # type: ignore[no-any-return]
    if callable(handler):
        return handler
    raise TypeError(f"{handler!r} is neither a WebsocketClientHandler nor callable")
