"""The Redis gateway across real processes sharing a real Redis-protocol server (valkey-server or redis-server)."""

import json
import logging
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import gevent
import pytest
import redis
import websocket
from app_process import AppProcess
from conftest import factory
from processes import stop_process
from redis_server import RedisProcess, free_port, server_binary

import geventws
from geventws.connection.client import client_ids
from geventws.redis import (
    EnvelopeError,
    RedisEmitter,
    RedisGateway,
    RedisUnavailableError,
    decode_envelope,
    encode_envelope,
)

APP = Path(__file__).parent / "redis_app.py"
#: Small, so that a stalled client is closed soon after its socket buffers are full.
MAX_PENDING = 256 * 1024


class App(AppProcess):
    """One server process of tests/redis_app.py."""

    def __init__(self, redis_url, log_path, extra=()):
        super().__init__(APP, [redis_url, "--max-pending-bytes", str(MAX_PENDING), *extra], log_path)

    def connect(self, room, **options):
        """A websocket-client connection to ``room``: (client id, connection)."""
        options.setdefault("timeout", 10)
        options.setdefault("skip_utf8_validation", True)  # websocket-client checks UTF-8 in pure Python: slow
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/room/{room}", **options)
        greeting = ws.recv()
        assert greeting.startswith("id:")
        return int(greeting[3:]), ws


def start_apps(redis_url, directory, count, extra=()):
    apps = [App(redis_url, directory / f"app{index}.log", extra) for index in range(count)]
    try:
        for app in apps:
            app.wait_ready()
    except BaseException:
        for app in apps:
            app.stop()
        raise
    return apps


@pytest.fixture(scope="module")
def apps(redis_server, tmp_path_factory):
    """Three server processes on three ports sharing one Redis."""
    apps = start_apps(redis_server.url, tmp_path_factory.mktemp("apps"), 3)
    yield apps
    for app in apps:
        app.stop()


def command(ws, op, **fields):
    ws.send(json.dumps({"op": op, **fields}))


def recv_until(ws, done, timeout=10):
    """Messages up to and including the first for which ``done`` is true."""
    received = []
    with gevent.Timeout(timeout, AssertionError(f"timed out; received {received[-5:]}")):
        while True:
            message = ws.recv()
            received.append(message)
            if done(message):
                return received


def close_all(*connections):
    for ws in connections:
        ws.close()


# ----------------------------------------------------------------- across processes


def test_broadcasts_from_three_processes_reach_30_clients_once_each_in_publisher_order(apps):
    clients = [app.connect("order") for app in apps for _ in range(10)]
    tags = [f"P{index}" for index in range(len(apps))]
    for index, tag in enumerate(tags):  # the first client on each process makes it publish
        command(clients[index * 10][1], "burst", count=100, tag=tag)

    def read(ws):
        ends = set()
        return recv_until(ws, lambda message: message.endswith(":end") and (ends.add(message) or len(ends) == 3))

    readers = [gevent.spawn(read, ws) for _, ws in clients]
    gevent.joinall(readers, timeout=30, raise_error=True)
    for reader in readers:
        received = reader.value
        assert len(received) == 3 * 101  # nothing twice, nothing else
        for tag in tags:
            own = [message for message in received if message.startswith(tag + ":")]
            assert own == [f"{tag}:{index}:" for index in range(100)] + [f"{tag}:end"]
    close_all(*(ws for _, ws in clients))


def test_send_multicast_and_exclude_reach_clients_on_other_processes(apps):
    (a_id, a), (b_id, b), (c_id, c), (d_id, d) = (
        apps[0].connect("ids"),
        apps[1].connect("ids"),
        apps[2].connect("ids"),
        apps[2].connect("ids"),
    )
    assert len({a_id >> 32, b_id >> 32, c_id >> 32}) == 3  # one node number per process
    command(a, "send", to=c_id, text="for c")
    assert c.recv() == "for c"
    command(b, "broadcast", text="not for a and c", exclude=[a_id, c_id])
    command(b, "broadcast", text="all")
    assert a.recv() == "all"  # the excluded one would have come first: same publisher
    assert c.recv() == "all"
    assert [d.recv(), d.recv()] == ["not for a and c", "all"]
    assert [b.recv(), b.recv()] == ["not for a and c", "all"]
    command(a, "multicast", to=[b_id, d_id], text="b and d")
    command(a, "broadcast_binary", text="all again")
    assert [b.recv(), b.recv()] == [b"b and d", b"all again"]
    assert [d.recv(), d.recv()] == [b"b and d", b"all again"]
    assert c.recv() == b"all again"
    assert a.recv() == b"all again"
    close_all(a, b, c, d)


