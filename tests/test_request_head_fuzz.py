"""Arbitrary request heads against a real server: a 4xx or a valid response every time, never a 500, never a hang."""

import logging
import socket

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import geventws

NAMES = [
    b"Host",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Connection",
    b"Upgrade",
    b"Sec-WebSocket-Key",
    b"Sec-WebSocket-Version",
    b"Sec-WebSocket-Extensions",
    b"Range",
    b"Expect",
    b"Origin",
    b"X_Forwarded_For",
]
VALUES = [
    b"x",
    b"127.0.0.1",
    b"a..b",
    b"0",
    b"5",
    b"+5",
    b"-1",
    b"chunked",
    b"gzip, chunked",
    b"close",
    b"keep-alive",
    b"Upgrade",
    b"websocket",
    b"dGhlIHNhbXBsZSBub25jZQ==",
    b"13",
    b"permessage-deflate; client_max_window_bits",
    b"bytes=0-1,3-4",
    b"bytes=5-2",
    b"100-continue",
]
junk = st.binary(max_size=24)
name = st.one_of(st.sampled_from(NAMES), st.from_regex(rb"\A[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}\Z"), junk)
value = st.one_of(st.sampled_from(VALUES), st.from_regex(rb"\A[ -~]{0,30}\Z"), junk)
separator = st.sampled_from([b": ", b":", b" : ", b":\t", b"\r\n "])
# Mostly well-formed pieces, so that requests get past the parser into routing, handshakes and static
# files; sometimes anything at all.
PLAUSIBLE = [
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    b"Sec-WebSocket-Version: 13",
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
    b"Content-Length: 5",
    b"Content-Length: 0",
    b"Transfer-Encoding: chunked",
    b"Range: bytes=0-1,3-4",
    b"Range: bytes=3-1",
    b"If-None-Match: *",
    b"Expect: 100-continue",
    b"Connection: close",
    b"Origin: http://x",
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13",
]
plausible = st.sampled_from(PLAUSIBLE)
field = st.one_of(plausible, plausible, plausible, st.tuples(name, separator, value).map(b"".join), junk)


def mostly(choices, other):
    """One of ``choices`` three times in four, ``other`` otherwise."""
    known = st.sampled_from(choices)
    return st.one_of(known, known, known, other)


method = mostly([b"GET", b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS", b"get"], junk)
target = mostly(
    [b"/", b"/ws", b"/ws", b"/upload", b"/index.html", b"/../etc/passwd", b"*", b"http://x/ws", b"/%00"],
    junk.map(lambda data: b"/" + data),
)
version = mostly([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x"], junk)
line_end = st.sampled_from([b"\r\n", b"\r\n", b"\n"])


@st.composite
def request_heads(draw):
    end = draw(line_end)
    fields = draw(st.lists(field, max_size=8))
    if draw(st.integers(0, 3)):
        fields.insert(0, b"Host: x")
    line = draw(method) + b" " + draw(target) + b" " + draw(version)
    return line + end + b"".join(f + end for f in fields) + end


def upload(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def echo(client, request, response):
    for message in client:
        client.send_text(str(message))


@pytest.fixture(scope="module")
def port(tmp_path_factory):
    public = tmp_path_factory.mktemp("public")
    (public / "index.html").write_bytes(b"hello\n")
    server = geventws.Server(logging.getLogger("tests.fuzz"), request_timeout=1, body_timeout=0.2)
    server.expose(("127.0.0.1", 0))
    router = geventws.Router()
    router.add_route(
        "GET",
        "/ws",
        geventws.Websocket(server, None, None, echo, compression_factory=geventws.Rfc7692CompressionFactory()),
    )
    router.add_route("POST", "/upload", upload)
    router.set_fallback(geventws.DocumentRoot(public))
    server.start(router)
    yield server.addresses[0][1]
    server.stop(timeout=1)


def status_of(port, head):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(65536)  # a hang fails on the 5 s timeout
            if not chunk:
                return None
            data += chunk
    assert data.startswith(b"HTTP/1.1 "), data
    return int(data.split(b" ", 2)[1])


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(head=request_heads())
def test_any_request_head_gets_a_client_error_or_a_valid_response(port, head, capfd):
    status = status_of(port, head)
    event(f"status {status}")
    assert status is not None, "every request head is answered"
    assert status != 500 and (status < 500 or status in (501, 505)), (status, head)
    assert "Traceback" not in capfd.readouterr().err
