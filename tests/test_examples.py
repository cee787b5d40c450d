"""The broadcast chat example, run as users run it: a separate process on port 1337."""

import signal
import urllib.request

import pytest
import websocket
from conftest import broadcast_example


@pytest.fixture
def example():
    with broadcast_example() as process:
        yield process


def test_broadcast_example_serves_the_page_and_relays_messages(example):
    with urllib.request.urlopen("http://127.0.0.1:1337/", timeout=5) as reply:
        page = reply.read().decode()
    assert "/broadcast" in page and "<form" in page
    origin = "http://127.0.0.1:1337"
    # The handler joins the gateway after the 101: a client that sees its own message back has joined.
    alice = websocket.create_connection("ws://127.0.0.1:1337/broadcast", origin=origin, timeout=5)
    alice.send("alice joins")
    assert alice.recv().endswith(": alice joins")
    bob = websocket.create_connection("ws://127.0.0.1:1337/broadcast", origin=origin, timeout=5)
    bob.send("bob joins")
    assert bob.recv().endswith(": bob joins")
    assert alice.recv().endswith(": bob joins")
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