def test_emitter_in_an_unpatched_process_reaches_every_process(apps, redis_server):
    clients = [app.connect("emitter") for app in apps for _ in range(3)]
    excluded_id, excluded = clients[4]
    target_id, target = clients[7]
    code = f"""
import gevent.monkey
from geventws.redis import RedisEmitter
emitter = RedisEmitter({redis_server.url!r})
print(emitter.broadcast_text("room:emitter", "from cron", exclude=[{excluded_id}]))
print(emitter.send_binary("room:emitter", {target_id}, b"direct"))
print(gevent.monkey.is_module_patched("socket"))
emitter.close()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "3", "False"]  # three subscribed processes, unpatched
    for client_id, ws in clients:
        if client_id != excluded_id:
            assert ws.recv() == "from cron"
    assert target.recv() == b"direct"
    command(excluded, "broadcast", text="after")
    assert excluded.recv() == "after"
    close_all(*(ws for _, ws in clients))


def test_a_stalled_client_on_one_process_does_not_slow_the_others(apps):
    stalled_id, stalled = apps[0].connect("stall", sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    others = [app.connect("stall") for app in apps for _ in range(2)]
    publisher = others[2][1]  # on the second process
    rounds = []
    for round_number in range(400):
        started = time.monotonic()
        command(publisher, "burst", count=5, tag=f"R{round_number}", pad=16 * 1024)
        end = f"R{round_number}:end"
        readers = [gevent.spawn(recv_until, ws, lambda message, end=end: message == end) for _, ws in others]
        gevent.joinall(readers, timeout=10, raise_error=True)
        assert all(len(reader.value) == 6 for reader in readers)
        rounds.append(time.monotonic() - started)
        if "is too slow" in apps[0].log():
            break
    else:
        pytest.fail("the stalled client was never found too slow")
    assert f"#{stalled_id} " in apps[0].log() and "closing with 1013" in apps[0].log()
    assert max(rounds) < 1.0, rounds  # every round reached everyone else at once (typically ~15 ms)
    stalled.close()
    close_all(*(ws for _, ws in others))


def test_garbage_on_the_channel_is_logged_once_per_kind_and_skipped(apps, redis_server):
    clients = [app.connect("garbage") for app in apps]
    publisher = redis.Redis.from_url(redis_server.url)
    garbage = [
        b"hello",
        b"hello again",
        b'{"geventws":2,"from":"x","type":"text"}\nfuture',
        b'{"geventws":1,"from":"x","type":"text"}\n\xff\xfe',
        b'{"geventws":1,"from":"x","type":"text","exclude":["a"]}\nx',
    ]
    for raw in garbage:
        assert publisher.publish("room:garbage", raw) == 3
    publisher.close()
    command(clients[0][1], "broadcast", text="still fine")
    for _, ws in clients:
        assert ws.recv() == "still fine"
    for app in apps:
        # The sender delivered "still fine" to its own clients without Redis: its subscriber
        # may still be reading the garbage, so wait for the last kind to be logged.
        wait_for(lambda app=app: "malformed header" in app.log(), 10)
        log = app.log()
        assert log.count("not a geventws message") == 1
        assert "unsupported format version 2" in log
        assert "text payload is not UTF-8" in log
    close_all(*(ws for _, ws in clients))


def test_redis_stopped_then_restarted_local_delivery_goes_on_and_remote_resumes(tmp_path):
    binary = server_binary()
    server = RedisProcess(tmp_path, binary)
    server.start()
    apps = start_apps(server.url, tmp_path, 2)
    try:
        (_, a), (_, b) = apps[0].connect("faults"), apps[1].connect("faults")
        command(a, "broadcast", text="before")
        assert a.recv() == "before" and b.recv() == "before"
        server.stop()
        wait_for(lambda: "Lost Redis" in apps[0].log() and "Lost Redis" in apps[1].log(), 10)
        for index in range(3):
            command(a, "broadcast", text=f"during {index}")
            assert a.recv() == f"during {index}"  # local delivery goes on
        server.start()
        restarted = time.monotonic()
        assert probe(a, b, "a").startswith("a probe")  # never a "during" message
        assert probe(b, a, "b").startswith("b probe")
        assert time.monotonic() - restarted < 8  # both ways, within a few seconds
        command(b, "broadcast", text="back")
        assert a.recv() == "back" and b.recv() == "back"
        for app in apps:
            wait_for(lambda app=app: "is back" in app.log(), 5)
            assert app.log().count("Lost Redis") == 1
            assert app.log().count("is back") == 1
        close_all(a, b)
    finally:
        for app in apps:
            app.stop()
        server.stop()


def probe(sender, receiver, name, timeout=10):
    """Broadcast numbered probes from ``sender``'s process until ``receiver`` gets something: that message."""
    deadline = time.monotonic() + timeout
    index = 0
    while time.monotonic() < deadline:
        command(sender, "broadcast", text=f"{name} probe {index}")
        own = f"{name} probe {index}"
        seen = recv_until(sender, lambda message, own=own: message == own)
        assert all(" probe " in message for message in seen), seen  # late probes of the other way only
        receiver.settimeout(0.2)
        try:
            return receiver.recv()
        except websocket.WebSocketTimeoutException:
            index += 1
        finally:
            receiver.settimeout(10)
    raise AssertionError(f"no probe from {name} arrived within {timeout} s")


