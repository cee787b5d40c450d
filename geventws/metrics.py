"""Prometheus metrics for endpoints and gateways (``pip install geventws[metrics]``).

One :class:`WebsocketMetrics` per process, wired with one call per endpoint
and per gateway, and scraped through prometheus-client's WSGI app, routed
like any other::

    metrics = WebsocketMetrics()
    router.add_route("GET", "/chat", metrics.instrument(websocket))
    metrics.instrument_gateway(gateway)
    router.add_route("GET", "/metrics", metrics.wsgi_app())

and for the routes of a Flask app (:mod:`geventws.flask`)::

    ws = metrics.instrument_flask(Websockets(app))

Nothing is recorded on the hot path: the counts come from what the library
keeps anyway.  Messages and bytes are each client's own counters
(``client.stats``), added to the
totals when it closes and read from the open clients at scrape time;
gateways count their deliveries and slow consumers in plain integers, read
at scrape time too.  Handshakes are counted by wrapping the endpoint's
``start_response`` (refusals) and by
:meth:`Websocket.on_client <geventws.Websocket.on_client>` (101s), closes by
:meth:`WebsocketClient.on_close <geventws.WebsocketClient.on_close>`: once per
connection.  An endpoint or gateway without metrics pays nothing more.

Exported, with the default ``namespace`` ``geventws``:

===============================================  =======  ==============================================================
``geventws_connections_open``                    gauge    open WebSocket connections
``geventws_handshakes_total{status}``            counter  handshake answers by HTTP status (101: accepted)
``geventws_messages_received_total``             counter  messages received from clients
``geventws_messages_sent_total``                 counter  messages sent to clients
``geventws_bytes_received_total``                counter  bytes read from clients' sockets after the 101
``geventws_bytes_sent_total``                    counter  bytes written to clients' sockets after the 101
``geventws_closes_total{code,side}``             counter  closed connections by close code and the side that began
``geventws_handler_exceptions_total``            counter  handlers that raised (their client was closed with 1011)
``geventws_gateway_deliveries_total``            counter  gateway messages written whole to one client
``geventws_gateway_slow_consumer_closes_total``  counter  clients a gateway closed for being too slow
``geventws_gateway_slow_consumer_drops_total``   counter  pending messages a gateway dropped for slow clients
``geventws_gateway_pending_bytes``               gauge    bytes queued in gateways for clients with full sockets
``geventws_redis_messages_total{event}``         counter  Redis gateways' messages published, dropped, received, ignored
``geventws_redis_reconnects_total``              counter  times a Redis connection came back after it was lost
===============================================  =======  ==============================================================

The ``redis`` metrics appear once a :class:`~geventws.redis.RedisGateway` is
instrumented.  ``side`` is ``server`` when this server began the close (its handler returned,
a limit was broken, the server stopped) and ``client`` when the peer did or
vanished (1006).
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Callable, Union

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .connection.client import WebsocketClient
from .gateway import WebsocketClientGateway
from .http.endpoint import Websocket
from .protocol.close import CloseCode, WebsocketCloseInfo

if TYPE_CHECKING:
    from .flask import Websockets
    from .redis import RedisGateway

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Gateway = Union[WebsocketClientGateway, "RedisGateway"]

#: Per-client counters summed into the totals, by metric name suffix.
_TRAFFIC = (
    ("messages_received", "Messages received from clients."),
    ("messages_sent", "Messages sent to clients."),
    ("bytes_received", "Bytes read from clients' sockets after the handshake."),
    ("bytes_sent", "Bytes written to clients' sockets after the handshake."),
)


class WebsocketMetrics(Collector):
    """Counts what instrumented endpoints and gateways do and exports it to a prometheus-client registry.

    ``registry`` defaults to prometheus-client's global one (what
    ``prometheus_client.start_http_server`` and :meth:`wsgi_app` serve); tests
    pass a fresh :class:`~prometheus_client.CollectorRegistry`.  ``registry=None``
    registers nowhere: call :meth:`collect` yourself.
    """

    def __init__(self, registry: CollectorRegistry | None = REGISTRY, *, namespace: str = "geventws") -> None:
        self.registry = registry
        self.namespace = namespace
        self._open: weakref.WeakSet[WebsocketClient] = weakref.WeakSet()
        self._closed_traffic: Counter[str] = Counter()
        self._handshakes: Counter[int] = Counter()
        self._closes: Counter[tuple[int, str]] = Counter()
        self._handler_exceptions = 0
        # Strong references: a gateway's counters must not vanish from the totals.
        self._gateways: list[WebsocketClientGateway] = []
        # One RedisGateway per Redis connection: the gateways of a process on one Redis share its counters.
        self._redis: dict[int, RedisGateway] = {}
        if registry is not None:
            registry.register(self)

    # ------------------------------------------------------------- wiring

    def instrument(self, endpoint: Websocket) -> WSGIApp:
        """Count ``endpoint``'s handshakes, connections, traffic and closes; route the app this returns.

        The returned WSGI app is the endpoint with its refusals counted; its
        accepted connections are counted even where the endpoint itself is routed.
        """
        endpoint.on_client(self._track)
        handshakes = self._handshakes

        def counted(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            def counting_start_response(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
                code = int(status[:3])
                if code != 101:  # a 101 is counted with its client, by _track
                    handshakes[code] += 1
                return start_response(status, headers, *exc_info)

            return endpoint(environ, counting_start_response)

        return counted

    def instrument_flask(self, websockets: Websockets) -> Websockets:
        """Count the handshakes, connections, traffic and closes of every route of a Flask extension; returns it.

        Routes declared before or after the call are counted alike; a
        handshake refused by a ``before_request`` function or a view
        decorator counts with its status, as the acceptor's refusals do.
        """
        websockets.on_client(self._track)
        handshakes = self._handshakes

        def count(status: int) -> None:
            if status != 101:  # a 101 is counted with its client, by _track
                handshakes[status] += 1

        websockets.on_handshake(count)
        return websockets

    def instrument_gateway(self, gateway: Gateway) -> Gateway:
        """Export ``gateway``'s deliveries, slow consumers and pending bytes; returns it.

        For a :class:`~geventws.redis.RedisGateway` these are its local
        gateway's, and its Redis connection's counters are exported too
        (messages published, dropped, received and ignored, and reconnects).
        """
        local = gateway if isinstance(gateway, WebsocketClientGateway) else gateway.local
        if local not in self._gateways:
            self._gateways.append(local)
        if not isinstance(gateway, WebsocketClientGateway):
            self._redis.setdefault(id(gateway._shared), gateway)
        return gateway

    def wsgi_app(self) -> WSGIApp:
        """prometheus-client's WSGI app serving this registry in the text format (route it at ``/metrics``)."""
        return make_wsgi_app(self.registry if self.registry is not None else REGISTRY)

    # ---------------------------------------------------- endpoint events

    def _track(self, client: WebsocketClient) -> None:
        self._handshakes[101] += 1
        self._open.add(client)
        client.on_close(self._closed)

    def _closed(self, client: WebsocketClient, info: WebsocketCloseInfo) -> None:
        self._open.discard(client)
        stats = client.stats
        traffic = self._closed_traffic
        traffic["messages_received"] += stats.messages_received
        traffic["messages_sent"] += stats.messages_sent
        traffic["bytes_received"] += stats.bytes_received
        traffic["bytes_sent"] += stats.bytes_sent
        side = "client" if info.by_peer else "server"
        self._closes[info.code, side] += 1
        if info.code == CloseCode.UNEXPECTED_SERVER_ERROR and not info.by_peer:
            self._handler_exceptions += 1

    # --------------------------------------------------------- collection

    def describe(self) -> Iterator[Metric]:
        """The metric families, for the registry's duplicate-name check at registration."""
        return self.collect()

    def collect(self) -> Iterator[Metric]:
        """Every metric as it stands now: closed clients' totals plus the open clients' own counters."""
        name = self.namespace + "_"
        open_clients = list(self._open)
        yield GaugeMetricFamily(name + "connections_open", "Open WebSocket connections.", value=len(open_clients))

        handshakes = CounterMetricFamily(
            name + "handshakes", "Handshake answers by HTTP status (101: accepted).", labels=["status"]
        )
        for status, count in sorted(self._handshakes.items()):
            handshakes.add_metric([str(status)], count)
        yield handshakes

        for key, documentation in _TRAFFIC:
            total = self._closed_traffic[key] + sum(getattr(client.stats, key) for client in open_clients)
            yield CounterMetricFamily(name + key, documentation, value=total)

        closes = CounterMetricFamily(
            name + "closes",
            "Closed connections by close code and by the side that began the close.",
            labels=["code", "side"],
        )
        for (code, side), count in sorted(self._closes.items()):
            closes.add_metric([str(int(code)), side], count)  # int(): str() of an IntEnum is its name before 3.11
        yield closes

        yield CounterMetricFamily(
            name + "handler_exceptions",
            "Client handlers that raised (their connection was closed with 1011).",
            value=self._handler_exceptions,
        )
        gateways = self._gateways
        yield CounterMetricFamily(
            name + "gateway_deliveries",
            "Gateway messages written whole to one client.",
            value=sum(gateway.deliveries for gateway in gateways),
        )
        yield CounterMetricFamily(
            name + "gateway_slow_consumer_closes",
            "Clients a gateway closed because they could not keep up.",
            value=sum(gateway.slow_consumer_closes for gateway in gateways),
        )
        yield CounterMetricFamily(
            name + "gateway_slow_consumer_drops",
            "Pending messages a gateway dropped for clients that could not keep up.",
            value=sum(gateway.slow_consumer_drops for gateway in gateways),
        )
        if self._redis:
            counters = [gateway.counters() for gateway in self._redis.values()]
            messages = CounterMetricFamily(
                name + "redis_messages",
                "Messages of Redis gateways: published, dropped (Redis away or too slow), received, ignored.",
                labels=["event"],
            )
            for event in ("published", "dropped", "received", "ignored"):
                messages.add_metric([event], sum(counter[event] for counter in counters))
            yield messages
            yield CounterMetricFamily(
                name + "redis_reconnects",
                "Times a Redis gateway's connection came back after it was lost.",
                value=sum(counter["reconnects"] for counter in counters),
            )
        yield GaugeMetricFamily(
            name + "gateway_pending_bytes",
            "Bytes queued in gateways for clients whose sockets are full.",
            value=sum(gateway.pending_bytes for gateway in gateways),
        )
