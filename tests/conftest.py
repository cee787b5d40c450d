"""Test support: every test runs a real geventws server on an ephemeral port.

The test process is monkey-patched so that websocket-client and the server
share gevent's loop: a client blocked on recv lets the server run.
"""

from gevent import monkey

monkey.patch_all()

import base64  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import websocket  # noqa: E402

import geventws  # noqa: E402


@dataclass
class Running:
    server: geventws.Server
    port: int
    app: Any

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self, path: str = "/", **options: Any) -> websocket.WebSocket:
        options.setdefault("timeout", 10)
        return websocket.create_connection(self.url + path, **options)


@pytest.fixture
def serve() -> Iterator[Callable[..., Running]]:
    """``serve(app_or_factory)`` starts a server; a factory gets the server and returns the app."""
    servers: list[geventws.Server] = []

    def start(app: Any, address: tuple[str, int] = ("127.0.0.1", 0)) -> Running:
        server = geventws.Server(logging.getLogger("tests.server"))
        server.expose(address)
        if not callable(app) or getattr(app, "__geventws_factory__", False):
            app = app(server)
        server.start(app)
        servers.append(server)
        return Running(server, server.addresses[0][1], app)

    yield start
    for server in servers:
        server.stop(timeout=1)


def echo_handler(client: geventws.WebsocketClient, request: Any, response: Any) -> None:
    for message in client:
        data = message.buffer()
        if isinstance(data, str):
            client.send_text(data)
        else:
            client.send_binary(data)


@pytest.fixture
def echo(serve: Callable[..., Running]) -> Running:
    running = serve(_factory(lambda server: geventws.Websocket(server, None, None, echo_handler)))
    return running


def _factory(function: Callable[[geventws.Server], Any]) -> Callable[[geventws.Server], Any]:
    function.__geventws_factory__ = True  # type: ignore[attr-defined]
    return function


factory = _factory


def handshake_request(
    port: int,
    *,
    method: str = "GET",
    path: str = "/",
    version: str = "HTTP/1.1",
    headers: dict[str, str] | None = None,
    omit: tuple[str, ...] = (),
    body: bytes = b"",
) -> bytes:
    """A raw handshake request with the usual headers, any of them replaced or left out."""
    fields = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    fields.update(headers or {})
    lines = [f"{method} {path} {version}"] + [f"{k}: {v}" for k, v in fields.items() if k not in omit]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def raw_exchange(port: int, request: bytes, read_until_close: bool = True) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` on a plain socket; return status, headers (lower-case names) and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if read_until_close:
            while chunk := sock.recv(65536):
                body += chunk
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def read_frame(read: Callable[[int], bytes]) -> tuple[int, bytes]:
    """(first byte, payload) of the next unmasked server frame, read through ``read(size)``."""
    first, second = read(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", read(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", read(8))
    return first, read(length)


def masked_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0) -> bytes:
    """A client frame, masked as RFC 6455 requires, built by hand for malformed-input tests."""
    first = (0x80 if fin else 0) | rsv | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_code(frame_payload: bytes) -> int:
    return int(struct.unpack("!H", frame_payload[:2])[0]) if len(frame_payload) >= 2 else 1005


BROADCAST_EXAMPLE = Path(__file__).parent.parent / "examples" / "broadcast" / "server.py"


@contextmanager
def broadcast_example(port_taken: Callable[[str], Any] = pytest.skip) -> Iterator[subprocess.Popen[str]]:
    """examples/broadcast/server.py in its own process on port 1337; killed afterwards if still running.

    ``port_taken`` is called with a reason when port 1337 is in use
    (``pytest.skip``, or ``pytest.fail`` where the test is required).
    """
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 1337)) == 0:
            port_taken("port 1337 is taken")
    process = subprocess.Popen(
        [sys.executable, str(BROADCAST_EXAMPLE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        _wait_for_port(1337, process)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def _wait_for_port(port: int, process: subprocess.Popen[str], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"example exited early: {process.stdout.read() if process.stdout else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("example did not start listening")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real Redis-protocol server (valkey-server from the test extra) for the module's tests."""
    from redis_server import RedisProcess, server_binary

    server = RedisProcess(tmp_path_factory.mktemp("redis"), server_binary())
    server.start()
    yield server
    server.stop()
