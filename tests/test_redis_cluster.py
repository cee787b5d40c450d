"""RedisGateway on a three-shard Redis Cluster with sharded pub/sub: three processes, 20 rooms."""

import json

import gevent
import pytest
import redis
import websocket
from redis.cluster import RedisCluster
from redis_server import RedisProcess, free_port, server_binary
from redis_topologies import Cluster
from test_redis import close_all, command, start_apps, wait_for

from geventws.redis import RedisEmitter, RedisGateway, RedisUnavailableError

ROOMS = [f"r{index}" for index in range(20)]
PRESENCE_TTL = 2.0


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    binary = server_binary()
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), binary)
    cluster.start()
    yield cluster
    cluster.stop()


def node_clients(cluster):
    return [redis.Redis(port=node.port, decode_responses=True) for node in cluster.nodes]


def shard_channels(clients):
    """The sharded channels each node has subscribers for."""
    return [set(client.execute_command("PUBSUB", "SHARDCHANNELS")) for client in clients]


def shard_numsub(client, channel):
    """How many connections subscribe to ``channel`` on this node."""
    reply = client.execute_command("PUBSUB", "SHARDNUMSUB", channel)
    return int(dict(zip(reply[::2], reply[1::2], strict=True))[channel])


def ask(ws, op, **fields):
    command(ws, op, **fields)
    while True:
        message = ws.recv()
        if message.startswith(("count:", "ids:", "joined:", "left:")):
            return message


def members_of(room_index, client_index):
    return (room_index + client_index) % 3 == 0


def test_rooms_on_three_shards_reach_exactly_their_members_in_order(cluster, tmp_path):
    apps = start_apps(cluster.url, tmp_path, 3, ("--presence-ttl", str(PRESENCE_TTL)))
    nodes = node_clients(cluster)
    observer = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port, decode_responses=True)
    try:
        clients = [app.connect("lobby") for app in apps for _ in range(10)]
        ids = [client_id for client_id, _ in clients]
        assert len({client_id >> 32 for client_id in ids}) == 3  # one node number per process
        for node in {client_id >> 32 for client_id in ids}:
            assert observer.get(f"geventws:node:{node}") is not None  # claimed in the cluster
        rooms_of = {k: [r for r in range(20) if members_of(r, k)] for k in range(30)}
        for k, (_, ws) in enumerate(clients):
            for r in rooms_of[k]:
                assert ask(ws, "join", room=ROOMS[r]) == f"joined:{ROOMS[r]}"

        # the rooms' channels live on the shards that own their slots, spread over all three
        expected = [set() for _ in nodes]
        for room in ROOMS + ["lobby"]:
            owner = observer.nodes_manager.get_node_from_slot(observer.keyslot(f"room:{room}"))
            expected[[node.port for node in cluster.nodes].index(owner.port)].add(f"room:{room}")
        assert shard_channels(nodes) == expected
        assert all(expected)
        for client in nodes:  # one subscriber connection per process and shard, not one per room
            subscribers = [entry for entry in client.client_list() if int(entry.get("ssub", 0)) > 0]
            assert len(subscribers) == 3, subscribers

        # every room's broadcasts reach exactly its members, once and in order
        received = [[] for _ in clients]
        ends = {k: {f"{ROOMS[r]}:end" for r in rooms_of[k]} for k in range(30)}

        def read(k, ws):
            while not ends[k] <= set(received[k]):
                received[k].append(ws.recv())

        readers = [gevent.spawn(read, k, ws) for k, (_, ws) in enumerate(clients)]
        for r, room in enumerate(ROOMS):
            commander = clients[(r % 3) * 10 + 9][1]  # from a process, member or not
            command(commander, "burst", room=room, count=20, tag=room)
        gevent.joinall(readers, timeout=30, raise_error=True)
        for k in range(30):
            assert len(received[k]) == 21 * len(rooms_of[k])  # nothing else, nothing twice
            for r in rooms_of[k]:
                own = [message for message in received[k] if message.startswith(ROOMS[r] + ":")]
                assert own == [f"{ROOMS[r]}:{index}:" for index in range(20)] + [f"{ROOMS[r]}:end"]

        # counts and ids across processes
        for r in (0, 7):
            members = {ids[k] for k in range(30) if members_of(r, k)}
            assert ask(clients[r][1], "count", room=ROOMS[r]) == f"count:{len(members)}"
            assert set(json.loads(ask(clients[29][1], "ids", room=ROOMS[r])[4:])) == members

        # members leave: nothing more for them; the process whose last member left unsubscribes
        room = ROOMS[0]
        owner = next(i for i, channels in enumerate(expected) if f"room:{room}" in channels)
        assert shard_numsub(nodes[owner], f"room:{room}") == 3
        leavers = [k for k in range(10) if members_of(0, k)]  # all of room r0's members on process 0
        for k in leavers:
            assert ask(clients[k][1], "leave", room=room) == f"left:{room}"
        assert shard_numsub(nodes[owner], f"room:{room}") == 2
        stayers = [k for k in range(30) if members_of(0, k) and k not in leavers]
        assert ask(clients[29][1], "count", room=room) == f"count:{len(stayers)}"
        command(clients[15][1], "broadcast", room=room, text="after they left")
        command(clients[15][1], "broadcast", room="lobby", text="lobby")
        for k in leavers:
            assert clients[k][1].recv() == "lobby"  # and not "after they left" before it
        for k in range(30):
            if k in stayers:
                assert [clients[k][1].recv(), clients[k][1].recv()] == ["after they left", "lobby"]
            elif k not in leavers:
                assert clients[k][1].recv() == "lobby"

        # an emitter on the cluster URL reaches a room's members
        emitter = RedisEmitter(cluster.url)
        assert emitter.broadcast_text(f"room:{ROOMS[1]}", "emitted") == 3
        emitter.close()
        for k in range(30):
            if members_of(1, k):
                assert clients[k][1].recv() == "emitted"

        # a process killed: its members stop counting within the presence ttl
        apps[2].process.kill()
        apps[2].process.wait()
        alive = [k for k in stayers if k < 20]
        wait_for(lambda: ask(clients[0][1], "count", room=room) == f"count:{len(alive)}", 3 * PRESENCE_TTL)
        assert set(json.loads(ask(clients[0][1], "ids", room=room)[4:])) == {ids[k] for k in alive}
        close_all(*(ws for _, ws in clients[:20]))
        wait_for(lambda: not any(channels & {f"room:{r}" for r in ROOMS} for channels in shard_channels(nodes)), 10)
    finally:
        for app in apps:
            app.stop()
        for client in nodes:
            client.close()
        observer.close()


