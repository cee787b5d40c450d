"""flask-sock (simple-websocket on wsproto) served by gevent's pywsgi, monkey-patched.

simple-websocket always accepts permessage-deflate when the client offers it, so
this server has no switch: the client decides (``--deflate`` is only recorded).
``receive_bytes`` stays at its default (4096).
"""

from gevent import monkey

monkey.patch_all()

import logging  # noqa: E402

import flask_sock  # noqa: E402
import gevent.socket  # noqa: E402
from _common import HOST, MESSAGE_LIMIT, broadcast_payload, broadcast_size, parse_args, ready  # noqa: E402
from flask import Flask  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402
from simple_websocket import ConnectionClosed  # noqa: E402

CLIENTS: set = set()

app = Flask(__name__)
app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": None, "max_message_size": MESSAGE_LIMIT}
sock = flask_sock.Sock(app)


@sock.route("/")
def echo(ws) -> None:  # type: ignore[no-untyped-def]
    CLIENTS.add(ws)
    try:
        while True:
            message = ws.receive()
            if message is None:
                break
            size = broadcast_size(message)
            if size is not None:
                payload = broadcast_payload(size)
                for other in list(CLIENTS):
                    if other is not ws:
                        try:  # noqa: SIM105 - cheaper than contextlib.suppress in the broadcast loop
                            other.send(payload)
                        except (ConnectionClosed, OSError):
                            pass
            else:
                ws.send(message)
    finally:
        CLIENTS.discard(ws)


def main() -> None:
    args = parse_args(__doc__)
    logging.basicConfig(level=logging.WARNING)
    listener = gevent.socket.create_server((HOST, args.port), backlog=1024)
    server = WSGIServer(listener, app, log=None)
    server.start()
    ready(server="flask-sock", version=getattr(flask_sock, "__version__", "?"), deflate="client-decides", loop="gevent")
    server.serve_forever()


if __name__ == "__main__":
    main()
