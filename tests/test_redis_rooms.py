"""Rooms that come and go, and who is in them: remove_client and presence, locally and across processes."""

import json
import socket

import gevent
import pytest
import redis
from conftest import factory
from test_redis import close_all, command, recv_until, start_apps, wait_for

import geventws
from geventws import ClientRemovedError, WebsocketClientGateway

#: Short, so that a killed process's members expire within the test.
PRESENCE_TTL = 2.0


@pytest.fixture(scope="module")
def apps(redis_server, tmp_path_factory):
    apps = start_apps(redis_server.url, tmp_path_factory.mktemp("apps"), 3, ("--presence-ttl", str(PRESENCE_TTL)))
    yield apps
    for app in apps:
        app.stop()


def ask(ws, op, **fields):
    """A command whose answer comes back to the sender: the answer."""
    command(ws, op, **fields)
    return recv_until(ws, lambda message: message.startswith(("count:", "ids:", "joined:", "left:")))[-1]


# ----------------------------------------------------------------- the local gateway


def test_a_removed_client_gets_nothing_more_stays_connected_and_can_join_again(serve):
    gateway = WebsocketClientGateway()
    joined = {}

    def handler(client, request, response):
        joined[client.id] = client
        gateway.add_client(client)
        for message in client:
            client.send_text(f"echo {message}")

    running = serve(factory(lambda server: geventws.Websocket(server, None, None, handler)))
    stays, leaves = running.connect(), running.connect()
    wait_for(lambda: gateway.count_clients() == 2, 5)
    leaver = next(client for client in joined.values() if client.id != min(joined))
    gateway.broadcast_text("both").wait(5)
    assert stays.recv() == "both" and leaves.recv() == "both"
    gateway.remove_client(leaver)
    gateway.remove_client(leaver)  # again: no effect
    assert gateway.get_client_ids() == {min(joined)} and gateway.count_clients() == 1
    gateway.broadcast_text("one").wait(5)
    leaves.send("still here")
    assert leaves.recv() == "echo still here"  # connected, and "one" never came
    gateway.add_client(leaver)
    gateway.broadcast_text("again").wait(5)
    assert stays.recv() == "one" and stays.recv() == "again" and leaves.recv() == "again"
    close_all(stays, leaves)
    wait_for(lambda: gateway.count_clients() == 0, 5)


def test_what_was_queued_for_a_removed_client_is_dropped_and_resolved(serve):
    gateway = WebsocketClientGateway(max_pending_bytes=64 * 1024 * 1024, max_pending_messages=10_000)
    joined = []

    def handler(client, request, response):
        joined.append(client)
        gateway.add_client(client)
        client.wait_closed()

    running = serve(factory(lambda server: geventws.Websocket(server, None, None, handler)))
    stalled = running.connect(sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    wait_for(lambda: gateway.count_clients() == 1, 5)
    results = []
    while gateway.pending_bytes < 1024 * 1024:  # the client reads nothing: its socket fills, then its outbox
        results.append(gateway.broadcast_binary(b"x" * 64 * 1024))
        gevent.sleep(0)
    gateway.remove_client(joined[0])
    # resolved at once, but the one message whose first bytes are on the wire: it is finished, not cut
    pending = [result for result in results if not result.done]
    assert len(pending) <= 1
    removed = [result for result in results if isinstance(result.errors.get(joined[0].id), ClientRemovedError)]
    assert len(removed) >= 10
    assert gateway.pending_bytes <= 64 * 1024 + 16 and gateway.count_clients() == 0
    assert not joined[0].is_closed
    stalled.close()
    for result in pending:
        result.wait(5)


# ----------------------------------------------------------------- across processes


def test_clients_in_many_rooms_leave_and_join_and_the_last_to_leave_unsubscribes(apps, redis_server):
    observer = redis.Redis.from_url(redis_server.url)
    (a_id, a), (b_id, b), (c_id, c) = (app.connect("lobby") for app in apps)
    for ws in (a, b):
        assert ask(ws, "join", room="red") == "joined:red"
    assert ask(c, "join", room="blue") == "joined:blue"
    assert dict(observer.pubsub_numsub("room:red", "room:blue")) == {b"room:red": 2, b"room:blue": 1}
    command(c, "broadcast", room="red", text="to red")  # from a process without members in red
    assert a.recv() == "to red" and b.recv() == "to red"
    assert ask(b, "leave", room="red") == "left:red"
    # b's process has no member in red any more: it holds no subscription for it
    assert dict(observer.pubsub_numsub("room:red")) == {b"room:red": 1}
    command(c, "broadcast", room="red", text="red again")
    command(c, "broadcast", room="lobby", text="lobby")
    assert a.recv() == "red again" and a.recv() == "lobby"
    assert b.recv() == "lobby"  # still connected, still in the lobby, nothing from red
    assert ask(b, "join", room="red") == "joined:red"
    command(a, "broadcast", room="red", text="welcome back")
    assert a.recv() == "welcome back" and b.recv() == "welcome back"
    close_all(a, b, c)
    wait_for(lambda: dict(observer.pubsub_numsub("room:red", "room:blue")) == {b"room:red": 0, b"room:blue": 0}, 5)
    observer.close()


def test_counts_and_ids_span_processes_and_fall_when_a_process_dies(redis_server, tmp_path):
    apps = start_apps(redis_server.url, tmp_path, 3, ("--presence-ttl", str(PRESENCE_TTL)))
    try:
        clients = [app.connect("presence") for app in apps for _ in range(3)]
        ids = {client_id for client_id, _ in clients}
        for _, ws in clients[::4]:  # any process answers for all of them
            assert ask(ws, "count") == "count:9"
            assert json.loads(ask(ws, "ids")[4:]) == sorted(ids)
        assert ask(clients[0][1], "leave", room="presence") == "left:presence"
        assert ask(clients[5][1], "count") == "count:8"
        clients[1][1].close()
        wait_for(lambda: ask(clients[5][1], "count") == "count:7", 5)
        apps[2].process.kill()  # its three members were never removed: they expire
        apps[2].process.wait()
        survivors = ids - {clients[0][0], clients[1][0]} - {client_id for client_id, _ in clients[6:]}
        wait_for(lambda: ask(clients[5][1], "count") == "count:4", 2 * PRESENCE_TTL)
        assert set(json.loads(ask(clients[5][1], "ids")[4:])) == survivors
        wait_for(lambda: ask(clients[2][1], "count") == "count:4", 5)  # and stays so: the others refresh theirs
        gevent.sleep(0)
        close_all(*(ws for _, ws in clients[:6]))
    finally:
        for app in apps:
            app.stop()


def test_a_broadcast_with_history_from_a_process_without_members_resolves_at_once(redis_server):
    from geventws.redis import RedisGateway

    with RedisGateway(redis_server.url, "history-publisher", history=10) as gateway:
        observer = redis.Redis.from_url(redis_server.url)
        result = gateway.broadcast_text("kept").wait(1)  # no member here: nothing to wait for
        assert result.successes == [] and result.errors == {}
        wait_for(lambda: observer.xlen("geventws:{history-publisher}:history") == 1, 5)  # kept all the same
        observer.close()
