"""Room history on the local gateway: offsets, and clients that come back with the last one they saw."""

import json
import tracemalloc
from urllib.parse import quote

import gevent
import pytest
import websocket
from conftest import factory

import geventws
from geventws import HistoryGap, WebsocketClientGateway
from geventws.history import History


def chat_app(gateway):
    """``/?since=<offset>`` resumes; a text message is broadcast as JSON ``{"offset", "text"}``.

    A client that cannot resume gets ``{"gap": reason}`` and is closed with 4000.
    """

    def handler(client, request, response):
        since = request.args.get("since")
        try:
            gateway.add_client(client, since=since)
        except HistoryGap as gap:
            client.send_text(json.dumps({"gap": gap.reason}))
            client.close(4000, "reload")
            return
        gateway.send_text(json.dumps({"id": client.id}), client.id)  # after the replay: the gateway keeps the order
        for message in client:
            text = str(message)
            gateway.broadcast_text(lambda offset, text=text: json.dumps({"offset": offset, "text": text}))

    return factory(lambda server: geventws.Websocket(server, None, None, handler))


def connect(running, since=None):
    """A client and what it received before its greeting (the replay)."""
    client = running.connect("/" if since is None else f"/?since={since}")
    replayed = []
    while True:
        message = json.loads(client.recv())
        if "id" in message:
            return client, replayed, message["id"]
        assert "gap" not in message, message
        replayed.append(message)


