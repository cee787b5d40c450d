"""The broadcast chat: every message a browser sends is shown to everyone.

Run it with ``make run`` and open http://127.0.0.1:1337 in a few browser tabs.
"""

from gevent import monkey

monkey.patch_all()  # first: every blocking call in a handler must yield to the other greenlets

import logging
import signal
import sys
from pathlib import Path

from chat import ClientHandler  # the chat's handler, with its room history

from geventws import (
    AllowOriginAcceptor,
    DefaultErrorHandler,
    DocumentRoot,
    Rfc7692CompressionFactory,
    Router,
    Server,
    Websocket,
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
