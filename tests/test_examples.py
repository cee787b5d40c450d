"""The broadcast chat example, run as users run it: a separate process on port 1337."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import websocket

EXAMPLE = Path(__file__).parent.parent / "examples" / "broadcast" / "server.py"


def wait_for_port(port, process, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"example exited early: {process.stdout.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("example did not start listening")


@pytest.fixture
def example():
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 1337)) == 0:
            pytest.skip("port 1337 is taken")
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_for_port(1337, process)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_broadcast_example_serves_the_page_and_relays_messages(example):
    with urllib.request.urlopen("http://127.0.0.1:1337/", timeout=5) as reply:
        page = reply.read().decode()
    assert "/broadcast" in page and "<form" in page
    origin = "http://127.0.0.1:1337"
    alice = websocket.create_connection("ws://127.0.0.1:1337/broadcast", origin=origin, timeout=5)
    bob = websocket.create_connection("ws://127.0.0.1:1337/broadcast", origin=origin, timeout=5)
    time.sleep(0.2)  # both have joined the gateway
    alice.send("hello from alice")
    seen_by_alice, seen_by_bob = alice.recv(), bob.recv()
    assert seen_by_alice == seen_by_bob
    assert seen_by_bob.endswith(": hello from alice")
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection("ws://127.0.0.1:1337/broadcast", origin="http://evil.example", timeout=5)
    assert refused.value.status_code == 403

    example.send_signal(signal.SIGTERM)
    opcode, frame = bob.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert int.from_bytes(frame.data[:2], "big") == 1001
    assert example.wait(10) == 0
    output = example.stdout.read()
    assert "Received signal 15, stopping HTTP server" in output
