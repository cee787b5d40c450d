"""Messages, control frames and closing, seen from a real websocket-client peer."""

import logging
import os
import socket
import time

import gevent
import pytest
import websocket
from conftest import close_code, echo_handler, factory, handshake_request, masked_frame, raw_exchange
from gevent.event import AsyncResult, Event
from websocket import ABNF

import geventws
from geventws import CloseCode, WebsocketClosedException, WebsocketCount, WebsocketTimestamp


def endpoint(handler, **factory_options):
    factory_options.setdefault("rate_limit", None)
    client_factory = geventws.Rfc6455ClientFactory(**factory_options)
    return factory(
        lambda server: geventws.Websocket(
            server, logging.getLogger("tests.ws"), None, handler, client_factory=client_factory
        )
    )


def capture_client():
    """A handler that hands its client to the test, then waits until the test lets it go."""
    seen: AsyncResult = AsyncResult()
    done = gevent.event.Event()

    def handler(client, request, response):
        seen.set(client)
        done.wait(30)

    return handler, seen, done


@pytest.mark.parametrize("text", ["hello", "héllo wörld ✓ 𝄞", "", "x" * 70000])
def test_echo_text(echo, text):
    client = echo.connect()
    client.send(text)
    opcode, data = client.recv_data()
    assert opcode == ABNF.OPCODE_TEXT
    assert data.decode("utf-8") == text
    client.close()


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 5 * 1024 * 1024])
def test_echo_binary(echo, size):
    payload = os.urandom(size)
    client = echo.connect()
    client.send_binary(payload)
    opcode, data = client.recv_data()
    assert opcode == ABNF.OPCODE_BINARY
    assert data == payload
    client.close()


def test_fragmented_text_from_client_split_inside_a_character(echo):
    encoded = "ünïcödé 𝄞 fragments".encode()
    client = echo.connect()
    client.send_frame(ABNF.create_frame(encoded[:2], ABNF.OPCODE_TEXT, fin=0))
    client.send_frame(ABNF.create_frame(encoded[2:11], ABNF.OPCODE_CONT, fin=0))
    client.ping(b"in between")
    client.send_frame(ABNF.create_frame(encoded[11:], ABNF.OPCODE_CONT, fin=1))
    opcode, frame = client.recv_data_frame(control_frame=True)
    assert (opcode, frame.data) == (ABNF.OPCODE_PONG, b"in between")
    assert client.recv() == encoded.decode()
    client.close()


def test_message_chunks_are_readable_before_the_message_completes(serve):
    chunks = []
    finished = Event()

    def handler(client, request, response):
        message = client.receive()
        chunks.append(message.read())
        client.send_text("got first chunk")
        chunks.extend(message)
        finished.set()

    running = serve(endpoint(handler))
    client = running.connect()
    client.send_frame(ABNF.create_frame(b"first", ABNF.OPCODE_BINARY, fin=0))
    assert client.recv() == "got first chunk"
    client.send_frame(ABNF.create_frame(b"second", ABNF.OPCODE_CONT, fin=1))
    assert finished.wait(5)
    assert chunks == [b"first", b"second"]
    client.close()


def test_ping_from_client_is_answered_even_while_the_handler_is_busy(serve):
    handler, seen, done = capture_client()
    running = serve(endpoint(handler))
    client = running.connect()
    client.ping(b"payload")
    opcode, frame = client.recv_data_frame(control_frame=True)
    assert (opcode, frame.data) == (ABNF.OPCODE_PONG, b"payload")
    assert seen.get(5).stats.pings_received == 1
    done.set()
    client.close()


def test_server_ping_measures_latency(serve):
    handler, seen, done = capture_client()
    running = serve(endpoint(handler))
    client = running.connect()
    server_side = seen.get(5)
    server_side.ping()
    opcode, frame = client.recv_data_frame(control_frame=True)
    assert opcode == ABNF.OPCODE_PING
    client.pong(frame.data)
    deadline = time.monotonic() + 5
    while server_side.latency is None and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert server_side.latency is not None and server_side.latency >= 0
    assert server_side.unanswered_pings == 0
    done.set()
    client.close()


def test_client_close_code_and_reason_reach_the_handler_and_are_echoed(serve):
    infos = AsyncResult()

    def handler(client, request, response):
        assert client.receive() is None
        infos.set(client.close_info)

    running = serve(endpoint(handler))
    client = running.connect()
    client.send_close(4001, b"bye now")
    opcode, frame = client.recv_data_frame(control_frame=True)
    assert opcode == ABNF.OPCODE_CLOSE
    assert close_code(frame.data) == 4001
    info = infos.get(5)
    assert (info.code, info.reason, info.by_peer) == (4001, "bye now", True)


