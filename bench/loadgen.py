"""The load generator: picows clients on uvloop, one coroutine per scenario.

Every scenario takes the server's URL and pid, opens its connections, measures
within a bounded window and closes everything it opened before returning a
dict of metrics.  CPU time of this process (the load generator) and of the
server process over the measured window is returned as ``client_cpu`` /
``server_cpu`` in percent of one core: a load generator well below 100 % while
the server is near 100 % is not the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import psutil
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

#: picows refuses larger frames; above every message of the matrix.
MAX_FRAME = 32 * 1024 * 1024
#: At most this many handshakes in flight while opening connections.
CONNECT_CONCURRENCY = 64
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
_SYNC_TAIL = b"\x00\x00\xff\xff"

BINARY = WSMsgType.BINARY
TEXT = WSMsgType.TEXT
CONTINUATION = WSMsgType.CONTINUATION
CLOSE = WSMsgType.CLOSE


class ScenarioSkipped(Exception):
    """The server cannot run this cell (e.g. it did not negotiate permessage-deflate)."""


# ------------------------------------------------------------------ payloads


def payloads(size: int, compressible: bool, count: int = 32) -> list[bytes]:
    """Message bodies of ``size`` bytes.

    Plain cells send one constant body (its content does not matter to a
    server that does not compress).  Deflate cells cycle through ``count``
    different texts made of words from a small vocabulary, so each message
    compresses like chatty JSON (about 2-2.5x at level 1) instead of collapsing into a
    back-reference to the previous identical message.
    """
    if not compressible:
        return [_pattern(size)]
    rng = random.Random(7919)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(400)]
    result = []
    for _ in range(count):
        parts: list[str] = []
        length = 0
        while length < size:
            word = (
                f'"{rng.choice(words)}": {rng.randint(0, 99999)}, ' if rng.random() < 0.3 else rng.choice(words) + " "
            )
            parts.append(word)
            length += len(word)
        result.append("".join(parts).encode()[:size])
    return result


def _pattern(size: int) -> bytes:
    block = bytes(range(256))
    return (block * (size // 256 + 1))[:size]


# ------------------------------------------------------------------- metering


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


class Meter:
    """CPU seconds of this process and of the server over a wall-clock window."""

    def __init__(self, server_pid: int) -> None:
        self._me = psutil.Process()
        self._server = psutil.Process(server_pid)

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._c0 = _cpu(self._me)
        self._s0 = _cpu(self._server)

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self._t0
        client = _cpu(self._me) - self._c0
        server = _cpu(self._server) - self._s0
        return {
            "wall": wall,
            "client_cpu": 100.0 * client / wall,
            "server_cpu": 100.0 * server / wall,
            "client_share": 100.0 * client / (client + server) if client + server > 0 else 0.0,
        }

    def server_rss(self) -> int:
        return int(self._server.memory_info().rss)


# ----------------------------------------------------------------- connection


class Conn(WSListener):  # type: ignore[misc]
    """One client connection; reassembles messages (inflating if negotiated) and hands them to ``on_message``."""

    def __init__(self) -> None:
        self.transport: WSTransport | None = None
        self.closed = False
        self.deflate = False
        self.keep = False  # keep the payload of the next message (content check, inflate)
        self._size = 0
        self._parts: list[bytes] = []
        self._compressed = False
        self._compressor: Any = None
        self._decompressor: Any = None
        self._client_reset = False
        self._server_reset = False
        self._client_bits = 15
        self.on_message: Callable[[Conn, int, bytes | None], None] = _ignore

    # -- picows callbacks

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        extensions = transport.response.headers.get("Sec-WebSocket-Extensions", "")
        if "permessage-deflate" in extensions:
            self._configure_deflate(extensions)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is BINARY or kind is TEXT:
            self._size = 0
            self._compressed = frame.rsv1
            if self._parts:
                self._parts = []
        elif kind is CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        elif kind is not CONTINUATION:
            return  # ping (auto-answered) or pong
        if self._compressed or self.keep:
            self._parts.append(frame.get_payload_as_bytes())
        self._size += frame.payload_size
        if not frame.fin:
            return
        data: bytes | None = None
        size = self._size
        if self._compressed:
            data = self._inflate(b"".join(self._parts))
            size = len(data)
            self._parts = []
        elif self.keep:
            data = b"".join(self._parts)
            self._parts = []
        self.on_message(self, size, data)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True

    # -- sending

    def send(self, payload: bytes) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        if self.deflate:
            transport.send(BINARY, self._deflate(payload), rsv1=True)
        else:
            transport.send(BINARY, payload)

    def send_text(self, text: bytes) -> None:
        if self.transport is not None and not self.closed:
            if self.deflate:
                self.transport.send(TEXT, self._deflate(text), rsv1=True)
            else:
                self.transport.send(TEXT, text)

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.disconnect(graceful=False)

    # -- permessage-deflate (RFC 7692), client side

    def _configure_deflate(self, header: str) -> None:
        self.deflate = True
        for param in header.split(";")[1:]:
            name, _, value = param.strip().partition("=")
            if name == "client_no_context_takeover":
                self._client_reset = True
            elif name == "server_no_context_takeover":
                self._server_reset = True
            elif name == "client_max_window_bits" and value:
                self._client_bits = max(9, int(value.strip('"')))
        self._compressor = self._new_compressor()
        self._decompressor = zlib.decompressobj(-15)

    def _new_compressor(self) -> Any:
        return zlib.compressobj(1, zlib.DEFLATED, -self._client_bits)  # level 1: keep the client cheap

    def _deflate(self, payload: bytes) -> bytes:
        if self._client_reset:
            self._compressor = self._new_compressor()
        data: bytes = self._compressor.compress(payload) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        return data[:-4] if data.endswith(_SYNC_TAIL) else data

    def _inflate(self, data: bytes) -> bytes:
        if self._server_reset or self._decompressor.eof:
            self._decompressor = zlib.decompressobj(-15)
        result: bytes = self._decompressor.decompress(data + _SYNC_TAIL)
        return result


def _ignore(conn: Conn, size: int, data: bytes | None) -> None:
    return None


async def open_connections(
    url: str, count: int, factory: Callable[[], Conn], *, deflate: bool = False, concurrency: int = CONNECT_CONCURRENCY
) -> tuple[list[Conn], list[str]]:
    """Open ``count`` connections, at most ``concurrency`` handshakes at a time; returns (conns, errors)."""
    semaphore = asyncio.Semaphore(concurrency)
    headers = {"Sec-WebSocket-Extensions": DEFLATE_OFFER} if deflate else None
    conns: list[Conn] = []
    errors: list[str] = []

    async def one() -> None:
        async with semaphore:
            try:
                _, listener = await ws_connect(
                    factory,
                    url,
                    extra_headers=headers,
                    max_frame_size=MAX_FRAME,
                    websocket_handshake_timeout=30,
                    enable_auto_pong=True,
                )
            except Exception as error:  # counted, not fatal: the idle scenario reports how many opened
                errors.append(f"{type(error).__name__}: {error}")
            else:
                conns.append(listener)

    await asyncio.gather(*(one() for _ in range(count)))
    return conns, errors


def close_all(conns: Sequence[Conn]) -> None:
    for conn in conns:
        conn.abort()


async def _require(conns: list[Conn], errors: list[str], count: int, deflate: bool) -> None:
    if errors or len(conns) != count:
        close_all(conns)
        raise RuntimeError(f"opened {len(conns)}/{count} connections: {errors[:3]}")
    if deflate and not all(conn.deflate for conn in conns):
        close_all(conns)
        raise ScenarioSkipped("server did not negotiate permessage-deflate")


# ------------------------------------------------------------------ seasoning

#: The message every server echoes once before a cell is measured (see ``season``).
SEASON_SIZE = 1024 * 1024


async def season(url: str, size: int = SEASON_SIZE, timeout: float = 30.0) -> None:
    """Have a freshly started server echo one large message, as any long-running server has.

    glibc's malloc serves blocks above its mmap threshold (128 KiB when a
    process starts) with ``mmap``/``munmap``, and raises the threshold the
    first time such a block is freed whole.  asyncio's selector transport (the
    stdlib loop under websockets' asyncio server) allocates a new 256 KiB
    ``bytes`` for every ``recv``: until the process has once read a large
    message, every small message costs an ``mmap``, a page fault, an
    ``mremap`` and a ``munmap`` (about 1.5x the server's CPU per message in
    the 16-byte echo).  A server in production leaves that state with its
    first large message; one 1 MiB echo on its own connection does it here,
    for every server alike.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()

    def on_message(conn: Conn, got: int, data: bytes | None) -> None:
        if not done.done():
            done.set_result(got)

    def factory() -> Conn:
        conn = Conn()
        conn.on_message = on_message
        return conn

    conns, errors = await open_connections(url, 1, factory)
    await _require(conns, errors, 1, False)
    try:
        conns[0].send(_pattern(size))
        got = await asyncio.wait_for(done, timeout)
    finally:
        close_all(conns)
    if got != size:
        raise RuntimeError(f"seasoning: sent {size} bytes, the echo had {got}")


