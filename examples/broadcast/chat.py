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
    HistoryGap,
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


#: Messages kept for pages that reconnect: at 100 bytes a chat line, about 100 KiB.
HISTORY = 1000


class ClientHandler(WebsocketClientHandler):
    """Each line sent to the page is ``"<offset> <sender id>: <text>"``; lines of the server start with ``"* "``.

    A page that comes back after a drop connects with ``?since=<the last offset it saw>``
    and first gets what it missed, then ``"* caught up"``.
    """

    def __init__(self, gateway: WebsocketGateway | None = None) -> None:
        self.gateway = gateway or WebsocketClientGateway(history=HISTORY)

    def handle_client(self, client: WebsocketClient, request: Request, response: Response) -> None:
        since = request.args.get("since")
        if since is None:
            self.gateway.add_client(client)
        else:
            try:
                self.gateway.add_client(client, since=since)
                self.gateway.send_text("* caught up", client.id)  # after the missed ones: same outbox
            except HistoryGap as gap:
                self.gateway.add_client(client)
                self.gateway.send_text(f"* some messages are lost ({gap.reason})", client.id)

        for message in client:
            text = f"{client.id}: {message}"
            self.gateway.broadcast_text(lambda offset, text=text: f"{offset} {text}")


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