def test_empty_close_from_client_is_answered_with_an_empty_close(serve):
    infos = AsyncResult()

    def handler(client, request, response):
        client.receive()
        infos.set(client.close_info)

    running = serve(endpoint(handler))
    sock = socket.create_connection(("127.0.0.1", running.port))
    sock.sendall(handshake_request(running.port))
    assert sock.recv(4096).startswith(b"HTTP/1.1 101")
    sock.sendall(masked_frame(0x8, b""))
    assert sock.recv(100) == b"\x88\x00"
    assert sock.recv(100) == b"", "the server closes TCP after the close handshake"
    assert infos.get(5).code == CloseCode.NONE
    sock.close()


def test_server_close_code_reaches_the_client(serve):
    def handler(client, request, response):
        client.close(4002, "server says bye")
        assert client.is_closed
        assert client.close_info.by_peer is False

    running = serve(endpoint(handler))
    client = running.connect()
    opcode, frame = client.recv_data_frame(control_frame=True)
    assert opcode == ABNF.OPCODE_CLOSE
    assert close_code(frame.data) == 4002
    assert frame.data[2:] == b"server says bye"


def test_handler_return_closes_with_1000(serve):
    running = serve(endpoint(lambda client, request, response: client.send_text("done")))
    client = running.connect()
    assert client.recv() == "done"
    opcode, frame = client.recv_data_frame(control_frame=True)
    assert (opcode, close_code(frame.data)) == (ABNF.OPCODE_CLOSE, 1000)


def test_handler_exception_closes_with_1011_and_is_logged(serve, caplog):
    def handler(client, request, response):
        raise RuntimeError("boom in handler")

    running = serve(endpoint(handler))
    with caplog.at_level(logging.ERROR, logger="tests.ws"):
        client = running.connect()
        opcode, frame = client.recv_data_frame(control_frame=True)
    assert (opcode, close_code(frame.data)) == (ABNF.OPCODE_CLOSE, 1011)
    records = [r for r in caplog.records if r.name == "tests.ws"]
    assert records and records[0].exc_info and "boom in handler" in str(records[0].exc_info[1])


def test_closed_exception_from_handler_is_not_logged(serve, caplog):
    finished = gevent.event.Event()

    def handler(client, request, response):
        try:
            client.receive()
            client.send_text("too late")
        finally:
            finished.set()

    running = serve(endpoint(handler))
    with caplog.at_level(logging.DEBUG, logger="tests.ws"):
        client = running.connect()
        client.close()
        assert finished.wait(5)
        while running.app.clients:  # the endpoint has finished with the connection (and logged, if at all)
            gevent.sleep(0.01)
    assert not [r for r in caplog.records if r.name == "tests.ws" and r.levelno >= logging.WARNING]


def test_send_after_close_raises_closed_exception(serve):
    outcome = AsyncResult()

    def handler(client, request, response):
        client.close(1000)
        try:
            client.send_text("after close")
        except WebsocketClosedException as error:
            outcome.set(error)

    running = serve(endpoint(handler))
    client = running.connect()
    client.recv_data_frame(control_frame=True)
    error = outcome.get(5)
    assert error.code == 1000


def test_invalid_utf8_closes_with_1007_not_by_peer(serve):
    handler, seen, done = capture_client()
    running = serve(endpoint(handler))
    client = running.connect()
    client.send_frame(
        ABNF.create_frame(b"\xff\xfe", ABNF.OPCODE_TEXT, fin=1),
    )
    opcode, frame = client.recv_data_frame(control_frame=True)
    assert (opcode, close_code(frame.data)) == (ABNF.OPCODE_CLOSE, 1007)
    assert client.sock.recv(1) == b"", "after failing, the server stops writing"
    client.sock.close()  # the peer closes too: no close-period wait
    server_side = seen.get(5)
    assert server_side.wait_closed(5)
    assert (server_side.close_info.code, server_side.close_info.by_peer) == (1007, False)
    done.set()


def test_tcp_drop_is_recorded_as_1006(serve):
    handler, seen, done = capture_client()
    running = serve(endpoint(handler))
    client = running.connect()
    server_side = seen.get(5)
    client.sock.close()
    assert server_side.wait_closed(5)
    assert server_side.close_info.code == CloseCode.ABNORMAL_CLOSE
    assert server_side.receive() is None
    done.set()


def test_closing_the_servers_socket_under_the_reader_ends_the_connection_as_lost(serve, monkeypatch):
    errors = []
    hub = gevent.get_hub()
    monkeypatch.setattr(hub, "handle_error", lambda context, kind, value, tb: errors.append(value))
    handler, seen, done = capture_client()
    running = serve(endpoint(handler))
    client = running.connect()
    server_side = seen.get(5)
    server_side._socket.close()  # as a WSGI server does once its handler returns
    assert server_side.wait_closed(5)
    assert server_side.close_info.code == CloseCode.ABNORMAL_CLOSE
    assert server_side.receive() is None
    assert errors == []
    client.close()
    done.set()


