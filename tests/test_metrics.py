"""Prometheus metrics: a scripted session against a real server, then /metrics scraped over HTTP."""

import socket
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
import pytest
import websocket
from conftest import Running, factory
from gevent.event import Event
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import geventws
from geventws.metrics import WebsocketMetrics

ORIGIN = "http://chat.example"
LIMIT = 64 * 1024
#: 1 MiB broadcasts to a client that never reads: more than the kernel's socket buffers hold.
BROADCASTS = 12


@dataclass
class Session:
    running: Running
    metrics: WebsocketMetrics
    gateway: geventws.WebsocketClientGateway
    server_clients: list[geventws.WebsocketClient] = field(default_factory=list)
    results: list[geventws.SendResult] = field(default_factory=list)
    #: Set once each server client's close callbacks ran, the metrics' and the gateway's included.
    accounted: dict[int, Event] = field(default_factory=dict)

    def connect(self, **options: Any) -> websocket.WebSocket:
        return self.running.connect("/chat", origin=ORIGIN, **options)

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(self.running.http_url + "/metrics", timeout=10) as reply:
            assert reply.status == 200
            assert reply.headers["Content-Type"].startswith("text/plain")
            text = reply.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def wait_all_closed(self) -> None:
        """Wait until every server client is closed and its close is counted.

        ``wait_closed()`` returns once the socket is released, and close
        callbacks (the metrics' among them) may run later, in a greenlet of
        their own: the test waits for a callback registered after theirs.
        """
        for client in self.server_clients:
            assert self.accounted[client.id].wait(10), client


def start_session(serve: Callable[..., Running], policy: geventws.SlowConsumerPolicy) -> Session:
    """A chat endpoint (origin-checked, 64 KiB limit) whose echoes and broadcasts go through one gateway."""
    metrics = WebsocketMetrics(CollectorRegistry())
    gateway = metrics.instrument_gateway(
        geventws.WebsocketClientGateway(max_pending_bytes=LIMIT, max_pending_messages=4, slow_consumer_policy=policy)
    )
    session_box: list[Session] = []

    def chat(client: geventws.WebsocketClient, request: Any, response: Any) -> None:
        gateway.add_client(client)
        # Close callbacks run in the order they were added: the metrics' (on_client) and the gateway's come first.
        client.on_close(lambda closed, info: session_box[0].accounted[closed.id].set())
        for message in client:
            text = str(message)
            if text == "raise":
                raise RuntimeError("the handler failed")
            if text.startswith("broadcast:"):
                size = int(text.partition(":")[2])
                session_box[0].results.append(gateway.broadcast_binary(b"x" * size, exclude=[client.id]))
                gateway.send_text("queued", client.id).wait(10)
            else:
                gateway.send_text(text, client.id).wait(10)

    def track(client: geventws.WebsocketClient) -> None:
        session_box[0].server_clients.append(client)
        session_box[0].accounted[client.id] = Event()

    @factory
    def app(server: geventws.Server) -> geventws.Router:
        client_factory = geventws.Rfc6455ClientFactory(
            message_size_limit=LIMIT, heartbeat=None, rate_limit=None, close_period=0.5
        )
        endpoint = geventws.Websocket(
            server,
            None,
            geventws.AllowOriginAcceptor([ORIGIN]),
            chat,
            client_factory=client_factory,
        )
        endpoint.on_client(track)
        router = geventws.Router()
        router.add_route("GET", "/chat", metrics.instrument(endpoint))
        router.add_route("GET", "/metrics", metrics.wsgi_app())
        return router

    session = Session(serve(app), metrics, gateway)
    session_box.append(session)
    return session


def stuck_client(session: Session) -> websocket.WebSocket:
    """A client that never reads, with a tiny receive buffer: its socket fills at once."""
    return session.connect(sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])


def received_close_code(client: websocket.WebSocket) -> int:
    opcode, frame = client.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    return int.from_bytes(frame.data[:2], "big")


