"""Hardening of the HTTP side, probed as an attacker would over raw sockets.

Every test runs a real server with deadlines shortened for the test, and
checks at the end that nothing was printed on stderr: client mistakes are
answered with their 4xx and logged as one line through ``logging``.
"""

import logging
import os
import socket
import ssl
import subprocess
import sys
import time
import zlib

import flask
import gevent
import pytest
import websocket
from conftest import handshake_request, masked_frame

import geventws

DEADLINE = 0.5


@pytest.fixture(autouse=True)
def no_traceback_on_stderr(capfd):
    yield
    gevent.sleep(0.05)  # let a dying greenlet report, if one would
    assert "Traceback" not in capfd.readouterr().err


def echo(client, request, response):
    for message in client:
        client.send_binary(bytes(message.buffer()) if message.is_binary else str(message).encode())


def ignore_body(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def show_header(environ, start_response):
    body = repr(environ.get("HTTP_X_A", "")).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def fail(environ, start_response):
    raise RuntimeError("application bug")


def upload_app():
    app = flask.Flask("upload")

    @app.post("/upload")
    def upload():
        return flask.request.get_data()

    return app


@pytest.fixture
def public(tmp_path):
    root = tmp_path / "public"
    root.mkdir()
    (root / "index.html").write_bytes(b"<h1>hello</h1>\n" * 10)
    return root


@pytest.fixture
def hardened(public):
    """``hardened(**server_options)``: a server with a route of each kind, deadlines of 0.5 s unless told."""
    servers = []

    def start(ssl_context=None, document_root=None, **options):
        for name in ("request_timeout", "body_timeout", "tls_handshake_timeout"):
            options.setdefault(name, DEADLINE)
        options.setdefault("keepalive_timeout", 30)
        server = geventws.Server(logging.getLogger("tests.hardening"), **options)
        server.expose(("127.0.0.1", 0), ssl_context=ssl_context)
        router = geventws.Router(logging.getLogger("tests.hardening.router"))
        compression = geventws.Rfc7692CompressionFactory()
        factory = geventws.Rfc6455ClientFactory(rate_limit=None, heartbeat=None)
        router.add_route(
            "GET",
            "/ws",
            geventws.Websocket(server, None, None, echo, compression_factory=compression, client_factory=factory),
        )
        router.add_route("POST", "/ignore", ignore_body)
        router.add_route("GET", "/header", show_header)
        router.add_route("GET", "/fail", fail)
        router.add_route("POST", "/upload", upload_app())
        router.set_fallback(document_root or geventws.DocumentRoot(public))
        server.start(router)
        servers.append(server)
        return server.addresses[0][1]

    yield start
    for server in servers:
        server.stop(timeout=1)


class Peer:
    """A raw HTTP client: a socket, what it has read and not used yet, and responses parsed by Content-Length."""

    def __init__(self, port, sock=None):
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffer = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.sock.close()

    def sendall(self, data):
        self.sock.sendall(data)

    def _more(self, what):
        chunk = self.sock.recv(65536)
        assert chunk, f"connection closed {what}: {self.buffer!r}"
        self.buffer += chunk

    def read_response(self):
        """(status, headers, body) of the next response."""
        while b"\r\n\r\n" not in self.buffer:
            self._more("without a response")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._more("inside a response body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    def closes_within(self, seconds):
        """Whether the server ends the connection within ``seconds``, sending nothing more."""
        assert self.buffer == b"", f"unexpected data: {self.buffer!r}"
        self.sock.settimeout(seconds)
        started = time.monotonic()
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        assert data == b"", f"unexpected data: {data!r}"
        return time.monotonic() - started <= seconds


def connect(port):
    return Peer(port)


# 1. A body that never arrives.


def test_an_error_answer_does_not_wait_for_the_announced_body(hardened):
    port = hardened()
    with connect(port) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        assert sock.read_response()[0] == 405
        assert sock.closes_within(0.2)


def test_an_unread_body_that_never_arrives_is_dropped_after_the_body_timeout(hardened):
    port = hardened()
    for framing in (b"Content-Length: 100", b"Transfer-Encoding: chunked"):
        with connect(port) as sock:
            sock.sendall(b"POST /ignore HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n\r\n")
            assert sock.read_response()[0] == 200
            started = time.monotonic()
            assert sock.closes_within(DEADLINE + 1)
            assert time.monotonic() - started >= DEADLINE * 0.8


def test_a_read_body_that_stalls_gets_408_and_a_complete_one_is_served(hardened, caplog):
    port = hardened()
    with connect(port) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        assert sock.read_response()[0] == 408
        assert sock.closes_within(0.2)
    with connect(port) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        assert sock.read_response()[2] == b"hello"
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        assert sock.read_response()[2] == b"abc", "keep-alive goes on after a complete body"


def test_a_large_body_that_keeps_coming_is_not_cut_off(hardened):
    port = hardened(body_timeout=0.3)
    body = os.urandom(256 * 1024)
    with connect(port) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        for start in range(0, len(body), 64 * 1024):  # 0.8 s in all, each 64 KiB well within the deadline
            sock.sendall(body[start : start + 64 * 1024])
            time.sleep(0.2)
        assert sock.read_response()[2] == body


def test_pipelined_requests_and_100_continue_still_work(hardened):
    port = hardened()
    with connect(port) as sock:
        sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n" * 2)
        assert [sock.read_response()[0] for _ in range(2)] == [200, 200]
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        assert sock.read_response()[0] == 100
        sock.sendall(b"hello")
        assert sock.read_response()[2] == b"hello"


def test_a_handshake_announcing_a_body_is_refused_and_closed_at_once(hardened):
    port = hardened()
    with connect(port) as sock:
        sock.sendall(handshake_request(port, path="/ws", headers={"Content-Length": "100"}))
        status, headers, body = sock.read_response()
        assert (status, headers["connection"]) == (400, "close")
        assert sock.closes_within(0.2)


# 2. TLS.


@pytest.fixture(scope="module")
def tls():
    trustme = pytest.importorskip("trustme")
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    return server_context, client_context


def test_a_tls_peer_that_never_says_hello_is_dropped_after_the_handshake_timeout(hardened, tls, caplog):
    port = hardened(ssl_context=tls[0])
    caplog.set_level(logging.DEBUG, "tests.hardening")
    silent = [connect(port) for _ in range(5)]
    started = time.monotonic()
    assert all(sock.closes_within(DEADLINE + 1) for sock in silent)
    assert time.monotonic() - started < DEADLINE + 1
    for sock in silent:
        sock.sock.close()
    with connect(port) as sock:
        sock.sendall(b"\x16\x03\x01\x00")  # a ClientHello cut short, then gone

    def failures():
        return [r for r in caplog.records if "TLS handshake" in r.getMessage()]

    deadline = time.monotonic() + 5
    while len(failures()) < 6 and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert len(failures()) == 6 and all(r.levelno == logging.DEBUG for r in failures())


def test_wss_still_works_with_the_handshake_deadline(hardened, tls):
    port = hardened(ssl_context=tls[0])
    client = websocket.create_connection(f"wss://127.0.0.1:{port}/ws", sslopt={"context": tls[1]}, timeout=5)
    client.send("over tls")
    assert client.recv() == b"over tls"
    client.close()


def test_a_tls_peer_leaving_after_the_handshake_prints_nothing(hardened, tls):
    port = hardened(ssl_context=tls[0])
    for payload in (b"", b"GET / HTTP/1.1\r\nHo"):
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock = tls[1].wrap_socket(raw, server_hostname="127.0.0.1")
        if payload:
            sock.sendall(payload)
        sock.shutdown(socket.SHUT_RDWR)  # gone without a TLS close_notify
        sock.close()
    gevent.sleep(0.2)


# 3. Strict framing: every smuggling shape gets its 4xx/501 and the connection closes.

SMUGGLED = b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"

SMUGGLING = {
    "chunked then identity": (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", 501),
    "gzip, chunked": (b"Transfer-Encoding: gzip, chunked\r\n", 501),
    "xchunked": (b"Transfer-Encoding: xchunked\r\n", 501),
    "two different lengths": (b"Content-Length: 0\r\nContent-Length: 40\r\n", 400),
    "length and chunked": (b"Content-Length: 40\r\nTransfer-Encoding: chunked\r\n", 400),
    "signed length": (b"Content-Length: +40\r\n", 400),
    "NUL in a value": (b"X-A: a\x00b\r\n", 400),
    "bare CR in a value": (b"X-A: a\rb\r\n", 400),
    "line without a colon": (b"no colon here\r\nX-B: c\r\n", 400),
    "space before the colon": (b"Content-Length : 40\r\n", 400),
    "two Host headers": (b"Host: y\r\n", 400),
}


@pytest.mark.parametrize("name", SMUGGLING)
def test_ambiguous_framing_is_refused_and_the_connection_closed(hardened, name, caplog):
    fields, status = SMUGGLING[name]
    port = hardened()
    caplog.set_level(logging.INFO, "tests.hardening")
    with connect(port) as sock:
        sock.sendall(b"POST /ignore HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n" + SMUGGLED)
        assert sock.read_response()[0] == status
        assert sock.closes_within(0.5), "the smuggled request must not be answered"
    bad = [r for r in caplog.records if r.name == "tests.hardening" and r.getMessage().startswith("Bad request")]
    assert len(bad) == 1 and bad[0].levelno == logging.INFO


#: Every control character but HTAB (RFC 9110 field-value); NUL, CR and LF are above.
CONTROLS = [bytes([code]) for code in [*range(0x01, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F]]


@pytest.mark.parametrize("control", CONTROLS, ids=lambda control: f"0x{control[0]:02x}")
def test_a_control_character_in_a_field_value_gets_400(hardened, control, caplog):
    port = hardened()
    caplog.set_level(logging.INFO, "tests.hardening")
    with connect(port) as sock:
        sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\nX-A: a" + control + b"b\r\n\r\n")
        status, _, body = sock.read_response()
        assert status == 400
        # h11 refuses VT and FF itself; for the others h11 lets through, the head parser says why.
        by_h11 = control in (b"\x0b", b"\x0c")
        expected = b"illegal header line" if by_h11 else b"Control character in header field 'X-A'"
        assert expected in body, body
        assert sock.closes_within(0.5)
    [bad] = [r for r in caplog.records if r.name == "tests.hardening" and r.getMessage().startswith("Bad request")]
    assert bad.levelno == logging.INFO


@pytest.mark.parametrize("allowed", [b"\t", b"\x80", b"\xff"])
def test_htab_and_obs_text_in_a_field_value_are_accepted(hardened, allowed):
    port = hardened()
    with connect(port) as sock:
        sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\nX-A: a" + allowed + b"b\r\n\r\n")
        assert sock.read_response()[0] == 200


def test_a_request_without_host_is_refused(hardened):
    port = hardened()
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert sock.read_response()[0] == 400
        assert sock.closes_within(0.5)


def test_obs_fold_reaches_the_application_as_one_line_of_text(hardened):
    port = hardened()
    with connect(port) as sock:
        sock.sendall(b"GET /header HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n")
        assert sock.read_response()[2] == b"'one two'"


def test_an_unsupported_http_version_gets_505(hardened):
    port = hardened()
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")
        assert sock.read_response()[0] == 505


# 4. Client mistakes get their 4xx, with at most one log line.


@pytest.mark.parametrize("host", ["a..b", "a" * 64 + ".example", "h" * 10_000])
def test_a_malformed_host_gets_400_not_500(hardened, host, caplog):
    port = hardened()
    with connect(port) as sock:
        sock.sendall(f"GET /header HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert sock.read_response()[0] == 400
    assert all(len(r.getMessage()) < 1000 for r in caplog.records), "long values are cut in logs"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_ranges_get_their_part_or_416(hardened):
    port = hardened()
    with connect(port) as sock:
        sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1,3-4\r\n\r\n")
        status, headers, _ = sock.read_response()
        assert (status, headers["content-range"]) == (416, "bytes */150"), "werkzeug serves single ranges only"
        sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\nRange: bytes=500-600\r\n\r\n")
        status, headers, _ = sock.read_response()
        assert (status, headers["content-range"]) == (416, "bytes */150")
        sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\nRange: bytes=0-3\r\n\r\n")
        status, _, body = sock.read_response()
        assert (status, body) == (206, b"<h1>")


def test_a_head_that_stalls_gets_408_and_one_log_line(hardened, caplog):
    port = hardened()
    caplog.set_level(logging.INFO, "tests.hardening")
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert sock.read_response()[0] == 408
        assert DEADLINE * 0.8 <= time.monotonic() - started < DEADLINE + 1
        assert sock.closes_within(0.2)
    bad = [r for r in caplog.records if r.getMessage().startswith("Bad request")]
    assert len(bad) == 1 and "took too long" in bad[0].getMessage()


def test_more_than_100_header_fields_get_431(hardened, caplog):
    port = hardened()
    caplog.set_level(logging.INFO, "tests.hardening")
    fields = b"".join(b"X-%d: y\r\n" % i for i in range(101))
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        assert sock.read_response()[0] == 431
        assert sock.closes_within(0.5)
    assert len([r for r in caplog.records if r.getMessage().startswith("Bad request")]) == 1


def test_an_application_error_is_a_500_logged_with_its_traceback_through_logging(hardened, caplog):
    port = hardened()
    with connect(port) as sock:
        sock.sendall(b"GET /fail HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.read_response()[0] == 500
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info[0] is RuntimeError


# 6. Compression amplification.


def test_a_compressed_message_inflating_past_1_mib_is_refused_with_1009(hardened):
    port = hardened()
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = bomb.compress(b"\0" * (2 * 1024 * 1024)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    payload = payload[:-4]  # RFC 7692: the sync flush trailer is left out
    assert len(payload) < 4096
    with connect(port) as sock:
        sock.sendall(handshake_request(port, path="/ws", headers={"Sec-WebSocket-Extensions": "permessage-deflate"}))
        status, headers, _ = sock.read_response()
        assert status == 101 and "permessage-deflate" in headers["sec-websocket-extensions"]
        sock.sendall(masked_frame(0x2, payload, rsv=0x40))
        while len(sock.buffer) < 4:
            sock._more("before the close frame")
        assert sock.buffer[0] == 0x88 and int.from_bytes(sock.buffer[2:4], "big") == 1009


# 7. The request line's deadline, and symlinks.


def test_the_request_line_gets_the_request_timeout_not_the_keepalive_timer(hardened):
    port = hardened()
    with connect(port) as sock:  # a new connection: the first request's deadline runs from the start
        sock.sendall(b"G")
        assert sock.closes_within(DEADLINE + 1)
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.read_response()[0] == 200
        time.sleep(DEADLINE * 2)  # idle between requests: the keep-alive timer (30 s) applies
        sock.sendall(b"G")  # once the next request starts, its head has the request timeout
        started = time.monotonic()
        assert sock.closes_within(DEADLINE + 1)
        assert time.monotonic() - started >= DEADLINE * 0.8


def test_document_root_follows_symlinks_unless_told_not_to(hardened, public, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"secret")
    (public / "leak.txt").symlink_to(outside)
    (public / "alias.html").symlink_to(public / "index.html")
    following = hardened()
    strict = hardened(document_root=geventws.DocumentRoot(public, follow_symlinks=False))
    for port, leak_status in ((following, 200), (strict, 404)):
        with connect(port) as sock:
            sock.sendall(b"GET /leak.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.read_response()[0] == leak_status
            sock.sendall(b"GET /alias.html HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.read_response()[0] == 200, "a link inside the root is served either way"


# Out of file descriptors: no traceback per failed accept, and service resumes.

EMFILE_SERVER = """
import logging, resource, signal, sys
from gevent import monkey; monkey.patch_all()
import geventws
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
server = geventws.Server(logging.getLogger("emfile"), request_timeout=30)
server.expose(("127.0.0.1", 0))
def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
server.start(app)
print("PORT", server.addresses[0][1], flush=True)
geventws.trap_signal([signal.SIGTERM])
server.stop(timeout=1)
"""


def test_running_out_of_file_descriptors_logs_one_line_and_service_resumes():
    server = subprocess.Popen(
        [sys.executable, "-c", EMFILE_SERVER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = server.stdout.readline()
        while not line.startswith("PORT"):
            line = server.stdout.readline()
        port = int(line.split()[1])
        idle = [connect(port) for _ in range(80)]  # more than the server's 64 descriptors
        with connect(port) as late:
            late.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            late.sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                late.sock.recv(1)  # not accepted while descriptors are exhausted
            for peer in idle:
                peer.sock.close()
            late.sock.settimeout(5)
            assert late.read_response()[2] == b"ok", "accepting resumes once descriptors are free"
    finally:
        server.terminate()
        out, err = server.communicate(timeout=10)
    assert "Traceback" not in err
    assert out.count("Cannot accept connections") == 1, out


def test_the_command_line_sets_the_deadlines(tmp_path):
    trustme = pytest.importorskip("trustme")
    (tmp_path / "hello.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Length', '2')])\n"
        "    return [b'ok']\n"
    )
    trustme.CA().issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "tls.pem"))
    options = ["--tls-handshake-timeout", "0.5", "--request-timeout", "0.5", "--body-timeout", "0.5"]
    command = [sys.executable, "-m", "geventws", "serve", "hello:app", "--bind", "127.0.0.1:0"]
    command += ["--certfile", str(tmp_path / "tls.pem"), *options]
    server = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in server.stderr:
            if "Listening on https://127.0.0.1:" in line:
                port = int(line.rsplit(":", 1)[1])
                break
        assert port is not None, "the server did not start"
        with connect(port) as silent:
            started = time.monotonic()
            assert silent.closes_within(DEADLINE + 1)
            assert time.monotonic() - started >= DEADLINE * 0.8
    finally:
        server.terminate()
        _, err = server.communicate(timeout=10)
    assert "Traceback" not in err