def test_on_close_callback_runs_once_with_the_info(serve):
    calls = []
    handler, seen, done = capture_client()
    running = serve(endpoint(handler))
    client = running.connect()
    server_side = seen.get(5)
    server_side.on_close(lambda c, info: calls.append(info.code))
    client.close(status=4005)
    assert server_side.wait_closed(5)
    server_side.on_close(lambda c, info: calls.append(-info.code))
    assert calls == [4005, -4005]
    done.set()


def test_concurrent_senders_never_interleave_messages(serve):
    senders = 20
    size = 100_000  # several frames and more than one write batch each: held under the message lock

    def handler(client, request, response):
        def send(index):
            client.send_text(chr(ord("A") + index % 26) * size + str(index))

        gevent.joinall([gevent.spawn(send, index) for index in range(senders)], raise_error=True)
        client.receive()

    running = serve(endpoint(handler))
    client = running.connect()
    received = set()
    for _ in range(senders):
        message = client.recv()
        body, index = message[:size], int(message[size:])
        assert body == chr(ord("A") + index % 26) * size
        received.add(index)
    assert received == set(range(senders))
    client.close()


def test_stream_text_sends_one_fragmented_message(serve):
    def handler(client, request, response):
        client.stream_text(iter(["one ", "two ", "three"]))
        client.stream_binary(b"x" * 40_000 for _ in range(3))
        client.receive()

    running = serve(endpoint(handler))
    client = running.connect()
    opcode, frame = client.recv_data_frame()
    assert opcode == ABNF.OPCODE_TEXT and frame.data == b"one two three"
    opcode, frame = client.recv_data_frame()
    assert opcode == ABNF.OPCODE_BINARY and frame.data == b"x" * 120_000
    client.close()


def test_failed_stream_closes_with_1011(serve):
    def chunks():
        yield "partial"
        raise ValueError("source failed")

    def handler(client, request, response):
        client.stream_text(chunks())

    running = serve(endpoint(handler))
    client = running.connect()
    opcode, frame = client.recv_data_frame(control_frame=True)
    assert opcode == ABNF.OPCODE_CLOSE
    assert close_code(frame.data) == 1011


def test_receive_timeout(serve):
    outcome = AsyncResult()

    def handler(client, request, response):
        try:
            client.receive(timeout=0.1)
        except TimeoutError as error:
            outcome.set(error)

    running = serve(endpoint(handler))
    client = running.connect()
    assert isinstance(outcome.get(5), TimeoutError)
    client.close()


def settled(read, interval=0.2, timeout=10):
    """The value of ``read()`` once it stopped changing (TCP backpressure reached)."""
    deadline = time.monotonic() + timeout
    last = read()
    while time.monotonic() < deadline:
        gevent.sleep(interval)
        value = read()
        if value == last:
            return value
        last = value
    raise AssertionError(f"still changing after {timeout} s: {last}")


def test_reader_stops_reading_when_the_handler_does_not_consume(serve):
    window = 256 * 1024
    handler, seen, done = capture_client()
    running = serve(endpoint(handler, receive_window=window))
    client = running.connect()
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    server_side = seen.get(5)
    chunk = b"z" * 65536
    flooder = gevent.spawn(lambda: [client.send_binary(chunk) for _ in range(2000)])  # 128 MiB unless pushed back
    received = settled(lambda: server_side.stats.bytes_received)
    assert not flooder.dead, "the sender is blocked by TCP backpressure"
    # The window is checked before each read, and one read may hold a read's worth more.
    assert received <= window + geventws.connection.reader.READ_SIZE + 65536
    flooder.kill()
    client.sock.close()
    done.set()


def test_a_frame_below_the_whole_frame_limit_still_stops_the_reader_at_the_receive_window(serve):
    window = 128 * 1024
    handler, seen, done = capture_client()
    running = serve(endpoint(handler, receive_window=window))
    client = running.connect()
    server_side = seen.get(5)
    sender = gevent.spawn(client.send_binary, b"z" * (900 * 1024))  # one frame, delivered whole under a 1 MiB window
    received = settled(lambda: server_side.stats.bytes_received)
    assert received <= window + geventws.connection.reader.READ_SIZE + 65536
    sender.kill()
    client.sock.close()
    done.set()


