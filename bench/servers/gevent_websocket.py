"""gevent-websocket's WebSocketHandler on gevent's pywsgi, monkey-patched.

It has no message size limit and no permessage-deflate: deflate cells skip it.
"""

from gevent import monkey

monkey.patch_all()

import logging  # noqa: E402

import gevent.socket  # noqa: E402
from _common import HOST, broadcast_payload, broadcast_size, parse_args, ready  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402
from geventwebsocket.exceptions import WebSocketError  # noqa: E402
from geventwebsocket.handler import WebSocketHandler  # noqa: E402

CLIENTS: set = set()


def app(environ, start_response):  # type: ignore[no-untyped-def]
    ws = environ.get("wsgi.websocket")
    if ws is None:
        start_response("400 Bad Request", [("Content-Type", "text/plain")])
        return [b"WebSocket only\n"]
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
                            other.send(payload, binary=True)
                        except (WebSocketError, OSError):
                            pass
            else:
                ws.send(message, binary=not isinstance(message, str))
    except (WebSocketError, OSError):
        pass
    finally:
        CLIENTS.discard(ws)
    return []


def main() -> None:
    args = parse_args(__doc__)
    logging.basicConfig(level=logging.WARNING)
    listener = gevent.socket.create_server((HOST, args.port), backlog=1024)
    server = WSGIServer(listener, app, handler_class=WebSocketHandler, log=None)
    server.start()
    ready(server="gevent-websocket", message_limit=None, deflate=False, loop="gevent")
    server.serve_forever()


if __name__ == "__main__":
    main()
