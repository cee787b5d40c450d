"""Room history through Redis: two server processes share a real Redis; clients come back to either one."""

import json
from pathlib import Path
from urllib.parse import quote

import gevent
import pytest
import redis
import websocket
from app_process import AppProcess

from geventws.redis import decode_envelope, encode_envelope

APP = Path(__file__).parent / "redis_history_app.py"
HISTORY = 3000


class App(AppProcess):
    """One process of tests/redis_history_app.py."""

    def __init__(self, redis_url, log_path):
        super().__init__(APP, [redis_url, str(HISTORY)], log_path)
        self.wait_ready()

    def connect(self, room, since=None):
        """A client in ``room`` and what it got before its greeting (its replay)."""
        query = "" if since is None else f"?since={quote(since)}"
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/room/{room}{query}", timeout=10)
        replayed = []
        while True:
            message = json.loads(ws.recv())
            if "id" in message:
                return ws, replayed
            assert "gap" not in message, message
            replayed.append(message)

    def gap(self, room, since):
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/room/{room}?since={quote(since)}", timeout=10)
        message = json.loads(ws.recv())
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(frame.data[:2], "big") == 4000
        return message["gap"]


@pytest.fixture(scope="module")
def apps(redis_server, tmp_path_factory):
    directory = tmp_path_factory.mktemp("apps")
    started = []
    try:
        for index in range(2):
            started.append(App(redis_server.url, directory / f"app{index}.log"))
        yield started
    finally:
        for app in started:
            app.stop()
    for app in started:
        assert "Traceback" not in app.log(), app.log()


def say(ws, text):
    ws.send(json.dumps({"op": "say", "text": text}))


def read_until(ws, text):
    """Messages up to and including the one whose text is ``text``."""
    received = []
    with gevent.Timeout(20, AssertionError(f"no {text!r} after {len(received)} messages")):
        while not received or received[-1].get("text") != text:
            received.append(json.loads(ws.recv()))
    return received


def texts(messages):
    return [message["text"] for message in messages]


@pytest.mark.parametrize("back_to", [0, 1], ids=["same process", "other process"])
def test_a_client_that_comes_back_gets_exactly_what_it_missed_then_live_messages(apps, back_to):
    room = f"resume{back_to}"
    alice, _ = apps[0].connect(room)
    bob, _ = apps[1].connect(room)
    say(alice, "before")
    seen = json.loads(bob.recv())
    assert seen["text"] == "before" and json.loads(alice.recv()) == seen
    bob.close()
    for index in range(10):
        say(alice, f"missed {index}")
    missed = read_until(alice, "missed 9")  # back from Redis: kept and published

    bob, replayed = apps[back_to].connect(room, since=seen["offset"])
    assert replayed == missed
    assert texts(replayed) == [f"missed {index}" for index in range(10)]
    say(alice, "live")
    assert json.loads(bob.recv())["text"] == "live"
    offsets = [tuple(map(int, message["offset"].split("-"))) for message in [seen, *replayed]]
    assert offsets == sorted(set(offsets))
    bob.send(json.dumps({"op": "say", "text": "reported", "report": True}))
    answers = [json.loads(bob.recv()) for _ in range(2)]
    message = next(answer for answer in answers if "text" in answer)
    assert {"result": message["offset"]} in answers  # SendResult.offset, once delivered


def test_broadcasts_from_both_processes_go_on_while_a_replay_is_read_and_each_arrives_once(apps):
    room = "busy"
    alice, _ = apps[0].connect(room)
    carol, _ = apps[1].connect(room)
    alice.send(json.dumps({"op": "burst", "tag": "old", "count": 100}))
    since = read_until(alice, "old:end")[-1]["offset"]
    alice.send(json.dumps({"op": "burst", "tag": "kept", "count": 2000}))  # four pages of XRANGE
    read_until(alice, "kept:end")
    # Live messages from both processes, trickling while the returning client's replay is read and sent.
    alice.send(json.dumps({"op": "burst", "tag": "a", "count": 300, "pause": 0.001}))
    carol.send(json.dumps({"op": "burst", "tag": "c", "count": 300, "pause": 0.001}))
    bob, replayed = apps[0].connect(room, since=since)
    received = replayed + read_until(bob, "a:end" if "c:end" in texts(replayed) else "c:end")
    while not {"a:end", "c:end"} <= set(texts(received)):
        received.append(json.loads(bob.recv()))
    expected = [f"kept:{index}:{'x' * 200}" for index in range(2000)] + ["kept:end"]
    assert texts(received[:2001]) == expected  # the replay first, in order
    live = texts(received[2001:])
    assert len(live) == len(set(live)) == 602  # each once
    for tag in "ac":
        assert [text for text in live if text.startswith(tag)] == [
            *(f"{tag}:{index}:{'x' * 200}" for index in range(300)),
            f"{tag}:end",
        ]
    offsets = [tuple(map(int, message["offset"].split("-"))) for message in received]
    assert offsets == sorted(set(offsets))  # the order of the room, with no offset twice
    # Everyone saw the same order: the client that never left too.
    seen_by_carol = read_until(carol, "a:end" if live[-1] == "a:end" else "c:end")
    assert texts(seen_by_carol)[-602:] == live


def test_an_offset_older_than_the_history_is_a_gap(apps, redis_server):
    room = "short"
    alice, _ = apps[0].connect(room)
    say(alice, "first")
    oldest = json.loads(alice.recv())["offset"]
    alice.send(json.dumps({"op": "burst", "tag": "many", "count": HISTORY + 300}))
    read_until(alice, "many:end")
    kept = redis.Redis.from_url(redis_server.url).xlen("geventws:{history:short}:history")
    assert HISTORY <= kept < HISTORY + 300  # trimmed to about the history's length
    for app in apps:
        assert "too old" in app.gap(room, oldest)


@pytest.mark.parametrize(
    ("since", "reason"),
    [
        ("abc", "malformed"),
        ("", "malformed"),
        ("1-", "malformed"),
        ("99999999999999999999999-1", "malformed"),
        ("1-1", "too old), or unknown"),
    ],
)
def test_a_malformed_or_unknown_offset_is_a_gap_and_the_server_goes_on(apps, since, reason):
    assert reason in apps[1].gap("bad", since)
    alice, _ = apps[1].connect("bad")
    say(alice, "still here")
    assert json.loads(alice.recv())["text"] == "still here"


def test_a_room_without_history_behaves_as_before(apps, redis_server):
    alice, _ = apps[0].connect("plain")
    bob, _ = apps[1].connect("plain")
    say(alice, "hello")
    assert json.loads(bob.recv()) == {"offset": "", "text": "hello"}  # the function got no offset
    assert json.loads(alice.recv()) == {"offset": "", "text": "hello"}
    assert "keeps no history" in apps[0].gap("plain", "1-1")
    assert not redis.Redis.from_url(redis_server.url).exists("geventws:{history:plain}:history")


def test_the_envelope_carries_the_reference_and_the_offset():
    raw = encode_envelope("me", "hi", ref=7)
    assert decode_envelope(raw).ref == 7 and decode_envelope(raw).offset is None
    published = raw[: raw.index(b"\n") - 1] + b',"offset":"5-0"}\nhi'
    assert decode_envelope(published).offset == "5-0"