def test_a_redis_cluster_client_works_as_well_as_a_url(cluster, serve):
    from test_redis import gateway_app

    client = RedisCluster(host="127.0.0.1", port=cluster.nodes[1].port)
    by_url, by_client = RedisGateway(cluster.url, "clustered"), RedisGateway(client, "clustered")
    try:
        a = serve(gateway_app(by_url)).connect()
        b = serve(gateway_app(by_client)).connect()
        a_id, b_id = int(a.recv()[3:]), int(b.recv()[3:])
        a.send("from a")
        assert a.recv() == "from a" and b.recv() == "from a"
        assert by_client.count_clients() == 2 and by_url.get_client_ids() == {a_id, b_id}
        presence = client.zrange("geventws:{clustered}:presence", 0, -1)
        assert sorted(int(member) for member in presence) == sorted([a_id, b_id])
        assert client.keyslot("geventws:{clustered}:presence") == client.keyslot("clustered")
        close_all(a, b)
    finally:
        by_url.close()
        by_client.close()
        client.close()


def test_bad_urls_and_a_cluster_without_sharded_pub_sub_are_clear_errors_at_construction(tmp_path):
    for url, error, message in [
        ("memcached://127.0.0.1:11211", ValueError, "Unknown Redis URL scheme in 'memcached://"),
        ("127.0.0.1:6379", ValueError, "Unknown Redis URL scheme"),
        ("redis+cluster://127.0.0.1:notaport", ValueError, "'127.0.0.1:notaport' is not host:port"),
        ("redis+cluster://:secret@127.0.0.1", ValueError, "is not host:port"),
        ("redis+cluster://127.0.0.1:1/3", ValueError, "a cluster has only db 0"),
        ("redis://127.0.0.1:6379/notadb", ValueError, "Cannot parse the Redis URL"),
    ]:
        with pytest.raises(error, match=message) as raised:
            RedisGateway(url, "bad")
        assert "secret" not in str(raised.value)
        with pytest.raises(error, match=message):
            RedisEmitter(url)
    binary = server_binary()
    plain = RedisProcess(tmp_path / "plain", binary)
    (tmp_path / "plain").mkdir()
    old = Cluster(tmp_path / "old", binary, size=1, extra=("--rename-command", "SPUBLISH", '""'))
    plain.start()
    try:
        with pytest.raises(ValueError, match="is not a Redis Cluster"):
            RedisGateway(f"redis+cluster://127.0.0.1:{plain.port}", "bad")
        old.start()
        with pytest.raises(ValueError, match="has no sharded pub/sub"):
            RedisGateway(old.url, "bad")
        with pytest.raises(ValueError, match="has no sharded pub/sub"):
            RedisEmitter(old.url)
    finally:
        plain.stop()
        old.stop()
    with pytest.raises(RedisUnavailableError, match="Cannot reach Redis for 'bad'"):
        RedisGateway(f"redis+cluster://127.0.0.1:{free_port()}", "bad")


