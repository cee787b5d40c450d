"""picows (Cython) on uvloop: the upper reference, in the style of picows' own echo server example.

picows hands the application frames, not messages: this server echoes each
data frame as it comes (type, payload and FIN bit), which is the same echo for
every message of the matrix (the load generator sends each message in one
frame).  picows has no permessage-deflate, so the deflate cells skip it.
Broadcast loops over the connected transports with ``WSTransport.send``
(picows has no broadcast helper); the payload is framed once per client.
"""

from __future__ import annotations

import logging

import picows
import uvloop
from _common import HOST, MESSAGE_LIMIT, broadcast_payload, parse_args, ready
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server

CLIENTS: set[WSTransport] = set()
BROADCAST_PREFIX = b"broadcast:"


class EchoListener(WSListener):  # type: ignore[misc]
    """One connection: echo data frames, answer close, run the broadcast command."""

    def on_ws_connected(self, transport: WSTransport) -> None:
        CLIENTS.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        CLIENTS.discard(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            return
        if kind is WSMsgType.PING or kind is WSMsgType.PONG:
            return  # pings are answered by picows (enable_auto_pong)
        payload = frame.get_payload_as_bytes()
        if kind is WSMsgType.TEXT and frame.fin and payload.startswith(BROADCAST_PREFIX):
            data = broadcast_payload(int(payload[len(BROADCAST_PREFIX) :]))
            for other in list(CLIENTS):
                if other is not transport:
                    other.send(WSMsgType.BINARY, data)
            return
        transport.send(kind, payload, fin=frame.fin)


async def main() -> None:
    args = parse_args(__doc__)
    if args.deflate:
        raise SystemExit("picows has no permessage-deflate")
    logging.basicConfig(level=logging.WARNING)

    def listener_factory(request: WSUpgradeRequest) -> EchoListener:
        return EchoListener()

    server = await ws_create_server(
        listener_factory,
        HOST,
        args.port,
        max_frame_size=MESSAGE_LIMIT,
        websocket_handshake_timeout=30,
        backlog=1024,
    )
    ready(server="picows", version=picows.__version__, deflate=False, loop="uvloop", echo="frame by frame")
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main())
