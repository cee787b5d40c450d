"""Stopping the server processes the tests start (not a test module)."""

from __future__ import annotations

import signal
import subprocess


def stop_process(process: subprocess.Popen, stop_signal: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Ask ``process`` to stop with ``stop_signal``; SIGKILL it if it is still there after ``timeout`` seconds."""
    if process.poll() is None:
        process.send_signal(stop_signal)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