def move_slot(cluster, slot, source, target):
    """Reshard one slot from ``source`` to ``target`` (node clients), its keys included, as valkey-cli does."""
    source_id, target_id = source.cluster("myid"), target.cluster("myid")
    target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    keys = source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    if keys:
        port = target.connection_pool.connection_kwargs["port"]
        source.execute_command("MIGRATE", "127.0.0.1", port, "", 0, 5000, "KEYS", *keys)
    for node in cluster.nodes:
        client = redis.Redis(port=node.port)
        client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        client.close()


def test_a_room_whose_slot_moves_follows_it_to_the_new_shard(cluster, tmp_path):
    apps = start_apps(cluster.url, tmp_path, 2)
    nodes = node_clients(cluster)
    observer = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        (_, a), (_, b) = apps[0].connect("moving"), apps[1].connect("moving")
        command(b, "broadcast", text="before")
        assert a.recv() == "before" and b.recv() == "before"
        slot = observer.keyslot("room:moving")
        ports = [node.port for node in cluster.nodes]
        source = ports.index(observer.nodes_manager.get_node_from_slot(slot).port)
        target = (source + 1) % 3
        assert shard_numsub(nodes[source], "room:moving") == 2
        move_slot(cluster, slot, nodes[source], nodes[target])
        # Redis ended the subscriptions on the old owner; both processes subscribe on the new one
        wait_for(lambda: shard_numsub(nodes[target], "room:moving") == 2, 10)
        assert shard_numsub(nodes[source], "room:moving") == 0
        seen = []
        for index in range(200):  # until a probe from the other process arrives (publishes follow the slot)
            command(b, "broadcast", text=f"probe {index}")
            assert recv_until_text(b, f"probe {index}")
            a.settimeout(0.05)
            try:
                seen.append(a.recv())
                break
            except websocket.WebSocketTimeoutException:
                continue
            finally:
                a.settimeout(10)
        assert seen, "no broadcast reached the other process after the move"
        command(b, "broadcast", text="after")
        rest = recv_until_text(a, "after")
        numbers = [int(message.split()[1]) for message in seen + rest[:-1]]
        assert numbers == sorted(set(numbers))  # at most once, in order, across the move
        assert ask(a, "count") == "count:2"  # the presence key moved with the slot
        close_all(a, b)
    finally:
        for app in apps:
            app.stop()
        for client in nodes:
            client.close()
        observer.close()


def recv_until_text(ws, text):
    received = []
    while not received or received[-1] != text:
        received.append(ws.recv())
    return received


def test_room_history_on_a_cluster_kept_on_the_rooms_shard(cluster, tmp_path):
    from test_redis_history import App as HistoryApp
    from test_redis_history import read_until, say, texts

    apps = [HistoryApp(cluster.url, tmp_path / f"history{index}.log") for index in range(2)]
    observer = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        alice, _ = apps[0].connect("kept")
        bob, _ = apps[1].connect("kept")
        say(alice, "before")
        seen = read_until(bob, "before")[-1]
        bob.close()
        for index in range(5):
            say(alice, f"missed {index}")
        missed = read_until(alice, "missed 4")
        bob, replayed = apps[0].connect("kept", since=seen["offset"])  # back, on the other process
        assert replayed == missed[-5:] and texts(replayed) == [f"missed {index}" for index in range(5)]
        say(alice, "live")
        assert read_until(bob, "live")[-1]["text"] == "live"
        assert observer.keyslot("geventws:{history:kept}:history") == observer.keyslot("history:kept")
        assert observer.xlen("geventws:{history:kept}:history") == 7
        close_all(alice, bob)
    finally:
        for app in apps:
            app.stop()
        observer.close()
