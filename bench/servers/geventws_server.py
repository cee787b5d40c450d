"""geventws, monkey-patched like a standalone daemon.

Configured alike by default (16 MiB message limit, no rate limit, no heartbeat);
``--defaults`` uses ``Rfc6455ClientFactory()`` as shipped instead.  ``--deflate``
uses ``geventws.Rfc7692CompressionFactory()`` (the run skips the cell when
geventws has none).  Broadcast goes through ``geventws.WebsocketClientGateway``
when geventws has one, else loops over the clients with ``send_binary``.
``--redis URL`` broadcasts through ``geventws.redis.RedisGateway`` on that
Redis instead (``geventws_redis.py`` starts it and a peer process);
``--peer-url`` names the peers' WebSocket URLs in the READY config.
``--metrics`` records everything :mod:`geventws.metrics` exports (the endpoint
and the gateway instrumented, into a registry of its own), to measure its cost.
"""

from gevent import monkey

monkey.patch_all()

import logging  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from _common import (  # noqa: E402
    HOST,
    MESSAGE_LIMIT,
    broadcast_payload,
    broadcast_size,
    parse_args,
    process_stats,
    ready,
)

import geventws  # noqa: E402

CLIENTS: set = set()


LOOP_BROADCAST = "--loop-broadcast" in sys.argv
if LOOP_BROADCAST:
    sys.argv.remove("--loop-broadcast")
METRICS = None
if "--metrics" in sys.argv:
    sys.argv.remove("--metrics")
    from prometheus_client import CollectorRegistry

    from geventws.metrics import WebsocketMetrics

    METRICS = WebsocketMetrics(CollectorRegistry())


def _option(name: str) -> list[str]:
    """Take every ``name VALUE`` pair out of sys.argv (before the shared argument parser sees it)."""
    values = []
    while name in sys.argv:
        index = sys.argv.index(name)
        values.append(sys.argv[index + 1])
        del sys.argv[index : index + 2]
    return values


REDIS_URL = next(iter(_option("--redis")), None)
PEER_URLS = _option("--peer-url")


def make_broadcaster():  # type: ignore[no-untyped-def]
    """(on_connect, on_disconnect, broadcast, description) for the gateway if any, else a plain loop."""
    if REDIS_URL is not None:
        from geventws.redis import RedisGateway

        redis_gateway = RedisGateway(REDIS_URL, "bench")

        def redis_broadcast(sender, payload: bytes) -> None:  # type: ignore[no-untyped-def]
            redis_gateway.broadcast_binary(payload, [sender.id])

        return redis_gateway.add_client, None, redis_broadcast, "RedisGateway.broadcast_binary"
    gateway_class = None if LOOP_BROADCAST else getattr(geventws, "WebsocketClientGateway", None)
    if gateway_class is not None:
        try:
            gateway = gateway_class()
            if METRICS is not None:
                METRICS.instrument_gateway(gateway)
        except TypeError as error:  # a constructor we do not know how to call: fall back, but say so
            print(f"WebsocketClientGateway() failed ({error}); looping over clients instead", file=sys.stderr)
        else:

            def gateway_broadcast(sender, payload: bytes) -> None:  # type: ignore[no-untyped-def]
                gateway.broadcast_binary(payload, [sender.id])

            return gateway.add_client, None, gateway_broadcast, "WebsocketClientGateway.broadcast_binary"

    def loop_broadcast(sender, payload: bytes) -> None:  # type: ignore[no-untyped-def]
        for other in list(CLIENTS):
            if other is not sender:
                try:  # noqa: SIM105 - cheaper than contextlib.suppress in the broadcast loop
                    other.send_binary(payload)
                except geventws.WebsocketClosedException:
                    pass

    return None, None, loop_broadcast, "loop over clients with send_binary"


ON_CONNECT, ON_DISCONNECT, BROADCAST, BROADCAST_HOW = make_broadcaster()


def handle_client(client, request, response) -> None:  # type: ignore[no-untyped-def]
    CLIENTS.add(client)
    if ON_CONNECT is not None:
        ON_CONNECT(client)
    try:
        for message in client:
            data = message.buffer()
            if message.is_text:
                size = broadcast_size(data)
                if size is not None:
                    BROADCAST(client, broadcast_payload(size))
                elif data.startswith("stats"):
                    client.send_text(process_stats(int(data[6:] or 0)))
                else:
                    client.send_text(data)
            else:
                client.send_binary(data)
    finally:
        CLIENTS.discard(client)


def main() -> None:
    args = parse_args(__doc__)
    logging.basicConfig(level=logging.WARNING)
    if args.defaults:
        client_factory = geventws.Rfc6455ClientFactory()
    else:
        client_factory = geventws.Rfc6455ClientFactory(
            message_size_limit=MESSAGE_LIMIT, heartbeat=None, rate_limit=None
        )
    compression = None
    if args.deflate:
        factory_class = getattr(geventws, "Rfc7692CompressionFactory", None)
        if factory_class is None:
            sys.exit("geventws has no Rfc7692CompressionFactory")
        compression = factory_class()
    server = geventws.Server(logging.getLogger("bench.geventws"))
    server.expose((HOST, args.port), backlog=1024)
    endpoint = geventws.Websocket(
        server, None, None, handle_client, compression_factory=compression, client_factory=client_factory
    )
    server.start(endpoint if METRICS is None else METRICS.instrument(endpoint))
    ready(
        server="geventws",
        version=geventws.__version__,
        file=geventws.__file__,
        deflate=args.deflate,
        defaults=args.defaults,
        message_limit=getattr(client_factory, "message_size_limit", "?"),
        rate_limit=repr(getattr(client_factory, "rate_limit", "?")),
        heartbeat=repr(getattr(client_factory, "heartbeat", "?")),
        broadcast=BROADCAST_HOW,
        loop="gevent",
        **({"urls": [f"ws://{HOST}:{args.port}/", *PEER_URLS], "redis": REDIS_URL} if REDIS_URL else {}),
        metrics=METRICS is not None,
    )
    gevent.wait()


if __name__ == "__main__":
    main()
