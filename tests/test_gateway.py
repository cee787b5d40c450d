"""Broadcasting through WebsocketClientGateway to real clients."""

import base64
import os
import socket
import time

import gevent
import psutil
import pytest
from conftest import close_code, factory, handshake_request
from gevent.event import Event

import geventws
from geventws import SlowConsumerError, SlowConsumerPolicy, UnknownClientError, WebsocketClientGateway


def gateway_app(gateway, joined=None):
    """Clients join the gateway; a text "close" from a client makes the server close it."""

    def handler(client, request, response):
        gateway.add_client(client)
        if joined is not None:
            joined.append(client)
        client.send_text(f"id:{client.id}")
        for message in client:
            if str(message) == "close":
                client.close(4000, "asked to")

    return factory(lambda server: geventws.Websocket(server, None, None, handler))


def join(running, count):
    clients = []
    for _ in range(count):
        client = running.connect()
        client_id = int(client.recv().split(":")[1])
        clients.append((client_id, client))
    return clients


def test_200_clients_receive_50_broadcasts_in_order(serve):
    gateway = WebsocketClientGateway()
    running = serve(gateway_app(gateway))
    clients = gevent.joinall([gevent.spawn(join, running, 10) for _ in range(20)], raise_error=True)
    clients = [pair for greenlet in clients for pair in greenlet.value]
    assert len(gateway.get_clients()) == 200
    results = [gateway.broadcast_text(f"message {index}") for index in range(50)]

    def read_all(client):
        return [client.recv() for _ in range(50)]

    readers = [gevent.spawn(read_all, client) for _, client in clients]
    gevent.joinall(readers, timeout=60, raise_error=True)
    expected = [f"message {index}" for index in range(50)]
    assert all(reader.value == expected for reader in readers)
    for result in results:
        result.wait(10)
        assert sorted(result.successes) == sorted(client_id for client_id, _ in clients)
        assert result.errors == {}
    for _, client in clients:
        client.close()


def test_exclude_multicast_and_send_to_one_id_keep_per_client_order(serve):
    gateway = WebsocketClientGateway()
    running = serve(gateway_app(gateway))
    (a_id, a), (b_id, b), (c_id, c) = join(running, 3)
    gateway.broadcast_text("all but a", exclude=[a_id]).wait(5)
    gateway.multicast_binary(b"a and c", [a_id, c_id, 999_999]).wait(5)
    gateway.send_text("just b 1", b_id)
    gateway.broadcast_text("everyone")
    gateway.send_text("just b 2", b_id).wait(5)
    assert [a.recv(), a.recv()] == [b"a and c", "everyone"]
    assert [b.recv(), b.recv(), b.recv(), b.recv()] == ["all but a", "just b 1", "everyone", "just b 2"]
    assert [c.recv(), c.recv(), c.recv()] == ["all but a", b"a and c", "everyone"]
    unknown = gateway.send_text("nobody", 999_999).wait(1)
    assert isinstance(unknown.errors[999_999], UnknownClientError)


def test_clients_leave_the_gateway_when_either_side_closes(serve):
    gateway = WebsocketClientGateway()
    joined = []
    running = serve(gateway_app(gateway, joined))
    (a_id, a), (b_id, b), (c_id, c) = join(running, 3)
    # Close callbacks run in the order they were added: once ours ran, the gateway's had.
    left = {client.id: Event() for client in joined}
    for client in joined:
        client.on_close(lambda closed, info: left[closed.id].set())
    a.close()
    b.send("close")  # the server closes b
    opcode, frame = b.recv_data_frame(control_frame=True)
    assert close_code(frame.data) == 4000
    assert left[a_id].wait(5) and left[b_id].wait(5)
    assert list(gateway.get_clients()) == [c_id]
    result = gateway.broadcast_text("only c").wait(5)
    assert result.successes == [c_id]
    assert c.recv() == "only c"


def test_broadcast_racing_a_close_reports_it_in_the_result(serve):
    gateway = WebsocketClientGateway()
    joined = []
    running = serve(gateway_app(gateway, joined))
    (a_id, a), (b_id, b) = join(running, 2)
    server_side_a = next(client for client in joined if client.id == a_id)
    server_side_a.abort()  # TCP gone; the gateway has not been told yet
    result = gateway.broadcast_binary(b"x" * 200_000).wait(5)
    assert b_id in result.successes
    # The gateway writes at once in the caller's greenlet: the write to the dropped socket fails.
    error = result.errors[a_id]
    assert isinstance(error, geventws.WebsocketClosedException) and error.code == 1006
    assert b.recv() == b"x" * 200_000
    second = gateway.broadcast_text("again").wait(5)
    assert a_id not in second.successes


