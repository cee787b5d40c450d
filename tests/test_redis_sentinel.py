"""RedisGateway on a Sentinel set whose master is SIGKILLed while three processes serve 30 clients."""

import time

import gevent
import pytest
import redis
from redis.sentinel import Sentinel as SentinelClient
from redis_server import server_binary
from redis_topologies import SERVICE, SentinelSet
from test_redis import close_all, command, start_apps, wait_for

from geventws.redis import RedisEmitter, RedisGateway


@pytest.fixture(scope="session")
def sentinel_set(tmp_path_factory):
    binary = server_binary()
    sentinels = SentinelSet(tmp_path_factory.mktemp("sentinel"), binary, down_after_ms=1000)
    sentinels.start()
    yield sentinels
    sentinels.stop()


def test_a_sentinel_url_and_a_master_for_client_reach_the_same_room(sentinel_set, serve):
    from test_redis import gateway_app

    client = SentinelClient([("127.0.0.1", s.port) for s in sentinel_set.sentinels]).master_for(SERVICE)
    by_url, by_client = RedisGateway(sentinel_set.url(), "sentinel"), RedisGateway(client, "sentinel")
    try:
        assert "sentinel geventws" in by_url._shared.name  # logs name the service, never a password
        a = serve(gateway_app(by_url)).connect()
        b = serve(gateway_app(by_client)).connect()
        a_id, b_id = int(a.recv()[3:]), int(b.recv()[3:])
        a.send("from a")
        assert a.recv() == "from a" and b.recv() == "from a"
        emitter = RedisEmitter(sentinel_set.url())
        assert emitter.multicast_text("sentinel", [a_id, b_id], "both") == 2
        emitter.close()
        assert a.recv() == "both" and b.recv() == "both"
        assert by_url.count_clients() == 2 and by_client.get_client_ids() == {a_id, b_id}
        close_all(a, b)
    finally:
        by_url.close()
        by_client.close()
        client.close()


def test_bad_sentinel_urls_are_clear_errors_at_construction():
    for url, message in [
        ("redis+sentinel://127.0.0.1:1/", "no service name"),
        ("redis+sentinel://127.0.0.1/x", "is not host:port"),
        ("redis+sentinel://127.0.0.1:99999/x", "is not host:port"),
        ("redis+sentinel://:secret@127.0.0.1:1,/x", "is not host:port"),
        ("redis+sentinel://127.0.0.1:1/x/zero", "the db 'zero' is not a number"),
    ]:
        with pytest.raises(ValueError, match=message) as error:
            RedisGateway(url, "bad")
        assert "secret" not in str(error.value)


def test_the_master_killed_mid_stream_broadcasts_reach_everyone_again_within_seconds(sentinel_set, tmp_path):
    apps = start_apps(sentinel_set.url(), tmp_path, 3)
    try:
        clients = [app.connect("failover") for app in apps for _ in range(10)]
        publishers = [clients[index * 10][1] for index in range(3)]
        tags = [f"P{index}" for index in range(3)]
        for ws, tag in zip(publishers, tags, strict=True):
            command(ws, "ticker", tag=tag, count=300, interval=0.03)  # about 9 s of broadcasts from each process

        received = [[] for _ in clients]

        def read(ws, messages):
            ends = 0
            while ends < 3:
                message = ws.recv()
                messages.append(message)
                ends += message.endswith(":end")

        readers = [gevent.spawn(read, ws, messages) for (_, ws), messages in zip(clients, received, strict=True)]
        old_master = sentinel_set.master()
        # every client has broadcasts of every process before the failure
        wait_for(lambda: all(len({m[:2] for m in messages}) == 3 for messages in received), 10)
        killed_at = time.time()
        old_master.kill()
        wait_for(lambda: sentinel_set.master_port() != old_master.port, 30)  # promoted
        promoted_at = time.time()
        gevent.joinall(readers, timeout=60, raise_error=True)
        assert all(reader.successful() for reader in readers)

        for messages in received:
            assert len(messages) == len(set(messages))  # at most once
            for tag in tags:
                numbers = [int(m.split(":")[1]) for m in messages if m.startswith(tag + ":") and not m.endswith(":end")]
                assert numbers == sorted(numbers)  # in order per publisher
        # the first broadcast sent after the kill that every client got, from each process
        recovered = []
        for tag in tags:
            stamps = [
                {float(m.split(":")[2]) for m in messages if m.startswith(tag + ":") and not m.endswith(":end")}
                for messages in received
            ]
            everywhere = set.intersection(*stamps)
            after = sorted(stamp for stamp in everywhere if stamp > killed_at)
            assert after, f"no broadcast of {tag} after the kill reached every client"
            recovered.append(after[0] - killed_at)
        lost = [300 * 3 - (len(messages) - 3) for messages in received]
        print(
            f"failover: promoted {promoted_at - killed_at:.2f} s after the kill; first broadcast reaching all 30"
            f" clients again {max(recovered):.2f} s after it (per process {[round(r, 2) for r in recovered]});"
            f" lost per client {min(lost)}..{max(lost)}"
        )
        assert max(recovered) < promoted_at - killed_at + 5  # within seconds of the promotion
        for app in apps:
            log = app.log()
            assert log.count("Lost Redis") == 1, log[-3000:]
            wait_for(lambda app=app: "is back" in app.log(), 10)
            assert app.log().count("is back") == 1
        for _, ws in clients:
            assert ws.connected  # no WebSocket client was closed
        close_all(*(ws for _, ws in clients))
    finally:
        for app in apps:
            app.stop()
        restore(sentinel_set)


def restore(sentinel_set):
    """Bring the killed server back (as a replica of the new master), for the tests after this one."""
    for server in sentinel_set.servers:
        if server.process is None:
            server.args = ("--replicaof", "127.0.0.1", str(sentinel_set.master_port()))
            server.start()
            sentinel_set.wait_in_sync(server)
    client = redis.Redis(port=sentinel_set.master_port())
    client.close()
