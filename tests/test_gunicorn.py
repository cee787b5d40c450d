"""gunicorn with our worker stops gracefully: every WebSocket client gets 1001 at once.

Real gunicorn masters on free ports; clients are websocket-client connections.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from servers import TESTS, close_code, gunicorn, wait_for_workers

WORKER = ("-k", "geventws.gunicorn.Worker")
CLOSE_PERIOD = 3.0  # the client factory's default


@pytest.mark.parametrize(("signum", "clients"), [(signal.SIGTERM, 20), (signal.SIGQUIT, 5)])
def test_stop_closes_every_client_with_1001_and_the_master_exits_0(
    tmp_path: Path, signum: signal.Signals, clients: int
) -> None:
    with gunicorn(tmp_path, *WORKER, "-w", "2", "--graceful-timeout", "10") as served:
        wait_for_workers(served, 2)  # a signal that reaches a booting worker is lost, in any gunicorn worker
        cookie = served.login("alice")
        connections = [served.connect("/echo", cookie) for _ in range(clients)]
        for connection in connections:
            connection.recv()
        assert served.process is not None
        started = time.monotonic()
        served.process.send_signal(signum)
        for connection in connections:
            assert close_code(connection) == (1001, "Server shutting down")
            connection.close()
        closed_after = time.monotonic() - started
        assert served.process.wait(10) == 0
        exited_after = time.monotonic() - started
    assert closed_after < CLOSE_PERIOD, closed_after
    assert exited_after < 10, exited_after
    assert "Worker graceful timeout" not in served.log()


def test_max_requests_recycles_the_worker_with_1001(tmp_path: Path) -> None:
    with gunicorn(tmp_path, *WORKER, "-w", "1", "--max-requests", "5", "--graceful-timeout", "10") as served:
        # wait_until_serving made request 1; login is 2, the handshake 3.
        cookie = served.login("alice")
        client = served.connect("/echo", cookie)
        greeting = client.recv()
        assert served.get("/")[0] == 200  # 4
        assert served.get("/")[0] == 200  # 5: the worker stops after this one
        assert close_code(client) == (1001, "Server shutting down")
        client.close()
        replacement = served.connect("/echo", cookie)  # gunicorn started a new worker
        try:
            assert replacement.recv().split("pid")[1] != greeting.split("pid")[1]
        finally:
            replacement.close()
    assert "Autorestarting worker after current request." in served.log()


def test_reload_closes_clients_with_1001(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    shutil.copy(TESTS / "flask_test_app.py", app_dir)
    with gunicorn(tmp_path, *WORKER, "-w", "1", "--reload", "--reload-engine", "poll", chdir=app_dir) as served:
        client = served.connect("/echo", served.login("alice"))
        client.recv()
        time.sleep(1.5)  # the poll reloader has taken its first look at the files
        (app_dir / "flask_test_app.py").write_text((app_dir / "flask_test_app.py").read_text() + "\n# changed\n")
        assert close_code(client) == (1001, "Server shutting down")
        client.close()
    assert "Worker reloading" in served.log()


def test_the_sync_worker_refuses_the_upgrade_and_says_what_works(tmp_path: Path) -> None:
    with gunicorn(tmp_path, "-k", "sync", "-w", "1") as served:
        status, body = served.get("/")
        assert status == 200  # plain HTTP is unaffected
        cookie = served.login("alice")
        with pytest.raises(Exception) as refused:
            served.connect("/echo", cookie)
        assert getattr(refused.value, "status_code", None) == 500
    log = served.log()
    assert "gunicorn's sync worker serves one request at a time" in log
    assert "-k geventws.gunicorn.Worker" in log and "gunicorn -k gthread" in log


def test_tls_options_apply(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    with gunicorn(tmp_path, *WORKER, "-w", "1", "--certfile", str(cert), "--keyfile", str(key)) as served:
        client = served.connect("/echo", served.login("alice"))
        try:
            assert client.recv().startswith("hello alice")
            client.send_binary(b"over tls")
            assert client.recv() == b"over tls"
        finally:
            client.close()


def test_keep_alive_drops_idle_connections_after_the_setting(tmp_path: Path) -> None:
    with (
        gunicorn(tmp_path, *WORKER, "-w", "1", "--keep-alive", "1") as served,
        socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = time.monotonic()
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        idle = time.monotonic() - answered
    assert received.startswith(b"HTTP/1.1 200")
    assert 0.5 < idle < 5, idle


def test_keep_alive_0_closes_after_each_request(tmp_path: Path) -> None:
    with gunicorn(tmp_path, *WORKER, "-w", "1", "--keep-alive", "0") as served:
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            started = time.monotonic()
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        assert received.startswith(b"HTTP/1.1 200") and time.monotonic() - started < 5  # not the 10 s idle limit


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for 127.0.0.1 (trustme, from the test extra)."""
    import trustme

    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    return cert, key


def closes_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the peer closes ``sock`` (EOF or reset) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_tls_peer_that_never_says_hello_is_dropped_after_the_workers_handshake_deadline(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    options = ("-k", "gunicorn_workers.QuickTlsWorker", "-w", "1", "--certfile", str(cert), "--keyfile", str(key))
    with gunicorn(tmp_path, *options, "--log-level", "debug") as served:
        silent = [socket.create_connection(("127.0.0.1", served.port), timeout=5) for _ in range(5)]
        started = time.monotonic()
        try:
            assert all(closes_within(sock, 3) for sock in silent), "a silent TLS peer was kept"
            elapsed = time.monotonic() - started
        finally:
            for sock in silent:
                sock.close()
        # The deadline does not cut real clients off.
        client = served.connect("/echo", served.login("alice"))
        try:
            assert client.recv().startswith("hello alice")
        finally:
            client.close()
    assert 0.5 < elapsed < 3, elapsed
    log = served.log()
    assert log.count("TLS handshake with 127.0.0.1 failed: TLS handshake took too long") == 5, log
    assert "Traceback" not in log


#: A gunicorn config file: the worker gets 64 file descriptors.
EMFILE_CONFIG = """
import resource

def post_worker_init(worker):
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
"""


def test_out_of_file_descriptors_the_worker_pauses_accepting_logs_once_and_resumes(tmp_path: Path) -> None:
    config = tmp_path / "emfile.conf.py"
    config.write_text(EMFILE_CONFIG)
    with gunicorn(tmp_path, *WORKER, "-w", "1", "-c", str(config)) as served:
        idle = [socket.create_connection(("127.0.0.1", served.port), timeout=5) for _ in range(80)]
        try:
            with socket.create_connection(("127.0.0.1", served.port), timeout=5) as late:
                late.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                late.settimeout(0.5)
                with pytest.raises(TimeoutError):
                    late.recv(1)  # not accepted while the worker has no descriptor left
                for sock in idle:
                    sock.close()
                idle = []
                late.settimeout(5)
                answer = b""
                while chunk := late.recv(65536):
                    answer += chunk
        finally:
            for sock in idle:
                sock.close()
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"plain HTTP works"), answer
        log = served.log()
    assert log.count("Cannot accept connections, pausing: [Errno 24] Too many open files") == 1, log
    assert "Traceback" not in log
