"""The broadcast chat: every message a browser sends is shown to everyone.

Run it with ``make run`` and open http://127.0.0.1:1337 in a few browser tabs.
"""

from gevent import monkey

monkey.patch_all()  # first: every blocking call in a handler must yield to the other greenlets

import logging
import signal
import sys
from pathlib import Path

from werkzeug.wrappers import Request, Response

from geventws import (
    AllowOriginAcceptor,
    DefaultErrorHandler,
    DocumentRoot,
    HistoryGap,
    Rfc7692CompressionFactory,
    Router,
    Server,
    Websocket,
    WebsocketClient,
    WebsocketClientGateway,
    WebsocketClientHandler,
    WebsocketGateway,
    trap_signal,
)

logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
logger = logging.getLogger("server")

server = Server(logger)

server.expose(("127.0.0.1", 1337))
server.expose(("::1", 1337))

error_handler = DefaultErrorHandler()

acceptor = AllowOriginAcceptor(
    ["http://localhost:1337", "http://127.0.0.1:1337", "http://[::1]:1337"],
)


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


# permessage-deflate: browsers offer it, and chat text compresses well.
websocket = Websocket(server, logger, acceptor, ClientHandler(), compression_factory=Rfc7692CompressionFactory())

router = Router(logger, error_handler)
router.add_route("GET", "/broadcast", websocket)
router.set_fallback(DocumentRoot(Path(__file__).parent / "public", error_handler=error_handler))

server.start(router)

# Await SIGINT or SIGTERM to be received.
signum = trap_signal([signal.SIGINT, signal.SIGTERM])

logger.info("Received signal %d, stopping HTTP server", signum)

server.stop()
