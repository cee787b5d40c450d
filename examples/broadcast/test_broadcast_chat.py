"""The chat's handler, tested as users test theirs: the geventws pytest plugin's ``geventws_serve``
fixture serves the app in the test process and ``connect()`` opens real websocket-client connections.

Run with ``pytest examples``: the plugin (installed with geventws) monkey-patches
the process when pytest starts, so no conftest.py is needed.
"""

import pytest
import websocket
from chat import create_app

#: The chat accepts pages it serves on port 1337; tests present themselves as one.
PAGE = "http://127.0.0.1:1337"


@pytest.fixture
def chat(geventws_serve):
    return geventws_serve(create_app())


def join(chat):
    """A client that is surely in the chat: it has seen its own first message come back."""
    client = chat.connect("/broadcast", origin=PAGE)
    client.send("hello")
    assert client.recv().endswith(": hello")
    return client


def close_code(client):
    opcode, frame = client.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    return int.from_bytes(frame.data[:2], "big")


def test_a_message_comes_back_to_its_sender_with_its_offset_and_id(chat):
    client = chat.connect("/broadcast", origin=PAGE)
    client.send("echo?")
    offset, _, rest = client.recv().partition(" ")
    sender, _, text = rest.partition(": ")
    assert "-" in offset and sender.isdigit() and text == "echo?"


def test_a_page_that_comes_back_gets_what_it_missed_then_the_live_chat(chat):
    alice = join(chat)
    bob = join(chat)
    assert alice.recv().endswith(": hello")  # bob's first message
    alice.send("before")
    last_seen = bob.recv()
    assert alice.recv() == last_seen
    bob.close()
    for index in range(10):
        alice.send(f"missed {index}")
    missed = [alice.recv() for _ in range(10)]

    since = last_seen.partition(" ")[0]
    bob = chat.connect(f"/broadcast?since={since}", origin=PAGE)
    assert [bob.recv() for _ in range(10)] == missed
    assert bob.recv() == "* caught up"
    alice.send("live")
    assert bob.recv().endswith(": live")


@pytest.mark.parametrize("since", ["1-1", "garbage"])
def test_a_page_whose_offset_cannot_be_resumed_is_told_and_joins_the_live_chat(chat, since):
    client = chat.connect(f"/broadcast?since={since}", origin=PAGE)
    notice = client.recv()
    assert notice.startswith("* some messages are lost (")
    client.send("still here")
    assert client.recv().endswith(": still here")


def test_a_message_reaches_everyone(chat):
    alice = join(chat)
    bob = join(chat)
    assert alice.recv().endswith(": hello")  # bob's first message
    alice.send("hi bob")
    seen_by_alice, seen_by_bob = alice.recv(), bob.recv()
    assert seen_by_alice == seen_by_bob
    assert seen_by_bob.endswith(": hi bob")


@pytest.mark.parametrize("origin", ["http://evil.example", None])
def test_other_origins_are_refused(chat, origin):
    options = {"origin": origin} if origin else {}  # None: the test server's own URL, not a chat page
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        chat.connect("/broadcast", **options)
    assert refused.value.status_code == 403


def test_a_normal_close_is_answered_with_1000(chat):
    client = join(chat)
    client.send_close(1000, b"bye")
    assert close_code(client) == 1000


def test_invalid_utf8_closes_with_1007(chat):
    client = join(chat)
    client.send(b"\xff\xfe", opcode=websocket.ABNF.OPCODE_TEXT)
    assert close_code(client) == 1007


def test_a_message_over_the_limit_closes_with_1009(chat):
    client = join(chat)
    client.send("x" * (10 * 1024 * 1024 + 1))  # the default message limit is 10 MiB
    assert close_code(client) == 1009