def value(scraped: dict[Any, float], name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_scripted_session_scrapes_to_exactly_its_counts(serve):
    session = start_session(serve, geventws.SlowConsumerPolicy.CLOSE)
    n, m = 3, 4

    # A refused handshake: the origin is not allowed.
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        session.running.connect("/chat", origin="http://evil.example")
    assert refused.value.status_code == 403

    # n clients, m messages each, echoed through the gateway.
    clients = [session.connect() for _ in range(n)]
    for index, client in enumerate(clients):
        for number in range(m):
            client.send(f"hello {index}.{number}")
            assert client.recv() == f"hello {index}.{number}"

    live = session.scrape()
    assert value(live, "geventws_connections_open") == n
    assert value(live, "geventws_messages_received_total") == n * m
    assert value(live, "geventws_messages_sent_total") == n * m

    # One client breaks the message limit (1009), one handler raises (1011), the rest close normally.
    clients[0].send("x" * (LIMIT + 1))
    assert received_close_code(clients[0]) == 1009
    clients[1].send("raise")
    assert received_close_code(clients[1]) == 1011
    clients[2].close()

    # A slow consumer: 1 MiB broadcasts fill the kernel's buffers (a few MiB), then the gateway's bound.
    stuck = stuck_client(session)
    trigger = session.connect()
    for _ in range(BROADCASTS):
        trigger.send(f"broadcast:{1024 * 1024}")
        assert trigger.recv() == "queued"
    trigger.close()
    session.wait_all_closed()
    stuck.close()
    # What reached the stuck client whole before it was closed, as the gateway's results tell.
    stuck_deliveries = sum(len(result.successes) for result in session.results)
    assert stuck_deliveries < BROADCASTS

    scraped = session.scrape()
    assert value(scraped, "geventws_connections_open") == 0
    assert value(scraped, "geventws_handshakes_total", status="101") == n + 2
    assert value(scraped, "geventws_handshakes_total", status="403") == 1
    # n * m chat messages, "raise", the trigger's; the oversized one never became a message.
    assert value(scraped, "geventws_messages_received_total") == n * m + 1 + BROADCASTS
    assert value(scraped, "geventws_messages_sent_total") == n * m + BROADCASTS + stuck_deliveries
    assert value(scraped, "geventws_closes_total", code="1009", side="server") == 1
    assert value(scraped, "geventws_closes_total", code="1011", side="server") == 1
    assert value(scraped, "geventws_closes_total", code="1013", side="server") == 1
    assert value(scraped, "geventws_closes_total", code="1000", side="client") == 2
    assert sum(v for (name, _), v in scraped.items() if name == "geventws_closes_total") == n + 2
    assert value(scraped, "geventws_handler_exceptions_total") == 1
    assert value(scraped, "geventws_gateway_deliveries_total") == n * m + BROADCASTS + stuck_deliveries
    assert value(scraped, "geventws_gateway_slow_consumer_closes_total") == 1
    assert value(scraped, "geventws_gateway_slow_consumer_drops_total") == 0
    assert value(scraped, "geventws_gateway_pending_bytes") == 0
    # Bytes are the clients' own counters, summed over every connection, each at least its payloads.
    for direction in ("received", "sent"):
        total = sum(getattr(client.stats, f"bytes_{direction}") for client in session.server_clients)
        assert value(scraped, f"geventws_bytes_{direction}_total") == total
    assert value(scraped, "geventws_bytes_received_total") >= LIMIT + BROADCASTS * len(f"broadcast:{1024 * 1024}")
    assert value(scraped, "geventws_bytes_sent_total") >= sum(len(f"hello 0.{i}") for i in range(m)) * n


def test_drops_count_what_the_send_results_report_and_pending_bytes_are_live(serve):
    session = start_session(serve, geventws.SlowConsumerPolicy.DROP_OLDEST)
    stuck = stuck_client(session)
    trigger = session.connect()
    for _ in range(BROADCASTS):
        trigger.send(f"broadcast:{1024 * 1024}")
        assert trigger.recv() == "queued"

    scraped = session.scrape()
    dropped = sum(
        1
        for result in session.results
        for error in result.errors.values()
        if isinstance(error, geventws.SlowConsumerError)
    )
    assert dropped > 0
    assert value(scraped, "geventws_gateway_slow_consumer_drops_total") == dropped
    assert value(scraped, "geventws_gateway_slow_consumer_closes_total") == 0
    assert value(scraped, "geventws_gateway_pending_bytes") > 0
    assert value(scraped, "geventws_gateway_pending_bytes") == session.gateway.pending_bytes
    assert value(scraped, "geventws_connections_open") == 2
    trigger.close()
    stuck.close()
    session.wait_all_closed()


def test_two_metrics_objects_in_one_registry_are_refused():
    registry = CollectorRegistry()
    WebsocketMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        WebsocketMetrics(registry)


def test_a_redis_gateway_exports_its_messages_and_a_reconnect(serve, tmp_path):
    from redis_server import RedisProcess, server_binary

    from geventws.redis import RedisGateway

    binary = server_binary()
    redis = RedisProcess(tmp_path, binary)
    redis.start()
    metrics = WebsocketMetrics(CollectorRegistry())
    gateway = metrics.instrument_gateway(RedisGateway(redis.url, "metrics"))
    try:

        @factory
        def app(server: geventws.Server) -> geventws.Router:
            router = geventws.Router()
            router.add_route("GET", "/metrics", metrics.wsgi_app())
            return router

        running = serve(app)
        session = Session(running, metrics, gateway.local)
        gateway.broadcast_text("to every process")
        redis.stop()
        wait_until(lambda: not gateway.connected)
        redis.start()
        assert gateway.wait_connected(15)
        wait_until(lambda: gateway.counters()["reconnects"] == 1)

        scraped = session.scrape()
        assert value(scraped, "geventws_redis_reconnects_total") == 1
        assert value(scraped, "geventws_redis_messages_total", event="published") == gateway.counters()["published"]
        assert value(scraped, "geventws_redis_messages_total", event="published") >= 1
    finally:
        gateway.close()
        redis.stop()


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll a condition that no event announces (the Redis connection's state)."""
    with gevent.Timeout(timeout, AssertionError("condition not met in time")):
        while not condition():
            gevent.sleep(0.05)


def test_the_routes_of_a_flask_app_scrape_to_their_counts(serve):
    import flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    from geventws.flask import Websockets

    app = flask.Flask(__name__)
    metrics = WebsocketMetrics(CollectorRegistry())
    accounted: list[Event] = []

    def refuse_anonymous(view):
        def wrapper(**kwargs):
            if flask.request.args.get("user") is None:
                return "log in first", 401
            return view(**kwargs)

        return wrapper

    ws = Websockets(app)

    @ws.route("/chat")
    def chat(client: geventws.WebsocketClient) -> None:
        done = Event()
        accounted.append(done)
        client.on_close(lambda closed, info: done.set())  # after the metrics' own close callback
        for message in client:
            client.send_text(str(message))

    metrics.instrument_flask(ws)  # routes declared before and after the call are counted alike

    @ws.route("/private", decorators=[refuse_anonymous])
    def private(client: geventws.WebsocketClient) -> None:
        chat(client)

    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/metrics": metrics.wsgi_app()})  # type: ignore[method-assign]
    running = serve(app)
    session = Session(running, metrics, geventws.WebsocketClientGateway())

    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        running.connect("/chat", origin="https://evil.example")  # the routes' same-origin check
    assert refused.value.status_code == 403
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        running.connect("/private")  # refused by the view decorator
    assert refused.value.status_code == 401

    clients = [running.connect("/chat"), running.connect("/private?user=alice")]
    for index, client in enumerate(clients):
        for number in range(3):
            client.send(f"hello {index}.{number}")
            assert client.recv() == f"hello {index}.{number}"
    live = session.scrape()
    assert value(live, "geventws_connections_open") == 2
    assert value(live, "geventws_messages_received_total") == 6
    for client in clients:
        client.close()
    assert all(done.wait(10) for done in accounted)

    scraped = session.scrape()
    assert value(scraped, "geventws_connections_open") == 0
    assert value(scraped, "geventws_handshakes_total", status="101") == 2
    assert value(scraped, "geventws_handshakes_total", status="403") == 1
    assert value(scraped, "geventws_handshakes_total", status="401") == 1
    assert value(scraped, "geventws_messages_received_total") == 6
    assert value(scraped, "geventws_messages_sent_total") == 6
    assert value(scraped, "geventws_closes_total", code="1000", side="client") == 2
    assert value(scraped, "geventws_bytes_received_total") > sum(len(f"hello 0.{n}") for n in range(3)) * 2