def gap_of(running, since):
    client = running.connect(f"/?since={quote(since)}")
    message = json.loads(client.recv())
    opcode, frame = client.recv_data_frame(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(frame.data[:2], "big") == 4000
    return message["gap"]


def texts(messages):
    return [message["text"] for message in messages]


def test_a_client_that_comes_back_gets_exactly_what_it_missed_then_live_messages(serve):
    gateway = WebsocketClientGateway(history=100)
    running = serve(chat_app(gateway))
    alice, _, _ = connect(running)
    bob, _, _ = connect(running)
    alice.send("before")
    seen = json.loads(bob.recv())
    assert seen["text"] == "before" and json.loads(alice.recv()) == seen
    bob.close()
    for index in range(10):
        alice.send(f"missed {index}")
    missed = [json.loads(alice.recv()) for _ in range(10)]  # all ten are broadcast (and kept) by now

    bob, replayed, _ = connect(running, since=seen["offset"])
    assert replayed == missed
    assert texts(replayed) == [f"missed {index}" for index in range(10)]
    alice.send("live")
    assert json.loads(bob.recv())["text"] == "live"


def test_offsets_grow_and_the_result_carries_them(serve):
    gateway = WebsocketClientGateway(history=3)
    first = gateway.broadcast_text("one")
    second = gateway.broadcast_binary(lambda offset: offset.encode())
    assert first.offset is not None and second.offset is not None
    epoch, sequence = first.offset.split("-")
    assert second.offset == f"{epoch}-{int(sequence) + 1}"
    assert gateway.history.after(first.offset) == [second.offset.encode()]
    assert gateway.history.last_offset == second.offset


def test_broadcasts_go_on_while_a_long_replay_is_sent_and_each_message_arrives_once(serve):
    gateway = WebsocketClientGateway(history=2000)
    running = serve(chat_app(gateway))
    for index in range(1500):
        gateway.broadcast_text(lambda offset, index=index: json.dumps({"offset": offset, "text": f"old {index}"}))
    since = gateway.broadcast_text(lambda offset: json.dumps({"offset": offset, "text": "mark"})).offset
    for index in range(500):
        gateway.broadcast_text(lambda offset, index=index: json.dumps({"offset": offset, "text": f"kept {index}"}))

    def broadcast_live():
        for index in range(300):
            gateway.broadcast_text(lambda offset, index=index: json.dumps({"offset": offset, "text": f"live {index}"}))
            gevent.sleep(0)  # let the replay go out meanwhile

    client = running.connect(f"/?since={since}")
    broadcaster = gevent.spawn(broadcast_live)  # the replay is in the client's outbox, being written
    received = []
    while len([m for m in received if m.get("text", "").startswith("live")]) < 300:
        received.append(json.loads(client.recv()))
    broadcaster.get(timeout=10)
    without_greeting = [message for message in received if "id" not in message]
    expected = [f"kept {index}" for index in range(500)] + [f"live {index}" for index in range(300)]
    assert sorted(texts(without_greeting), key=expected.index) == expected  # each once
    assert texts(without_greeting[:500]) == expected[:500]  # the replay first, in order
    offsets = [int(message["offset"].split("-")[1]) for message in without_greeting]
    assert offsets == sorted(offsets)


def test_an_offset_older_than_the_history_is_a_gap_and_the_client_is_not_added(serve):
    gateway = WebsocketClientGateway(history=5)
    running = serve(chat_app(gateway))
    oldest = gateway.broadcast_text("first").offset
    for index in range(6):
        gateway.broadcast_text(f"later {index}")
    assert "too old" in gap_of(running, oldest)  # "later 0" is no longer kept
    assert gateway.get_clients() == {}
    resumable = gateway.history.after(oldest[: -len("-1")] + "-2")  # what came after "later 0" is all kept
    assert resumable == [f"later {index}" for index in range(1, 6)]


@pytest.mark.parametrize(
    ("since", "reason"),
    [
        ("abc", "malformed"),
        ("", "malformed"),
        ("12-", "malformed"),
        ("-3", "malformed"),
        ("1-2-3", "malformed"),
        ("\u0661-\u0662", "malformed"),  # digits, but not ASCII ones
        ("9" * 60 + "-1", "malformed"),
        ("1-1", "another room or an earlier run"),
    ],
)
def test_a_malformed_or_unknown_offset_is_a_gap_and_the_server_goes_on(serve, since, reason):
    gateway = WebsocketClientGateway(history=5)
    running = serve(chat_app(gateway))
    gateway.broadcast_text("something")
    assert reason in gap_of(running, since)
    client, _, _ = connect(running)  # the server still serves
    client.send("still here")
    assert json.loads(client.recv())["text"] == "still here"


def test_an_offset_from_the_future_is_a_gap():
    history = History(5)
    with pytest.raises(HistoryGap, match="no such message yet"):
        history.after(f"{history.epoch}-1")
    assert history.after(history.last_offset) == []
    with pytest.raises(HistoryGap, match="a string is expected"):
        history.after(12)


def test_a_room_without_history_behaves_as_before(serve):
    gateway = WebsocketClientGateway()
    running = serve(chat_app(gateway))
    assert gateway.history is None
    assert gateway.broadcast_text("plain").offset is None
    alice, replayed, _ = connect(running)
    assert replayed == []
    alice.send("hello")
    assert json.loads(alice.recv()) == {"offset": "", "text": "hello"}  # the callable got no offset
    assert "keeps no history" in gap_of(running, "1-1")
    assert "malformed" in gap_of(running, "nope")


def test_a_replay_larger_than_the_outbox_bound_meets_the_slow_consumer_policy(serve):
    gateway = WebsocketClientGateway(history=50, max_pending_messages=10)
    running = serve(chat_app(gateway))
    since = gateway.broadcast_text("start").offset
    for _ in range(50):
        gateway.broadcast_text("x" * 200_000)  # bigger than what the socket takes at once
    client = running.connect(f"/?since={since}", timeout=10)
    code = None
    while code is None:
        opcode, frame = client.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(frame.data[:2], "big")
    assert code == geventws.CloseCode.TRY_AGAIN_LATER
    assert gateway.slow_consumer_closes == 1


def test_memory_per_kept_message_is_the_payload_and_a_little():
    history = History(1000)
    payloads = [f"{index:08d}" + "x" * 92 for index in range(2000)]  # 100-character messages, made beforehand
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for payload in payloads:
        history.append(payload)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 1000 * 16  # the deque's slots only: the payloads are the application's objects
