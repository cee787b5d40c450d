"""An echo server for the Autobahn|Testsuite: compression on, limits raised for the 9.* cases.

python examples/autobahn/server.py [port]      (default 9001)
"""

from gevent import monkey

monkey.patch_all()  # first: every blocking call in a handler must yield to the other greenlets

import logging
import signal
import sys

from geventws import (
    Rfc6455ClientFactory,
    Rfc7692CompressionFactory,
    Server,
    Websocket,
    WebsocketClient,
    trap_signal,
)

logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
logger = logging.getLogger("autobahn")


def echo(client: WebsocketClient, request: object, response: object) -> None:
    for message in client:
        data = message.buffer()
        if isinstance(data, str):
            client.send_text(data)
        else:
            client.send_binary(data)


port = int(sys.argv[1]) if len(sys.argv) > 1 else 9001
server = Server(logger)
server.expose(("127.0.0.1", port))
client_factory = Rfc6455ClientFactory(
    message_size_limit=64 * 1024 * 1024,
    compressed_message_size_limit=64 * 1024 * 1024,
    heartbeat=None,
    rate_limit=None,
)
websocket = Websocket(
    server, logger, None, echo, compression_factory=Rfc7692CompressionFactory(), client_factory=client_factory
)
server.start(websocket)
trap_signal([signal.SIGINT, signal.SIGTERM])
server.stop()
