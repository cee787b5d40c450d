"""``geventws serve``: the real command in a subprocess, as an operator runs it."""

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import gevent
import pytest
import websocket
from gevent.event import Event

from geventws.cli import UsageError, load_app, parse_bind

SAMPLE_APP = '''
"""A sample app for the command line tests: an echo endpoint and a plain HTTP route."""

import logging

from werkzeug.wrappers import Response

import geventws

VERSION = "1"


def echo(client, request, response):
    for message in client:
        client.send_text(str(message))


def version(environ, start_response):
    return Response(VERSION)(environ, start_response)


def create_app(prefix="/"):
    router = geventws.Router()
    # No server argument: `geventws serve` still closes its clients with 1001.
    router.add_route("GET", prefix + "echo", geventws.Websocket(None, logging.getLogger("sample"), None, echo))
    router.add_route("GET", "/version", version)
    return router


app = create_app()
not_an_app = 42


def create_flask_app():
    import flask

    flask_app = flask.Flask("sample")
    flask_app.add_url_rule("/hello", "hello", lambda: "hello from flask")
    return flask_app
'''

LISTENING = re.compile(r"Listening on (?:(https?)://(\[[^\]]+\]|[^:]+):(\d+)|unix:(\S+))")


class ServeProcess:
    """``geventws serve`` running in a subprocess; its stderr is read as it comes."""

    def __init__(self, cwd, *args, command=None):
        command = command or [sys.executable, "-m", "geventws", "serve"]
        self.process = subprocess.Popen(
            [*command, *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, so cleanup reaches a reloader's child too
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines = []
        self._changed = Event()
        self._eof = False
        self._reader = gevent.spawn(self._read)

    def _read(self):
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            self._changed.set()
        self._eof = True
        self._changed.set()

    @property
    def output(self):
        return "\n".join(self.lines)

    def wait_for(self, pattern, count=1, timeout=20):
        """The first ``count`` matches of ``pattern`` in stderr, waiting for them to be written."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            matches = [match for line in self.lines if (match := regex.search(line))]
            if len(matches) >= count:
                return matches[:count]
            if self._eof:
                raise AssertionError(f"exited ({self.process.wait()}) before {pattern!r}:\n{self.output}")
            self._changed.clear()
            if not self._changed.wait(max(0.0, deadline - time.monotonic())):
                raise AssertionError(f"no {pattern!r} within {timeout} s:\n{self.output}")

    def addresses(self, count):
        """The bound addresses, from the "Listening on" lines: ``(host, port)`` or a unix path."""
        found = []
        for match in self.wait_for(LISTENING.pattern, count):
            scheme, host, port, path = match.groups()
            found.append(path if path else (host.strip("[]"), int(port)))
        return found

    def exit_status(self, timeout=15):
        status = self.process.wait(timeout)
        self._reader.join(5)
        return status

    def kill(self):
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)
        self._reader.join(5)


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "sample.py").write_text(SAMPLE_APP)
    return tmp_path


@pytest.fixture
def run(app_dir):
    """``run(*args, cwd=app_dir, command=None)`` starts the command; every process is gone after the test."""
    processes = []

    def start(*args, cwd=app_dir, command=None):
        process = ServeProcess(cwd, *args, command=command)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.kill()


def echo_over(client, text="ping"):
    client.send(text)
    return client.recv()


def ipv6_loopback_available():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_serves_tcp_and_a_unix_socket_and_stops_on_sigterm(run, app_dir):
    sock_path = app_dir / "app.sock"
    served = run("sample:app", "--bind", "127.0.0.1:0", "--bind", f"unix:{sock_path}", "--max-header-size", "2048")
    (host, port), unix_path = served.addresses(2)
    assert (host, unix_path) == ("127.0.0.1", str(sock_path))

    tcp = websocket.create_connection(f"ws://127.0.0.1:{port}/echo", timeout=5)
    assert echo_over(tcp, "over tcp") == "over tcp"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=5) as reply:
        assert reply.read() == b"1"
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"ws://127.0.0.1:{port}/echo", header=["X-Big: " + "x" * 4000], timeout=5)
    assert refused.value.status_code == 431

    unix_socket = socket.socket(socket.AF_UNIX)
    unix_socket.connect(str(sock_path))
    local = websocket.create_connection("ws://localhost/echo", socket=unix_socket, timeout=5)
    assert echo_over(local, "over a unix socket") == "over a unix socket"
    served.wait_for(r"sample: WebSocket #\d+ accepted from unix socket on /echo")

    served.process.send_signal(signal.SIGTERM)
    for client in (tcp, local):
        opcode, frame = client.recv_data_frame(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(frame.data[:2], "big") == 1001
    assert served.exit_status() == 0
    assert not sock_path.exists()
    assert "Received SIGTERM, stopping" in served.output
    assert "Traceback" not in served.output


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback on this machine")
def test_serves_ipv6_loopback(run):
    served = run("sample:app", "--bind", "[::1]:0")
    [(host, port)] = served.addresses(1)
    assert host == "::1"
    client = websocket.create_connection(f"ws://[::1]:{port}/echo", timeout=5)
    assert echo_over(client, "over ipv6") == "over ipv6"
    served.wait_for(r"WebSocket #\d+ accepted from \[::1\]:\d+ on /echo")
    served.process.send_signal(signal.SIGINT)
    opcode, frame = client.recv_data_frame(control_frame=True)
    assert int.from_bytes(frame.data[:2], "big") == 1001
    assert served.exit_status() == 0


def test_console_script_with_a_factory_and_no_access_log(run):
    script = Path(sys.executable).parent / "geventws"
    args = ["sample:create_app('/v1/')", "--bind", "127.0.0.1:0", "--no-access-log"]
    served = run(*args, command=[str(script), "serve"])
    [(_, port)] = served.addresses(1)
    client = websocket.create_connection(f"ws://127.0.0.1:{port}/v1/echo", timeout=5)
    assert echo_over(client) == "ping"
    served.wait_for(r"WebSocket #\d+ accepted from 127\.0\.0\.1:\d+ on /v1/echo")
    client.close()
    served.wait_for(r"WebSocket #\d+ closed by the peer with 1000")
    served.process.send_signal(signal.SIGTERM)
    assert served.exit_status() == 0
    assert "geventws.server.access" not in served.output


def test_serves_a_flask_app_from_its_factory(run):
    served = run("sample:create_flask_app()", "--bind", "127.0.0.1:0")
    [(_, port)] = served.addresses(1)
    assert http_get(f"http://127.0.0.1:{port}/hello") == "hello from flask"
    served.process.send_signal(signal.SIGTERM)
    assert served.exit_status() == 0


def test_sigterm_closes_ten_clients_with_1001_and_exits_within_the_graceful_timeout(run):
    served = run("sample:app", "--bind", "127.0.0.1:0", "--graceful-timeout", "2")
    [(_, port)] = served.addresses(1)
    clients = [websocket.create_connection(f"ws://127.0.0.1:{port}/echo", timeout=5) for _ in range(10)]
    for number, client in enumerate(clients):
        assert echo_over(client, str(number)) == str(number)

    signalled = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    codes = []
    for client in clients:
        opcode, frame = client.recv_data_frame(control_frame=True)  # websocket-client answers the close
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        codes.append(int.from_bytes(frame.data[:2], "big"))
    assert served.exit_status(timeout=5) == 0
    elapsed = time.monotonic() - signalled
    assert codes == [1001] * 10
    assert elapsed < 2, f"exit took {elapsed:.2f} s"
    assert len(served.wait_for(r"closed by the server with 1001 'Server shutting down'", count=10)) == 10


def test_clients_that_never_answer_are_cut_off_at_the_graceful_timeout(run):
    served = run("sample:app", "--bind", "127.0.0.1:0", "--graceful-timeout", "1")
    [(_, port)] = served.addresses(1)
    silent = [websocket.create_connection(f"ws://127.0.0.1:{port}/echo", timeout=5) for _ in range(3)]
    for client in silent:  # they never read again, so never answer the close (the close period is 3 s)
        assert echo_over(client) == "ping"
    signalled = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    assert served.exit_status(timeout=5) == 0
    elapsed = time.monotonic() - signalled
    assert 1 <= elapsed < 2.5, f"exit took {elapsed:.2f} s"  # the timeout, not the 3 s close period


def test_a_second_signal_exits_at_once(run):
    served = run("sample:app", "--bind", "127.0.0.1:0", "--graceful-timeout", "30")
    [(_, port)] = served.addresses(1)
    # A client that never reads never answers the close: the graceful stop would wait its close period.
    silent = websocket.create_connection(f"ws://127.0.0.1:{port}/echo", timeout=5)
    assert echo_over(silent) == "ping"
    served.process.send_signal(signal.SIGTERM)
    served.wait_for("Received SIGTERM")
    signalled = time.monotonic()
    served.process.send_signal(signal.SIGINT)
    assert served.exit_status(timeout=5) == 1
    assert time.monotonic() - signalled < 1
    assert "Second signal: exiting at once" in served.output


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    trustme = pytest.importorskip("trustme")
    folder = tmp_path_factory.mktemp("certs")
    authority = trustme.CA()
    server_cert = authority.issue_cert("127.0.0.1", "localhost")
    server_cert.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    for blob in server_cert.cert_chain_pems[1:]:
        blob.write_to_path(folder / "cert.pem", append=True)
    server_cert.private_key_pem.write_to_path(folder / "key.pem")
    authority.cert_pem.write_to_path(folder / "ca.pem")
    client_cert = authority.issue_cert("client@example.org")
    client_cert.private_key_and_cert_chain_pem.write_to_path(folder / "client.pem")
    return folder, authority


def client_context(authority, client_cert=None):
    context = ssl.create_default_context()
    authority.configure_trust(context)
    if client_cert is not None:
        context.load_cert_chain(client_cert)
    return context


def test_wss_with_a_generated_certificate(run, certificates):
    folder, authority = certificates
    served = run(
        "sample:app",
        "--bind",
        "127.0.0.1:0",
        "--certfile",
        str(folder / "cert.pem"),
        "--keyfile",
        str(folder / "key.pem"),
    )
    [(_, port)] = served.addresses(1)
    served.wait_for(rf"Listening on https://127\.0\.0\.1:{port}")
    client = websocket.create_connection(
        f"wss://127.0.0.1:{port}/echo", sslopt={"context": client_context(authority)}, timeout=5
    )
    assert echo_over(client, "over tls") == "over tls"
    served.process.send_signal(signal.SIGTERM)
    opcode, frame = client.recv_data_frame(control_frame=True)
    assert int.from_bytes(frame.data[:2], "big") == 1001
    assert served.exit_status() == 0


def test_ca_certs_require_a_client_certificate(run, certificates):
    folder, authority = certificates
    served = run(
        "sample:app",
        "--bind",
        "127.0.0.1:0",
        "--certfile",
        str(folder / "cert.pem"),
        "--keyfile",
        str(folder / "key.pem"),
        "--ca-certs",
        str(folder / "ca.pem"),
    )
    [(_, port)] = served.addresses(1)
    url = f"wss://127.0.0.1:{port}/echo"
    with pytest.raises((ssl.SSLError, OSError, websocket.WebSocketException)):
        anonymous = websocket.create_connection(url, sslopt={"context": client_context(authority)}, timeout=5)
        anonymous.send("no certificate")  # TLS 1.3 reports the refusal on first use
        anonymous.recv()
    trusted = client_context(authority, folder / "client.pem")
    client = websocket.create_connection(url, sslopt={"context": trusted}, timeout=5)
    assert echo_over(client, "with a certificate") == "with a certificate"


def busy_port():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


BAD_INVOCATIONS = {
    "missing module": (["nosuchmodule:app"], "geventws: error: no module named 'nosuchmodule'"),
    "missing attribute": (["sample:nothing"], "geventws: error: module 'sample' has no attribute 'nothing'"),
    "not an app": (["sample:not_an_app"], "geventws: error: sample:not_an_app is not a WSGI app: it is a int"),
    "factory not called": (
        ["sample:create_app"],
        "geventws: error: sample:create_app is not a WSGI app: it cannot be called with (environ, start_response);"
        " if it is a factory, call it: 'sample:create_app()'",
    ),
    "bad bind": (
        ["sample:app", "--bind", "localhost"],
        "geventws: error: invalid --bind 'localhost': expected HOST:PORT, [IPV6]:PORT or unix:PATH",
    ),
    "bad port": (["sample:app", "--bind", "127.0.0.1:http"], "geventws: error: invalid --bind '127.0.0.1:http'"),
    "missing certificate": (
        ["sample:app", "--certfile", "missing.pem"],
        "geventws: error: cannot load the certificate missing.pem: No such file or directory",
    ),
    "not a certificate": (
        ["sample:app", "--certfile", "sample.py"],
        "geventws: error: cannot load the certificate sample.py:",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INVOCATIONS))
def test_bad_invocations_exit_2_with_one_line(run, case):
    args, expected = BAD_INVOCATIONS[case]
    served = run(*args)
    assert served.exit_status() == 2
    assert served.lines and served.lines[-1].startswith(expected), served.output
    assert "Traceback" not in served.output


def test_an_address_in_use_exits_2_with_one_line(run):
    with busy_port() as holder:
        port = holder.getsockname()[1]
        served = run("sample:app", "--bind", f"127.0.0.1:{port}")
        assert served.exit_status() == 2
    assert served.lines[-1] == f"geventws: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert "Traceback" not in served.output


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(url):
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.read().decode()


@pytest.mark.timeout(60)
def test_reload_restarts_after_a_source_change(run, app_dir):
    port = free_port()  # the same port across restarts
    served = run("sample:app", "--bind", f"127.0.0.1:{port}", "--reload")
    served.addresses(1)
    assert http_get(f"http://127.0.0.1:{port}/version") == "1"

    source = app_dir / "sample.py"
    source.write_text(SAMPLE_APP.replace('VERSION = "1"', 'VERSION = "2"'))
    # The reloader compares modification times with the ones it saw first: step
    # the time forward until it notices (it polls once a second).
    stamp = time.time()
    for attempt in range(1, 20):
        os.utime(source, (stamp + attempt, stamp + attempt))
        try:
            served.wait_for("Detected change in .*sample.py", timeout=1.5)
            break
        except AssertionError:
            continue
    served.addresses(2)  # listening again, in the new child
    assert http_get(f"http://127.0.0.1:{port}/version") == "2"


def test_the_broadcast_example_as_the_readme_starts_it(run):
    repository = Path(__file__).parent.parent
    served = run("examples.broadcast.chat:app", "--bind", "127.0.0.1:0", cwd=repository)
    [(_, port)] = served.addresses(1)
    assert "<form" in http_get(f"http://127.0.0.1:{port}/")
    page = "http://127.0.0.1:1337"  # the origins the chat allows
    alice = websocket.create_connection(f"ws://127.0.0.1:{port}/broadcast", origin=page, timeout=5)
    assert echo_over(alice, "hello").endswith(": hello")
    served.process.send_signal(signal.SIGTERM)
    opcode, frame = alice.recv_data_frame(control_frame=True)
    assert int.from_bytes(frame.data[:2], "big") == 1001
    assert served.exit_status() == 0


@pytest.mark.parametrize(
    "value, address",
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:1337", ("::1", 1337)),
        ("[::]:80", ("::", 80)),
        ("unix:/run/app.sock", "unix:/run/app.sock"),
    ],
)
def test_bind_values(value, address):
    bind = parse_bind(value)
    assert bind.address == address
    assert str(bind) == value


BAD_BINDS = ["8000", "localhost", ":8000", "::1:8000", "[::1]", "[::1]8000", "host:99999", "unix:"]


@pytest.mark.parametrize("value", BAD_BINDS)
def test_bad_bind_values(value):
    with pytest.raises(UsageError, match="invalid --bind"):
        parse_bind(value)


def test_app_specs(tmp_path):
    (tmp_path / "spec_sample.py").write_text(SAMPLE_APP)
    try:
        module = load_app("spec_sample", str(tmp_path))  # MODULE alone: MODULE:app
        assert module is sys.modules["spec_sample"].app
        factory_made = load_app("spec_sample:create_app(prefix='/v2/')", str(tmp_path))
        assert factory_made is not module and callable(factory_made)
        with pytest.raises(UsageError, match="factory arguments must be Python literals"):
            load_app("spec_sample:create_app(VERSION)", str(tmp_path))
        with pytest.raises(UsageError, match="spec_sample:not_an_app is not callable, so it cannot be a factory"):
            load_app("spec_sample:not_an_app()", str(tmp_path))
        with pytest.raises(UsageError, match="is not a WSGI app: it is the module"):
            load_app("spec_sample:geventws", str(tmp_path))
    finally:
        sys.modules.pop("spec_sample", None)
        sys.path.remove(str(tmp_path))
