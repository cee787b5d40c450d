"""A test server app in a process of its own: it prints ``READY <port>`` once it listens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gevent
from processes import stop_process


class AppProcess:
    """One process of a script under tests/; its stderr goes to ``log_path``."""

    def __init__(self, script: Path, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self.log_file = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=subprocess.PIPE,
            stderr=self.log_file,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        self.port: int | None = None

    def wait_ready(self, timeout: float = 20) -> None:
        with gevent.Timeout(timeout, AssertionError(f"app did not start: {self.log()}")):
            line = self.process.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("READY "), f"{line!r} {self.log()}"
        self.port = int(line.split()[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.process)
        self.process.stdout.close()  # type: ignore[union-attr]
        self.log_file.close()
