"""Instructions per echo round trip, for callgrind: an in-process echo of 16-byte text messages.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/echo_instructions.py N

Run it with two values of N (say 2000 and 12000): the difference of the
"Collected" totals divided by the difference of N is the cost of one round
trip (the server's read, parse, handler wake-up, encode and write, and the
client's raw send and recv), free of start-up.  Counts do not depend on the
machine's load, so they compare trees on a shared machine.
"""

from gevent import monkey

monkey.patch_all()

import logging  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

import geventws  # noqa: E402


def echo(client: geventws.WebsocketClient, request: object, response: object) -> None:
    for message in client:
        client.send_text(str(message))


def main(rounds: int) -> None:
    logging.disable(logging.CRITICAL)
    server = geventws.Server(logging.getLogger("bench"))
    server.expose(("127.0.0.1", 0))
    factory = geventws.Rfc6455ClientFactory(heartbeat=None, rate_limit=None)
    server.start(geventws.Websocket(server, None, None, echo, client_factory=factory))
    port = server.addresses[0][1]
    sock = socket.create_connection(("127.0.0.1", port))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    mask = os.urandom(4)
    payload = b"0123456789abcdef"
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    reply_size = 2 + len(payload)
    for _ in range(rounds):
        sock.sendall(frame)
        got = 0
        while got < reply_size:
            got += len(sock.recv(reply_size - got))
    sock.close()
    server.stop(timeout=1)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
