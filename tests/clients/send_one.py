"""A Python client library in its own process: sends one text message and reports what came back.

``python send_one.py LIBRARY URL SIZE`` (LIBRARY: ``websockets`` or ``aiohttp``)
sends ``SIZE`` bytes of random hex text with permessage-deflate offered and
prints one JSON line: ``extensions`` as negotiated, then either the echo
(``same``, ``length``, ``sha256`` of what was sent) or the server's close
(``code``, ``reason``).  ``ws_send.mjs`` is its Node twin.
"""

import asyncio
import hashlib
import json
import os
import sys
from typing import Any


def echoed(extensions: str, sent: str, received: str) -> dict[str, Any]:
    return {
        "extensions": extensions,
        "same": received == sent,
        "length": len(received),
        "sha256": hashlib.sha256(sent.encode()).hexdigest(),
    }


def with_websockets(url: str, sent: str) -> dict[str, Any]:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    # max_size=None: take an echo of any size (websockets' own limit is 1 MiB).
    with connect(url, compression="deflate", max_size=None, open_timeout=30, close_timeout=30) as ws:
        extensions = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        ws.send(sent)
        try:
            received = ws.recv(timeout=60)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, closed
            return {"extensions": extensions, "code": closed.rcvd.code, "reason": closed.rcvd.reason}
        assert isinstance(received, str)
        return echoed(extensions, sent, received)


async def with_aiohttp(url: str, sent: str) -> dict[str, Any]:
    import aiohttp

    # compress=15: offer permessage-deflate; max_msg_size=0: take an echo of any size.
    async with aiohttp.ClientSession() as session, session.ws_connect(url, compress=15, max_msg_size=0) as ws:
        extensions = "permessage-deflate" if ws.compress else ""
        await ws.send_str(sent)
        message = await ws.receive(timeout=60)
        if message.type is aiohttp.WSMsgType.TEXT:
            await ws.close()
            return echoed(extensions, sent, message.data)
        assert message.type is aiohttp.WSMsgType.CLOSE, message
        return {"extensions": extensions, "code": message.data, "reason": message.extra or ""}


def main(library: str, url: str, size: int) -> dict[str, Any]:
    sent = os.urandom(size // 2).hex()
    if library == "websockets":
        return with_websockets(url, sent)
    if library == "aiohttp":
        return asyncio.run(with_aiohttp(url, sent))
    raise SystemExit(f"unknown library {library!r}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