def wait_for(condition, timeout):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        gevent.sleep(0.05)


# ----------------------------------------------------------------- in this process


def gateway_app(gateway):
    def handler(client, request, response):
        gateway.add_client(client)
        client.send_text(f"id:{client.id}")
        for message in client:
            gateway.broadcast_text(str(message))

    return factory(lambda server: geventws.Websocket(server, None, None, handler))


def test_unreachable_redis_at_start_is_a_clear_error():
    url = f"redis://user:secret@127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    with pytest.raises(RedisUnavailableError, match="Cannot reach 'room' on Redis at 127.0.0.1:.*/0") as error:
        RedisGateway(url, "room", connect_timeout=1)
    assert "secret" not in str(error.value)
    assert time.monotonic() - started < 3


def test_degraded_start_delivers_locally_and_connects_when_redis_comes(serve, tmp_path, caplog):
    binary = server_binary()
    server = RedisProcess(tmp_path, binary)
    gateway = RedisGateway(server.url, "degraded", start_degraded=True)
    try:
        assert not gateway.connected
        running = serve(gateway_app(gateway))
        ws = running.connect()
        client_id = int(ws.recv()[3:])
        ws.send("local only")
        assert ws.recv() == "local only"
        assert gateway.counters()["dropped"] == 1  # the publish was lost, not queued
        server.start()
        assert gateway.wait_connected(10)
        emitter = RedisEmitter(server.url)
        assert emitter.send_text("degraded", client_id, "through redis") == 1
        assert ws.recv() == "through redis"
        listener = redis.Redis.from_url(server.url).pubsub()
        listener.subscribe("degraded")
        wait_for(lambda: listener.get_message(timeout=0.1) is not None, 5)  # subscribed
        ws.send("everywhere")
        assert ws.recv() == "everywhere"
        wait_for(lambda: gateway.counters()["published"] == 1, 5)
        message = listener.get_message(timeout=5)
        assert decode_envelope(message["data"]).data == "everywhere"
        listener.close()
        emitter.close()
        ws.close()
    finally:
        gateway.close()
        server.stop()


def test_gateways_on_one_channel_in_one_process_all_deliver(redis_server, serve):
    first, second = RedisGateway(redis_server.url, "twin"), RedisGateway(redis_server.url, "twin")
    try:
        a = serve(gateway_app(first)).connect()
        b = serve(gateway_app(second)).connect()
        a.recv(), b.recv()
        a.send("to both rooms")
        assert a.recv() == "to both rooms" and b.recv() == "to both rooms"
        b.send("and back")
        assert a.recv() == "and back" and b.recv() == "and back"
        close_all(a, b)
    finally:
        first.close()
        second.close()