def test_counters_and_timestamps(serve):
    handler, seen, done = capture_client()
    running = serve(endpoint(handler))
    client = running.connect()
    server_side = seen.get(5)
    before = time.time()
    client.send("abc")
    message = server_side.receive(5)
    assert str(message) == "abc"
    server_side.send_binary(b"12345")
    assert client.recv() == b"12345"
    stats = server_side.stats
    assert stats.messages_received == 1
    assert stats.messages_sent == 1
    assert stats.frames_sent == 1
    assert stats.bytes_sent == 2 + 5
    assert stats.bytes_received == 6 + 3
    assert stats.last_data_read >= before
    assert stats.connected <= before
    assert stats.closed == 0.0
    with pytest.warns(DeprecationWarning):
        assert server_side.count(WebsocketCount.MESSAGES_SENT) == 1
    with pytest.warns(DeprecationWarning):
        assert server_side.timestamp(WebsocketTimestamp.CONNECTED) == stats.connected
    done.set()
    client.close()


def test_plain_http_through_the_endpoint_is_refused_with_426(echo):
    code, headers, _ = raw_exchange(echo.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert code == 426


def test_many_greenlets_many_clients(echo):
    def one(index):
        client = echo.connect()
        for round_ in range(3):
            client.send(f"{index}:{round_}")
            assert client.recv() == f"{index}:{round_}"
        client.close()

    greenlets = [gevent.spawn(one, index) for index in range(200)]
    gevent.joinall(greenlets, timeout=60, raise_error=True)
    assert all(g.successful() for g in greenlets)


def test_bad_status_for_websocket_client_library(serve):
    running = serve(endpoint(lambda c, rq, rs: None))
    with pytest.raises(websocket.WebSocketBadStatusException):
        websocket.create_connection(running.url, header={"Sec-WebSocket-Version": "7"}, timeout=5)


def test_a_flood_of_empty_messages_is_bounded_by_the_receive_window(serve):
    window = 64 * 1024
    handler, seen, done = capture_client()
    running = serve(endpoint(handler, receive_window=window))
    client = running.connect()
    server_side = seen.get(5)
    empty = ABNF.create_frame(b"", ABNF.OPCODE_BINARY).format()
    flooder = gevent.spawn(lambda: [client.sock.sendall(empty * 100) for _ in range(200_000)])
    queued = settled(lambda: server_side.stats.messages_received)
    assert not flooder.dead, "the sender is blocked by TCP backpressure"
    # Each queued message counts MESSAGE_COST; one read may add a read's worth of 6-byte frames.
    reader_module = geventws.connection.reader
    assert queued <= window // reader_module.MESSAGE_COST + reader_module.READ_SIZE // 6 + 1
    flooder.kill()
    client.sock.close()
    done.set()


def test_the_addresses_are_the_sockets_and_the_local_one_is_shared_by_a_listeners_clients(serve):
    clients = []

    def handler(client, request, response):
        clients.append(client)
        for _ in client:
            pass

    running = serve(endpoint(handler))
    peers = [running.connect() for _ in range(2)]
    deadline = time.monotonic() + 5
    while len(clients) < 2 and time.monotonic() < deadline:
        gevent.sleep(0.01)
    first, second = clients
    assert first.local_address == ("127.0.0.1", running.port)
    assert first.local_address is second.local_address  # one tuple for every connection of the listener
    assert {first.remote_address, second.remote_address} == {peer.sock.getsockname() for peer in peers}
    for peer in peers:
        peer.close()


@pytest.mark.parametrize("engine", ["fast", "wsproto"])
def test_a_size_limit_changed_on_the_factory_applies_to_the_next_client(serve, engine):
    client_factory = geventws.Rfc6455ClientFactory(rate_limit=None, message_size_limit=1000, engine=engine)
    app = factory(lambda server: geventws.Websocket(server, None, None, echo_handler, client_factory=client_factory))
    running = serve(app)
    before = running.connect()
    before.send_binary(b"x" * 800)
    assert before.recv() == b"x" * 800
    client_factory.message_size_limit = client_factory.frame_size_limit = 500
    after = running.connect()
    after.send_binary(b"x" * 800)
    opcode, payload = after.recv_data(control_frame=True)
    assert (opcode, close_code(payload)) == (ABNF.OPCODE_CLOSE, 1009)
    before.send_binary(b"y" * 800)  # the first client keeps the limit it was made with
    assert before.recv() == b"y" * 800
    before.close()
    after.close()


def test_iterating_a_client_yields_each_message_once_until_the_close(serve):
    handler, seen, done = capture_client()
    running = serve(endpoint(handler))
    peer = running.connect()
    client = seen.get(timeout=5)
    assert iter(client) is client
    peer.send("one")
    peer.send_binary(b"two")
    assert str(next(client)) == "one"
    peer.close()
    assert [bytes(message.buffer()) for message in client] == [b"two"]
    assert list(client) == []  # a second loop after the close ends at once
    with pytest.raises(StopIteration):
        next(client)
    done.set()