def stalled_connection(port):
    """Connects and completes the handshake, then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(handshake_request(port, headers={"Sec-WebSocket-Key": key}))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    line = b""
    while not line.endswith(b"\r\n"):  # our own id message is 2 + len("id:N") bytes
        line += sock.recv(1)
        if line.startswith(b"\x81") and len(line) >= 2 and len(line) == 2 + line[1]:
            break
    return sock


@pytest.mark.parametrize("policy", [SlowConsumerPolicy.CLOSE, SlowConsumerPolicy.DROP_OLDEST])
def test_a_stalled_client_neither_delays_others_nor_grows_memory(serve, policy):
    max_pending = 1024 * 1024
    gateway = WebsocketClientGateway(max_pending_bytes=max_pending, slow_consumer_policy=policy)
    joined = []
    running = serve(gateway_app(gateway, joined))
    stalled = stalled_connection(running.port)
    healthy = join(running, 5)
    message_size = 64 * 1024
    count = 640  # 40 MiB in all
    process = psutil.Process()
    rss_before = process.memory_info().rss
    peak_pending = [0]
    received = {client_id: 0 for client_id, _ in healthy}

    def read(client_id, client):
        for _ in range(count):
            assert len(client.recv()) == message_size
            received[client_id] += 1

    readers = [gevent.spawn(read, client_id, client) for client_id, client in healthy]
    started = time.monotonic()
    results = []
    for index in range(count):
        results.append(gateway.broadcast_binary(bytes([index % 256]) * message_size))
        outbox = gateway._outboxes.get(joined[0].id)
        if outbox is not None:
            peak_pending[0] = max(peak_pending[0], outbox.size)
        gevent.sleep(0.002)
    gevent.joinall(readers, timeout=30, raise_error=True)
    elapsed = time.monotonic() - started
    assert all(value == count for value in received.values()), received
    assert elapsed < 20
    assert peak_pending[0] <= max_pending
    rss_growth = process.memory_info().rss - rss_before
    assert rss_growth < 16 * 1024 * 1024, f"RSS grew by {rss_growth / 2**20:.1f} MiB"
    stalled_id = joined[0].id
    failures = [result.errors[stalled_id] for result in results if stalled_id in result.errors]
    assert failures and all(
        isinstance(error, (SlowConsumerError, geventws.WebsocketClosedException)) for error in failures
    )
    if policy is SlowConsumerPolicy.CLOSE:
        assert joined[0].wait_closed(5)
        assert joined[0].close_info.code == 1013
        assert stalled_id not in gateway.get_clients()
    else:
        assert not joined[0].is_closed
    stalled.close()


def test_compressed_and_plain_clients_both_receive_broadcasts(serve):
    """Clients with their own compression context get frames of their own."""
    if not hasattr(geventws, "Rfc7692CompressionFactory"):
        pytest.skip("compression not available")
    gateway = WebsocketClientGateway()

    def handler(client, request, response):
        gateway.add_client(client)
        client.send_text("joined")
        for _ in client:
            pass

    compression = geventws.Rfc7692CompressionFactory()
    endpoint = factory(lambda server: geventws.Websocket(server, None, None, handler, compression_factory=compression))
    running = serve(endpoint)
    plain = running.connect()
    assert plain.recv() == "joined"
    raw = socket.create_connection(("127.0.0.1", running.port))
    raw.sendall(handshake_request(running.port, headers={"Sec-WebSocket-Extensions": "permessage-deflate"}))
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(1)
    assert b"permessage-deflate" in head.lower()
    raw.recv(100)  # "joined", compressed
    gateway.broadcast_text("hello " * 100).wait(5)
    assert plain.recv() == "hello " * 100
    frame_start = raw.recv(2)
    assert frame_start[0] == 0xC1, "text frame with RSV1: compressed for this client"
    raw.close()


def test_result_wait_times_out_while_a_write_is_blocked(serve):
    gateway = WebsocketClientGateway(max_pending_bytes=64 * 1024 * 1024, max_pending_messages=10_000)
    joined = []
    running = serve(gateway_app(gateway, joined))
    stalled = stalled_connection(running.port)
    result = gateway.broadcast_binary(b"y" * (8 * 1024 * 1024))
    with pytest.raises(TimeoutError):
        result.wait(0.3)
    stalled.close()
    result.wait(5)
    assert joined[0].id in result.errors


def test_a_broadcast_begun_without_blocking_is_finished_before_any_other_send(serve):
    """A large broadcast fills the socket: the rest goes out before a handler's own send."""
    gateway = WebsocketClientGateway(max_pending_bytes=8 * 1024 * 1024)
    joined = []
    running = serve(gateway_app(gateway, joined))
    ((client_id, client),) = join(running, 1)
    server_side = joined[0]
    big = os.urandom(4 * 1024 * 1024)
    result = gateway.broadcast_binary(big)
    assert not result.done, "4 MiB do not fit in the socket buffers at once"
    sender = gevent.spawn(server_side.send_text, "after the broadcast")
    assert client.recv() == big
    assert client.recv() == "after the broadcast"
    result.wait(5)
    assert result.successes == [client_id]
    sender.join(5)