def test_a_redis_py_client_works_as_well_as_a_url(redis_server, serve):
    client = redis.Redis.from_url(redis_server.url)
    by_url, by_client = RedisGateway(redis_server.url, "clients"), RedisGateway(client, "clients")
    try:
        a = serve(gateway_app(by_url)).connect()
        b = serve(gateway_app(by_client)).connect()
        a_id, b_id = int(a.recv()[3:]), int(b.recv()[3:])
        a.send("from a")
        assert a.recv() == "from a" and b.recv() == "from a"
        emitter = RedisEmitter(client)
        assert emitter.multicast_binary("clients", [a_id, b_id], b"both") == 2  # two subscriber connections
        assert a.recv() == b"both" and b.recv() == b"both"
        close_all(a, b)
    finally:
        by_url.close()
        by_client.close()
        client.close()


def test_node_numbers_are_claimed_in_redis(redis_server, caplog):
    client = redis.Redis.from_url(redis_server.url)
    taken = 0x1ABCD
    client.set(f"geventws:node:{taken}", "another process")
    client_ids.reset(taken)  # no id handed out under it yet: the gateway draws another
    with RedisGateway(redis_server.url, "nodes"):
        assert client_ids.node != taken
        assert client.get(f"geventws:node:{client_ids.node}") is not None
        owner = client.get(f"geventws:node:{client_ids.node}")
    assert client.get(f"geventws:node:{client_ids.node}") is None  # released by the last gateway
    client_ids.reset(taken)
    client_ids.next()  # a client exists under the taken node: only an error is possible
    with caplog.at_level(logging.ERROR, "geventws.redis"), RedisGateway(redis_server.url, "nodes"):
        assert client_ids.node == taken
    assert "also claimed by another process" in caplog.text
    assert owner != b"another process"
    client.delete(f"geventws:node:{taken}")
    client.close()
    client_ids.reset()


def test_gateways_in_one_process_share_one_subscriber_connection_while_they_have_members(redis_server, serve):
    client = redis.Redis.from_url(redis_server.url)

    def subscribers():
        return sum(1 for entry in client.client_list() if entry.get("sub") not in (None, "0"))

    before = subscribers()
    gateways = [RedisGateway(redis_server.url, name) for name in ("one", "two", "one")]
    try:
        assert dict(client.pubsub_numsub("one", "two")) == {b"one": 0, b"two": 0}  # no members: no subscription
        assert subscribers() == before
        connections = [serve(gateway_app(gateway)).connect() for gateway in gateways]
        for ws in connections:
            ws.recv()  # joined: subscribed once Redis confirmed it
        assert dict(client.pubsub_numsub("one", "two")) == {b"one": 1, b"two": 1}
        assert subscribers() == before + 1
        connections[1].close()
        wait_for(lambda: dict(client.pubsub_numsub("two")) == {b"two": 0}, 5)  # the last member left
        close_all(connections[0], connections[2])
        wait_for(lambda: subscribers() == before, 5)  # no channel left: no subscriber connection
    finally:
        for gateway in gateways:
            gateway.close()
        client.close()


def test_envelope_format_round_trips_and_rejects_what_is_not_ours():
    raw = encode_envelope("me", "héllo\nworld", exclude=[1, 2])
    assert raw.split(b"\n", 1)[0] == b'{"geventws":1,"from":"me","type":"text","exclude":[1,2]}'
    assert decode_envelope(raw) == ("me", "héllo\nworld", (1, 2), None, None, None)
    assert decode_envelope(encode_envelope("me", b"\x00\n\xff", to=[7])) == ("me", b"\x00\n\xff", (), (7,), None, None)
    for raw, kind in [
        (b"", "not a geventws message"),
        (b"{}\n", "not a geventws message"),
        (b"[1]\n", "not a geventws message"),
        (b"{nope\n", "not a geventws message"),
        (b'{"geventws":"1"}\n', "unsupported format version '1'"),
        (b'{"geventws":1,"from":"x","type":"image"}\n', "malformed header"),
        (b'{"geventws":1,"from":"x","type":"text","to":7}\n', "malformed header"),
        (b'{"geventws":1,"from":"x","type":"text","to":0}\n', "malformed header"),
        (b'{"geventws":1,"from":"x","type":"text","exclude":null}\n', "malformed header"),
    ]:
        with pytest.raises(EnvelopeError) as error:
            decode_envelope(raw)
        assert error.value.kind == kind


