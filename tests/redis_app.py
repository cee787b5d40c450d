"""A server process of the Redis gateway tests: ``python redis_app.py REDIS_URL [--max-pending-bytes N]``.

Clients connect to ``/room/<name>``; each room is a :class:`RedisGateway` on
the channel ``room:<name>``.  A client first receives ``id:<its id>``, then
its text messages are commands (JSON) that make this process send through
the gateway (a ``room`` field names another room: ``join`` and ``leave`` it,
``count`` and ``ids`` answer its presence).  Prints ``READY <port>`` once listening; logs go to stderr.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from room_server import Rooms, serve_until_signal  # noqa: E402

import geventws  # noqa: E402
from geventws.redis import RedisGateway  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("redis")
    parser.add_argument("--max-pending-bytes", type=int, default=geventws.gateway.DEFAULT_MAX_PENDING_BYTES)
    parser.add_argument("--presence-ttl", type=float, default=15.0)
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s %(levelname)s %(message)s")

    def make_room(name: str) -> RedisGateway:
        local = geventws.WebsocketClientGateway(max_pending_bytes=args.max_pending_bytes)
        return RedisGateway(args.redis, f"room:{name}", local=local, presence_ttl=args.presence_ttl)

    room = Rooms(make_room)

    def handle_client(client: geventws.WebsocketClient, request: Any, response: Any) -> None:
        gateway = room(request.path.rpartition("/")[2])
        gateway.add_client(client)
        client.send_text(f"id:{client.id}")
        for message in client:
            command = json.loads(str(message))
            run(client, gateway, command)

    def run(client: geventws.WebsocketClient, gateway: RedisGateway, command: dict[str, Any]) -> None:
        op = command["op"]
        if "room" in command:
            gateway = room(command["room"])
        if op == "join":
            gateway.add_client(client)
            client.send_text(f"joined:{command['room']}")
        elif op == "leave":
            gateway.remove_client(client)
            client.send_text(f"left:{command['room']}")
        elif op == "count":
            client.send_text(f"count:{gateway.count_clients()}")
        elif op == "ids":
            client.send_text("ids:" + json.dumps(sorted(gateway.get_client_ids())))
        elif op == "ticker":  # numbered broadcasts stamped with the time, one every interval, then an end marker
            gevent.spawn(tick, gateway, command["tag"], command["count"], command["interval"])
        elif op == "burst":  # numbered broadcasts, then an end marker
            body = "x" * command.get("pad", 0)
            for index in range(command["count"]):
                gateway.broadcast_text(f"{command['tag']}:{index}:{body}")
            gateway.broadcast_text(f"{command['tag']}:end")
        elif op == "broadcast":
            gateway.broadcast_text(command["text"], command.get("exclude", ()))
        elif op == "broadcast_binary":
            gateway.broadcast_binary(command["text"].encode(), command.get("exclude", ()))
        elif op == "send":
            gateway.send_text(command["text"], command["to"])
        elif op == "multicast":
            gateway.multicast_binary(command["text"].encode(), command["to"])

    def tick(gateway: RedisGateway, tag: str, count: int, interval: float) -> None:
        for index in range(count):
            gateway.broadcast_text(f"{tag}:{index}:{time.time():.3f}")
            gevent.sleep(interval)
        gateway.broadcast_text(f"{tag}:end")

    serve_until_signal(handle_client, "redis_app", room)


if __name__ == "__main__":
    main()