# ----------------------------------------------------------------- scenarios


class _Echo:
    """Shared state of the echo and stream scenarios."""

    def __init__(self, bodies: list[bytes], window: int) -> None:
        self.bodies = bodies
        self.window = window
        self.size = len(bodies[0])
        self.count = 0
        self.errors = 0
        self.stopped = False
        self.next_body = 0

    def body(self) -> bytes:
        index = self.next_body
        self.next_body = (index + 1) % len(self.bodies)
        return self.bodies[index]


def _echo_factory(state: _Echo) -> Callable[[], Conn]:
    def factory() -> Conn:
        conn = Conn()
        conn.keep = True  # check the first echo's content in full, then lengths only
        sent: deque[bytes] = deque()

        def send_next() -> None:
            body = state.body()
            if conn.keep:
                sent.append(body)
            conn.send(body)

        def on_message(conn: Conn, size: int, data: bytes | None) -> None:
            if size != state.size:
                state.errors += 1
            elif conn.keep and data is not None and sent:
                if data != sent.popleft():
                    state.errors += 1
                conn.keep = False
                sent.clear()
            state.count += 1
            if not state.stopped:
                send_next()

        conn.on_message = on_message
        conn.start = lambda: [send_next() for _ in range(state.window)]  # type: ignore[attr-defined]
        return conn

    return factory


