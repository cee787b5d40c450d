"""websockets' asyncio server (the baseline): stdlib asyncio loop, idiomatic ``broadcast()``.

``--uvloop`` runs the same server on uvloop, the speed-up websockets'
documentation recommends ("Performance": "You can make a websockets
application faster by running it with uvloop").
"""

from __future__ import annotations

import asyncio
import logging
import sys

import websockets
from _common import HOST, MESSAGE_LIMIT, broadcast_payload, broadcast_size, parse_args, ready
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

CLIENTS: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    CLIENTS.add(ws)
    try:
        async for message in ws:
            size = broadcast_size(message)
            if size is not None:
                broadcast(CLIENTS - {ws}, broadcast_payload(size))
            else:
                await ws.send(message)
    except ConnectionClosed:
        pass
    finally:
        CLIENTS.discard(ws)


UVLOOP = "--uvloop" in sys.argv
if UVLOOP:
    sys.argv.remove("--uvloop")


async def main() -> None:
    args = parse_args(__doc__)
    logging.basicConfig(level=logging.WARNING)
    async with serve(
        handler,
        HOST,
        args.port,
        compression="deflate" if args.deflate else None,
        max_size=MESSAGE_LIMIT,
        ping_interval=None,
        backlog=1024,
    ) as server:
        ready(
            server="websockets.asyncio",
            version=websockets.__version__,
            deflate=args.deflate,
            loop="uvloop" if UVLOOP else "asyncio",
        )
        await server.serve_forever()


if __name__ == "__main__":
    if UVLOOP:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