def test_a_client_that_decodes_responses_is_refused(redis_server):
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisGateway(client, "text-only")
    client.close()


def test_the_scaled_out_chat_example_relays_between_two_processes(redis_server, tmp_path):
    example = Path(__file__).parent.parent / "examples" / "broadcast_redis" / "server.py"
    ports = [free_port(), free_port()]
    processes = [
        subprocess.Popen(
            [sys.executable, str(example), "--port", str(port), "--redis", redis_server.url],
            stdout=open(tmp_path / f"example{port}.log", "w"),  # noqa: SIM115 - the child keeps it
            stderr=subprocess.STDOUT,
        )
        for port in ports
    ]
    try:
        for port in ports:
            wait_for(lambda port=port: _listening(port), 20)
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[1]}/", timeout=5) as reply:
            assert "/broadcast" in reply.read().decode()
        alice, bob = (
            websocket.create_connection(f"ws://127.0.0.1:{port}/broadcast", origin=f"http://127.0.0.1:{port}")
            for port in ports
        )
        bob.send("bob ready")
        assert bob.recv().endswith(": bob ready")  # bob is in the gateway
        alice.send("alice ready")
        assert bob.recv().endswith(": alice ready")  # through Redis, from the other process
        alice.send("hello")
        seen = recv_until(alice, lambda message: message.endswith(": hello"))
        # alice's own messages, and bob's "ready" if she joined before it came: no order across publishers
        assert all(message.endswith((": alice ready", ": bob ready", ": hello")) for message in seen)
        assert bob.recv().endswith(": hello")
        bob.send("hi alice")
        assert alice.recv().endswith(": hi alice")
        close_all(alice, bob)
    finally:
        for process in processes:
            stop_process(process)


def _listening(port):
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_the_chat_under_gunicorn_with_four_workers_reaches_every_worker(redis_server, tmp_path, monkeypatch):
    from servers import gunicorn, wait_for_workers

    monkeypatch.setenv("REDIS_URL", redis_server.url)
    example = Path(__file__).parent.parent / "examples" / "broadcast_redis"
    # Four connections fill a worker (--worker-connections): the fifth must go to another one,
    # whichever worker the kernel wakes first.
    options = ("-k", "geventws.gunicorn.Worker", "-w", "4", "--worker-connections", "4")
    with gunicorn(tmp_path, *options, app="wsgi:app", chdir=example) as served:
        # Every worker accepting: a worker still booting takes no connection.
        wait_for_workers(served, 4)

        def connect():
            url = f"ws://127.0.0.1:{served.port}/broadcast"
            return websocket.create_connection(url, origin="http://127.0.0.1:8000", timeout=10)

        chatters, workers = [], set()
        while len(workers) < 2 and len(chatters) < 16:  # connect until two workers served
            batch = gevent.joinall([gevent.spawn(connect) for _ in range(4)], raise_error=True)
            for greenlet in batch:  # each joins its worker's gateway before it speaks
                ws, index = greenlet.value, len(chatters)
                chatters.append(ws)
                ws.send(f"hello {index}")
                own = recv_until(ws, lambda message, index=index: message.endswith(f": hello {index}"))[-1]
                workers.add(int(own.split(":")[0]) >> 32)  # a client id's node number is its worker's
        assert len(workers) >= 2, "all connections went to one worker"

        command_sent = f"to all from {len(chatters)}"
        chatters[0].send(command_sent)
        senders = set()
        for ws in chatters:
            message = recv_until(ws, lambda message: message.endswith(command_sent))[-1]
            senders.add(message.split(":")[0])
        assert len(senders) == 1  # the same message, once, on every worker
        close_all(*chatters)
    assert "Lost Redis" not in served.log()
