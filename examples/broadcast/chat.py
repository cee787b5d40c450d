"""The broadcast chat of ``server.py`` as an importable WSGI app: for ``geventws serve`` and for tests.

From the repository root::

    geventws serve examples.broadcast.chat:app --bind 127.0.0.1:1337 --bind [::1]:1337

``server.py`` builds the same app and runs it with a script of its own.
"""

import logging
from pathlib import Path

from werkzeug.wrappers import Request, Response

from geventws import (
    AllowOriginAcceptor,
    DefaultErrorHandler,
    DocumentRoot,
    Rfc7692CompressionFactory,
    Router,
    Websocket,
    WebsocketClient,
    WebsocketClientGateway,
    WebsocketClientHandler,
    WebsocketGateway,
)

logger = logging.getLogger("chat")

#: The pages allowed to open the chat: the ones this app serves on port 1337.
ORIGINS = ["http://localhost:1337", "http://127.0.0.1:1337", "http://[::1]:1337"]


class ClientHandler(WebsocketClientHandler):
    def __init__(self, gateway: WebsocketGateway | None = None) -> None:
        self.gateway = gateway or WebsocketClientGateway()

    def handle_client(self, client: WebsocketClient, request: Request, response: Response) -> None:
        self.gateway.add_client(client)

        for message in client:
            self.gateway.broadcast_text(f"{client.id}: {message}")


def create_app(origins: list[str] = ORIGINS) -> Router:
    """The chat on ``/broadcast`` and its page on ``/``; no server needed, whichever serves it."""
    error_handler = DefaultErrorHandler()
    websocket = Websocket(
        None,
        logger,
        AllowOriginAcceptor(origins),
        ClientHandler(),
        compression_factory=Rfc7692CompressionFactory(),  # browsers offer it, and chat text compresses well
    )
    router = Router(logger, error_handler)
    router.add_route("GET", "/broadcast", websocket)
    router.set_fallback(DocumentRoot(Path(__file__).parent / "public", error_handler=error_handler))
    return router


app = create_app()
