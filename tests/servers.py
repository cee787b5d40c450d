"""Running a WSGI app under the servers users run: ours, plain pywsgi, werkzeug's, gunicorn.

Helpers shared by the Flask and gunicorn tests (not a test module).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket
from processes import stop_process

TESTS = Path(__file__).parent
_ANSI_STYLE = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Served:
    name: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tls(self) -> bool:
        return bool(self.extra.get("tls"))

    @property
    def http_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def _context(self) -> ssl.SSLContext | None:
        return ssl._create_unverified_context() if self.tls else None  # a throwaway self-signed certificate

    def log(self) -> str:
        """The server's output so far, without the colours werkzeug puts in its request log."""
        return _ANSI_STYLE.sub("", self.log_path.read_text(errors="replace")) if self.log_path else ""

    def get(self, path: str, cookie: str | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.http_url + path, headers={"Cookie": cookie} if cookie else {})
        try:
            with urllib.request.urlopen(request, timeout=10, context=self._context()) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def login(self, name: str) -> str:
        """Log in through the app's form; returns the session cookie for the handshake."""
        request = urllib.request.Request(self.http_url + "/login", data=f"name={name}".encode())
        try:
            opener = (
                _NO_REDIRECTS
                if not self.tls
                else urllib.request.build_opener(_KeepRedirects, urllib.request.HTTPSHandler(context=self._context()))
            )
            with opener.open(request, timeout=10) as reply:
                cookie = reply.headers["Set-Cookie"]
        except urllib.error.HTTPError as redirect:  # a login form answering with a redirect
            cookie = redirect.headers["Set-Cookie"]
        return str(cookie.split(";", 1)[0])

    def connect(self, path: str, cookie: str | None = None, **options: Any) -> websocket.WebSocket:
        options.setdefault("timeout", 10)
        if cookie:
            options["cookie"] = cookie
        if self.tls:
            options["sslopt"] = {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
        return websocket.create_connection(f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}{path}", **options)


class _KeepRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_KeepRedirects)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def in_process(name: str, app: Any) -> Iterator[Served]:
    """``app`` served in this (monkey-patched) process by ``name``: geventws, pywsgi or werkzeug."""
    if name == "geventws":
        import logging

        from geventws import Server

        server = Server(logging.getLogger("tests.server"))
        server.expose(("127.0.0.1", 0))
        server.start(app)
        try:
            yield Served(name, server.addresses[0][1])
        finally:
            server.stop(timeout=1)
    elif name == "pywsgi":
        from gevent.pywsgi import WSGIServer

        pywsgi = WSGIServer(("127.0.0.1", 0), app, log=None)
        pywsgi.start()
        try:
            yield Served(name, pywsgi.server_port)
        finally:
            pywsgi.stop(timeout=1)
    elif name == "werkzeug":
        from werkzeug.serving import make_server

        dev = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=dev.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        thread.start()
        try:
            yield Served(name, dev.server_port)
        finally:
            dev.shutdown()
            dev.server_close()
    else:
        raise ValueError(name)


@contextmanager
def gunicorn(
    log_dir: Path,
    *arguments: str,
    app: str = "flask_test_app:app",
    chdir: Path = TESTS,
    stop: bool = True,
    env: dict[str, str] | None = None,
    stop_signal: int | None = None,
) -> Iterator[Served]:
    """A real gunicorn master on a free port with ``arguments`` (``-k``, ``-w``, ...); ``env`` adds variables.

    ``stop_signal`` replaces the graceful SIGTERM (SIGINT: gunicorn's quick shutdown).
    """
    port = free_port()
    log_path = log_dir / f"gunicorn-{port}.log"
    command = [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "--chdir", str(chdir)]
    command += ["--access-logfile", "-", "--error-logfile", "-", *_no_control_socket(), *arguments, app]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}
        )
    served = Served("gunicorn " + " ".join(arguments), port, process, log_path, {"tls": "--certfile" in arguments})
    try:
        wait_until_serving(served)
        yield served
    finally:
        stop_process(process, stop_signal or (signal.SIGTERM if stop else signal.SIGKILL), timeout=15)


@contextmanager
def flask_run(log_dir: Path, *arguments: str, app: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """``flask --app app run`` (werkzeug's development server, unpatched) on a free port, in a process group.

    The group is stopped as a whole: with ``--debug`` the reloader's child serves.
    """
    port = free_port()
    log_path = log_dir / f"flask-{port}.log"
    command = [sys.executable, "-m", "flask", "--app", app, "run", "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*command, *arguments],
            cwd=TESTS,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    served = Served("flask run " + " ".join(arguments), port, process, log_path)
    try:
        wait_until_serving(served)
        yield served
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def _no_control_socket() -> list[str]:
    # Newer gunicorn opens a control socket in ~/.gunicorn: not wanted in tests.
    from gunicorn import config

    known = any("--no-control-socket" in (setting.cli or []) for setting in config.KNOWN_SETTINGS)
    return ["--no-control-socket"] if known else []


def wait_until_serving(served: Served, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served.process is not None and served.process.poll() is not None:
            raise AssertionError(f"{served.name} exited early:\n{served.log()}")
        try:
            status, _ = served.get("/")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{served.name} did not start serving:\n{served.log()}")


def wait_for_workers(served: Served, count: int, timeout: float = 30) -> None:
    """Wait until ``count`` of our gunicorn workers have said they are ready (and so handle stop signals)."""
    deadline = time.monotonic() + timeout
    while served.log().count("Worker ready (pid:") < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} workers not ready:\n{served.log()}")
        time.sleep(0.05)


def close_code(ws: websocket.WebSocket) -> tuple[int, str]:
    """Read until the server's close frame; its code and reason."""
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
            return code, data[2:].decode()