async def echo(
    url: str,
    server_pid: int,
    *,
    connections: int,
    size: int,
    duration: float,
    warmup: float,
    window: int = 1,
    deflate: bool = False,
    on_measure: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Round trips: each connection keeps ``window`` messages in flight (1 = ping-pong).

    ``on_measure`` is called when the measured window starts (``--profile`` starts py-spy there).
    """
    state = _Echo(payloads(size, compressible=deflate), window)
    conns, errors = await open_connections(url, connections, _echo_factory(state), deflate=deflate)
    await _require(conns, errors, connections, deflate)
    meter = Meter(server_pid)
    try:
        for conn in conns:
            conn.start()  # type: ignore[attr-defined]
        await asyncio.sleep(warmup)
        if on_measure is not None:
            on_measure()
        count0 = state.count
        meter.start()
        await asyncio.sleep(duration)
        count1 = state.count
        cpu = meter.stop()
        closed = sum(conn.closed for conn in conns)
    finally:
        state.stopped = True
        close_all(conns)
    rate = (count1 - count0) / cpu["wall"]
    if state.errors:
        raise RuntimeError(f"{state.errors} echoed messages differ from what was sent")
    result = {"msg_s": rate, "mb_s": rate * size / 1e6, "messages": count1 - count0, **cpu}
    if closed:
        result["errors"] = [f"the server closed {closed} of {connections} connections during the cell"]
    return result


async def broadcast(
    url: str | list[str], server_pid: int, *, clients: int, size: int, rounds: int, timeout: float = 20.0
) -> dict[str, Any]:
    """One trigger connection asks for ``rounds`` broadcasts of ``size`` bytes to ``clients`` listeners.

    With several URLs (server processes sharing a Redis) the listeners are
    spread evenly over them and the trigger connects to the first.
    """
    urls = [url] if isinstance(url, str) else url
    latencies: list[float] = []
    completions: list[float] = []
    round_state: dict[str, Any] = {"t0": 0.0, "pending": 0, "done": None, "ready": 0, "ready_done": None}

    def on_message(conn: Conn, got: int, data: bytes | None) -> None:
        if got == 1:  # the readiness echo: the server has registered this client
            round_state["ready"] += 1
            if round_state["ready"] == clients:
                round_state["ready_done"].set_result(None)
            return
        if got != size:
            return
        latencies.append(time.perf_counter() - round_state["t0"])
        round_state["pending"] -= 1
        if round_state["pending"] == 0 and not round_state["done"].done():
            round_state["done"].set_result(time.perf_counter() - round_state["t0"])

    def factory() -> Conn:
        conn = Conn()
        conn.on_message = on_message
        return conn

    conns, errors = [], []
    for index, each in enumerate(urls):
        share = clients // len(urls) + (index < clients % len(urls))
        opened, failed = await open_connections(each, share, factory)
        conns.extend(opened)
        errors.extend(failed)
    await _require(conns, errors, clients, False)
    trigger_conns, errors = await open_connections(urls[0], 1, Conn)
    conns.extend(trigger_conns)
    await _require(conns, errors, clients + 1, False)
    trigger = trigger_conns[0]
    loop = asyncio.get_running_loop()
    meter = Meter(server_pid)
    missing = 0
    try:
        round_state["ready_done"] = loop.create_future()
        for conn in conns[:clients]:
            conn.send(b"r")
        await asyncio.wait_for(round_state["ready_done"], timeout)
        command = b"broadcast:%d" % size
        meter.start()
        for _ in range(rounds):
            round_state["done"] = loop.create_future()
            round_state["pending"] = clients
            round_state["t0"] = time.perf_counter()
            trigger.send_text(command)
            try:
                completions.append(await asyncio.wait_for(round_state["done"], timeout))
            except asyncio.TimeoutError:
                missing += round_state["pending"]
                break
            await asyncio.sleep(0.02)
        cpu = meter.stop()
    finally:
        close_all(conns)
    if missing or not completions:
        raise RuntimeError(f"{missing} clients did not receive a broadcast within {timeout} s")
    latencies.sort()
    return {
        "all_ms": 1000 * statistics.median(completions),
        "p50_ms": 1000 * _percentile(latencies, 50),
        "p99_ms": 1000 * _percentile(latencies, 99),
        "rounds": len(completions),
        "cpu_us": cpu_per_delivery(cpu, len(completions) * clients),
        **cpu,
    }


def cpu_per_delivery(cpu: dict[str, float], deliveries: int) -> float:
    """The server's CPU time (user + system) per delivered message over the window, in µs.

    The measure to judge a broadcast by where the load generator, not the
    server, sets the pace of delivery (thousands of listeners on one core).
    """
    return cpu["server_cpu"] / 100 * cpu["wall"] * 1e6 / max(1, deliveries)


async def scale(
    url: str,
    server_pid: int,
    *,
    clients: int,
    size: int = 64,
    rounds: int = 5,
    settle: float = 0.5,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """``clients`` connections on one server: handshakes/s, RSS per connection, then broadcasts to all of them.

    The thin raw clients of the idle scenario (picows costs as much per
    connection as the servers), plus one trigger.  Every listener first
    echoes one message, so the server has registered it; then ``rounds``
    broadcasts of ``size`` bytes: all-received time, p50 of the per-client
    arrival, and the server's CPU per delivery.
    """
    meter = Meter(server_pid)
    state: dict[str, Any] = {"t0": 0.0, "pending": 0, "done": None, "lost": 0}
    arrivals: list[float] = []

    def on_echo() -> None:
        arrivals.append(time.perf_counter() - state["t0"])
        state["pending"] -= 1
        if state["pending"] <= 0 and state["done"] is not None and not state["done"].done():
            state["done"].set_result(time.perf_counter() - state["t0"])

    def on_lost() -> None:
        state["lost"] += 1

    loop = asyncio.get_running_loop()
    warm, errors = await open_raw(url, 1, on_echo, on_lost)
    if errors:
        raise RuntimeError(f"could not connect: {errors[0]}")
    for conn in warm:
        conn.abort()
    await asyncio.sleep(settle)
    base_rss = meter.server_rss()
    meter.start()
    conns, errors = await open_raw(url, clients + 1, on_echo, on_lost)
    handshake_cpu = meter.stop()
    try:
        if errors:
            raise RuntimeError(f"only {len(conns)} of {clients + 1} connections opened: {sorted(set(errors))[:2]}")
        await asyncio.sleep(settle)
        rss = meter.server_rss()
        trigger, listeners = conns[0], conns[1:]
        state["done"], state["pending"] = loop.create_future(), len(listeners)
        for conn in listeners:
            conn.send(0x2, b"r")
        await asyncio.wait_for(state["done"], timeout)
        command = b"broadcast:%d" % size
        completions: list[float] = []
        p50s: list[float] = []
        meter.start()
        for _ in range(rounds):
            arrivals.clear()
            state["done"], state["pending"] = loop.create_future(), len(listeners)
            state["t0"] = time.perf_counter()
            trigger.send(0x1, command)
            completions.append(await asyncio.wait_for(state["done"], timeout))
            p50s.append(_percentile(sorted(arrivals), 50))
            await asyncio.sleep(0.05)
        cpu = meter.stop()
    finally:
        for conn in conns:
            conn.abort()
    return {
        "hs_s": len(conns) / handshake_cpu["wall"],
        "rss_kib": (rss - base_rss) / len(conns) / 1024,
        "all_ms": 1000 * statistics.median(completions),
        "p50_ms": 1000 * statistics.median(p50s),
        "cpu_us": cpu_per_delivery(cpu, rounds * len(listeners)),
        "rounds": rounds,
        **cpu,
    }


class RawConn(asyncio.Protocol):
    """A bare-bones client for the idle scenario: a fixed handshake and a tiny frame parser.

    Opening thousands of connections with picows costs the load generator about
    as much CPU per handshake as the servers spend; this costs a third of that,
    so handshakes/s measures the server.  It answers pings and reports echoes.
    """

    KEY = "dGhlIHNhbXBsZSBub25jZQ=="
    ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 section 1.3, for KEY
    MASK = b"\x37\xfa\x21\x3d"

    def __init__(self, request: bytes, on_echo: Callable[[], None], on_lost: Callable[[], None]) -> None:
        self._request = request
        self.on_echo = on_echo
        self.on_lost = on_lost
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._open = False

    @classmethod
    def request(cls, host: str, port: int) -> bytes:
        return (
            f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {cls.KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()

    @classmethod
    def frame(cls, opcode: int, payload: bytes) -> bytes:
        assert len(payload) < 126
        masked = bytes(b ^ cls.MASK[i % 4] for i, b in enumerate(payload))
        return bytes([0x80 | opcode, 0x80 | len(payload)]) + cls.MASK + masked

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self._request)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._open:
            self.on_lost()
        self._open = False
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError(f"closed during the handshake: {exc}"))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if not self._open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end])
            del buffer[: end + 4]
            if not head.startswith(b"HTTP/1.1 101") or self.ACCEPT not in head:
                self.upgraded.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace")))
                self.abort()
                return
            self._open = True
            self.upgraded.set_result(None)
        while len(buffer) >= 2:
            length = buffer[1] & 0x7F
            offset = 2
            if length == 126:
                offset, length = 4, int.from_bytes(buffer[2:4], "big")
            elif length == 127:
                offset, length = 10, int.from_bytes(buffer[2:10], "big")
            if len(buffer) < offset + length:
                return
            opcode = buffer[0] & 0x0F
            payload = bytes(buffer[offset : offset + length])
            del buffer[: offset + length]
            if opcode == 0x9:
                self.send(0xA, payload[:125])
            elif opcode == 0x8:
                self.abort()
            elif opcode in (0x1, 0x2):
                self.on_echo()

    def send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.frame(opcode, payload))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def open_raw(
    url: str,
    count: int,
    on_echo: Callable[[], None],
    on_lost: Callable[[], None],
    concurrency: int = CONNECT_CONCURRENCY,
) -> tuple[list[RawConn], list[str]]:
    host, _, port_path = url.removeprefix("ws://").partition(":")
    port = int(port_path.split("/")[0])
    request = RawConn.request(host, port)
    loop = asyncio.get_running_loop()
    semaphore = asyncio.Semaphore(concurrency)
    conns: list[RawConn] = []
    errors: list[str] = []

    async def one() -> None:
        async with semaphore:
            try:
                _, conn = await loop.create_connection(lambda: RawConn(request, on_echo, on_lost), host, port)
                await asyncio.wait_for(conn.upgraded, 30)
            except Exception as error:
                errors.append(f"{type(error).__name__}: {error}")
            else:
                conns.append(conn)

    await asyncio.gather(*(one() for _ in range(count)))
    return conns, errors


async def idle(
    url: str, server_pid: int, *, levels: Sequence[int], settle: float = 0.5, timeout: float = 30.0
) -> dict[str, Any]:
    """Ramp idle connections up to each level: handshakes/s per step and server RSS per connection.

    At the end every connection must still echo a 16-byte message.
    """
    meter = Meter(server_pid)
    alive = {"count": 0, "lost": 0, "want": -1}
    done = asyncio.get_running_loop().create_future()

    def check() -> None:
        if alive["count"] + alive["lost"] >= alive["want"] >= 0 and not done.done():
            done.set_result(None)

    def on_echo() -> None:
        alive["count"] += 1
        check()

    def on_lost() -> None:
        alive["lost"] += 1
        check()

    # A first connection, closed again, so one-off allocations are in the baseline.
    warm, errors = await open_raw(url, 1, on_echo, on_lost)
    if errors:
        raise RuntimeError(f"could not connect: {errors[0]}")
    for conn in warm:
        conn.abort()
    await asyncio.sleep(settle)
    alive["lost"] = 0
    base_rss = meter.server_rss()
    conns: list[RawConn] = []
    steps: dict[str, Any] = {}
    try:
        for level in levels:
            meter.start()
            opened, errors = await open_raw(url, level - len(conns), on_echo, on_lost)
            cpu = meter.stop()
            conns.extend(opened)
            await asyncio.sleep(settle)
            rss = meter.server_rss()
            steps[str(level)] = {
                "handshakes_s": len(opened) / cpu["wall"],
                "rss_per_conn_kib": (rss - base_rss) / max(1, len(conns)) / 1024,
                "rss_mib": rss / 2**20,
                "open": len(conns),
                "failed": len(errors),
                "errors": sorted(set(errors))[:3],
                **cpu,
            }
            if errors:
                break
        alive["want"] = len(conns)
        echo = RawConn.frame(0x2, b"0123456789abcdef")
        for conn in conns:
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.write(echo)
        check()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(done, timeout)
    finally:
        for conn in conns:
            conn.abort()
    return {"base_rss_mib": base_rss / 2**20, "steps": steps, "alive": alive["count"], "open": len(conns)}


def _percentile(ordered: list[float], pct: float) -> float:
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]
