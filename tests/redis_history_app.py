"""A server process of the Redis history tests: ``python redis_history_app.py REDIS_URL HISTORY``.

Clients connect to ``/room/<name>?since=<offset>``; each room is a
:class:`RedisGateway` on the channel ``history:<name>`` keeping ``HISTORY``
messages (rooms named ``plain...`` keep none).  Broadcasts are JSON
``{"offset", "text"}``; a client gets its replay, then ``{"id": <its id>}``,
then the live messages.  One that cannot resume gets ``{"gap": reason}`` and
a close with 4000.  Its text messages are JSON commands.  Prints ``READY <port>``.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from room_server import Rooms, serve_until_signal  # noqa: E402

import geventws  # noqa: E402
from geventws.redis import RedisGateway  # noqa: E402


def main() -> None:
    redis_url, history = sys.argv[1], int(sys.argv[2])
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(name)s %(levelname)s %(message)s")

    def make_room(name: str) -> RedisGateway:
        kept = 0 if name.startswith("plain") else history
        return RedisGateway(redis_url, f"history:{name}", history=kept)

    room = Rooms(make_room)

    def say(gateway: RedisGateway, text: str) -> geventws.SendResult:
        return gateway.broadcast_text(lambda offset: json.dumps({"offset": offset, "text": text}))

    def burst(gateway: RedisGateway, tag: str, count: int, pause: float | None) -> None:
        body = "x" * 200
        for index in range(count):
            say(gateway, f"{tag}:{index}:{body}")
            if pause is not None:
                gevent.sleep(pause)
        say(gateway, f"{tag}:end")

    def handle_client(client: geventws.WebsocketClient, request: Any, response: Any) -> None:
        gateway = room(request.path.rpartition("/")[2])
        try:
            gateway.add_client(client, since=request.args.get("since"))
        except geventws.HistoryGap as gap:
            client.send_text(json.dumps({"gap": gap.reason}))
            client.close(4000, "reload")
            return
        gateway.local.send_text(json.dumps({"id": client.id}), client.id)  # after the replay, in its outbox
        for message in client:
            command = json.loads(str(message))
            if command["op"] == "say":
                result = say(gateway, command["text"])
                if command.get("report"):  # the offset, once this process has delivered it
                    client.send_text(json.dumps({"result": result.wait(10).offset}))
            elif command["op"] == "burst":
                gevent.spawn(burst, gateway, command["tag"], command["count"], command.get("pause"))

    serve_until_signal(handle_client, "redis_history_app", room)


if __name__ == "__main__":
    main()
