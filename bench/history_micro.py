"""The cost of room history per broadcast, and the memory of a kept message.

``python bench/history_micro.py [REDIS_URL]``: the local gateway broadcasting
to N real clients (socketpairs, nothing reads them but the kernel buffers)
with ``history=0`` and ``history=1000``; with a Redis URL, the Redis gateway's
plain publish against the XADD + PUBLISH script, each measured until the
message is back from Redis.  Numbers from one run on a shared machine vary.
"""

from gevent import monkey

monkey.patch_all()

import socket  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import gevent  # noqa: E402

from geventws import WebsocketClientGateway  # noqa: E402
from geventws.connection.client import WebsocketClient  # noqa: E402
from geventws.protocol.engine import LeanEngine  # noqa: E402
from geventws.protocol.limits import MessageLimits  # noqa: E402
from geventws.history import History  # noqa: E402

MESSAGE = "x" * 100


def local_cost(clients: int, history: int, count: int = 5000) -> float:
    """Microseconds per broadcast to ``clients`` clients."""
    gateway = WebsocketClientGateway(history=history, max_pending_messages=count * 2, max_pending_bytes=1 << 30)
    pairs = []
    for _ in range(clients):
        ours, theirs = socket.socketpair()
        client = WebsocketClient(ours, LeanEngine(MessageLimits(1 << 20, 1 << 20), 32 * 1024))
        client.start()
        gateway.add_client(client)
        pairs.append((client, theirs))
    drain = [gevent.spawn(_discard, theirs) for _, theirs in pairs]
    start = time.perf_counter()
    for _ in range(count):
        gateway.broadcast_text(MESSAGE)
    elapsed = time.perf_counter() - start
    gevent.killall(drain)
    for client, theirs in pairs:
        client.abort()
        theirs.close()
    return elapsed / count * 1e6


def _discard(sock: socket.socket) -> None:
    while sock.recv(1 << 16):
        pass


def redis_cost(url: str, history: int, count: int = 3000) -> float:
    """Microseconds per broadcast, until its echo (history) or its reply (plain) is back."""
    from geventws.redis import RedisGateway

    with RedisGateway(url, f"bench:{history}", history=history) as gateway:
        start = time.perf_counter()
        last = None
        for _ in range(count):
            last = gateway.broadcast_text(MESSAGE)
        if history:
            last.wait(10)
        else:
            while gateway.counters()["published"] < count:
                gevent.sleep(0.001)
        return (time.perf_counter() - start) / count * 1e6


def memory_per_message(size: int = 1000) -> float:
    """Bytes per kept 100-character message, the message included."""
    history = History(size)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for index in range(size):
        history.append(f"{index:08d}" + "x" * 92)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return grown / size


def main() -> None:
    for clients in (1, 100):
        off = min(local_cost(clients, 0) for _ in range(3))
        on = min(local_cost(clients, 1000) for _ in range(3))
        print(f"local gateway, {clients:3d} clients: history=0 {off:7.1f} us, history=1000 {on:7.1f} us per broadcast")
    print(f"memory per kept 100-character message: {memory_per_message():.0f} bytes")
    if len(sys.argv) > 1:
        plain, kept = redis_cost(sys.argv[1], 0), redis_cost(sys.argv[1], 1000)
        print(f"redis gateway: PUBLISH {plain:.1f} us, XADD + PUBLISH script {kept:.1f} us per broadcast")


if __name__ == "__main__":
    main()
