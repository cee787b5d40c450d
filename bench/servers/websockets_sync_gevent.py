"""websockets' threading server (websockets.sync.server) with gevent monkey-patching: threads are greenlets."""

from gevent import monkey

monkey.patch_all()

import logging  # noqa: E402

import websockets  # noqa: E402
from _common import HOST, MESSAGE_LIMIT, broadcast_payload, broadcast_size, parse_args, ready  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.server import ServerConnection, serve  # noqa: E402

CLIENTS: set[ServerConnection] = set()


def handler(ws: ServerConnection) -> None:
    CLIENTS.add(ws)
    try:
        for message in ws:
            size = broadcast_size(message)
            if size is not None:
                payload = broadcast_payload(size)
                for other in list(CLIENTS):
                    if other is not ws:
                        try:  # noqa: SIM105 - cheaper than contextlib.suppress in the broadcast loop
                            other.send(payload)
                        except ConnectionClosed:
                            pass
            else:
                ws.send(message)
    except ConnectionClosed:
        pass
    finally:
        CLIENTS.discard(ws)


def main() -> None:
    args = parse_args(__doc__)
    logging.basicConfig(level=logging.WARNING)
    with serve(
        handler,
        HOST,
        args.port,
        compression="deflate" if args.deflate else None,
        max_size=MESSAGE_LIMIT,
        ping_interval=None,
        backlog=1024,
    ) as server:
        ready(server="websockets.sync", version=websockets.__version__, deflate=args.deflate, loop="gevent")
        server.serve_forever()


if __name__ == "__main__":
    main()
