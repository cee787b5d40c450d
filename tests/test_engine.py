"""The protocol engines without any socket: close codes, limits, negotiation, UTF-8, fragmentation, answers.

Both engines (the lean default and the wsproto reference) must give the same
events and queue the same answers for the same bytes; these tests run on each.
"""

import struct
import subprocess
import sys
import zlib

import pytest
from conftest import masked_frame

from geventws.protocol.deflate import Rfc7692CompressionFactory
from geventws.protocol.engine import EngineState, LeanEngine
from geventws.protocol.events import Close, Data, Ping, Pong, ProtocolFailure
from geventws.protocol.frames import JOIN_LIMIT, frame_header
from geventws.protocol.handshake import accept_key, is_valid_key, serialize_101, split_tokens
from geventws.protocol.limits import MessageLimits
from geventws.protocol.wsproto_engine import WsprotoEngine


def make(kind, limit=1 << 20, frame_limit=None, text_only=False, split=1024, compression=None, compressed_limit=None):
    limits = MessageLimits(limit, frame_limit or limit, text_only, compressed_limit)
    if kind == "lean":
        return LeanEngine(limits, split, compression.codec() if compression else None)
    extensions = [compression.wsproto_extension()] if compression else []
    return WsprotoEngine(limits, extensions, split)


@pytest.fixture(params=["lean", "wsproto"])
def kind(request):
    return request.param


def close_frames(engine):
    """(code, reason) of each close frame queued, (None, b"") for an empty one."""
    result = []
    for frame in engine.data_to_send():
        if frame[0] == 0x88:
            payload = frame[2:]
            result.append((struct.unpack("!H", payload[:2])[0], payload[2:]) if payload else (None, b""))
    return result


def failure_code(engine, data):
    events = engine.receive(data)
    assert isinstance(events[-1], ProtocolFailure), events
    code = events[-1].code
    assert close_frames(engine)[0][0] == code, "the failing close frame carries the failure's code"
    assert engine.failed and engine.state is EngineState.CLOSED
    return code


# ------------------------------------------------------------------ close codes


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
def test_invalid_close_codes_fail_with_1002(kind, code):
    assert failure_code(make(kind), masked_frame(0x8, struct.pack("!H", code))) == 1002


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 3000, 4999])
def test_valid_close_codes_are_echoed_and_close_the_engine(kind, code):
    engine = make(kind)
    events = engine.receive(masked_frame(0x8, struct.pack("!H", code) + b"bye"))
    assert events == [Close(code, "bye")]
    assert close_frames(engine) == [(code, b"")]
    assert engine.state is EngineState.CLOSED and not engine.failed


def test_empty_close_is_reported_as_1005_and_echoed_empty(kind):
    engine = make(kind)
    assert engine.receive(masked_frame(0x8, b"")) == [Close(1005, "")]
    assert close_frames(engine) == [(None, b"")]


def test_close_reason_that_is_not_utf8_fails_with_1007(kind):
    frame = masked_frame(0x8, struct.pack("!H", 1000) + b"\xce\xba\xed\xa0\x80")
    assert failure_code(make(kind), frame) == 1007


def test_close_with_a_one_byte_payload_fails_with_1002(kind):
    assert failure_code(make(kind), masked_frame(0x8, b"\x03")) == 1002


def test_our_close_then_the_peers_answer_closes_without_a_second_frame(kind):
    engine = make(kind)
    assert engine.send_close(1001, "going")
    assert close_frames(engine) == [(1001, b"going")]
    assert engine.state is EngineState.LOCAL_CLOSING
    assert not engine.send_close(1000), "only one close frame is ever sent"
    assert engine.receive(masked_frame(0x8, struct.pack("!H", 1001))) == [Close(1001, "")]
    assert engine.data_to_send() == []
    assert engine.state is EngineState.CLOSED


def test_nothing_can_be_sent_once_closing(kind):
    engine = make(kind)
    engine.send_close(1000)
    with pytest.raises(RuntimeError):
        engine.encode("late")
    with pytest.raises(RuntimeError):
        engine.send_ping(b"")


def test_a_long_close_reason_is_cut_at_123_bytes_on_a_character_boundary():
    engine = make("lean")
    engine.send_close(1000, "é" * 100)
    ((code, reason),) = close_frames(engine)
    assert code == 1000 and len(reason) == 122 and reason.decode() == "é" * 61


# ------------------------------------------------------------- protocol errors


@pytest.mark.parametrize(
    "frame",
    [
        masked_frame(0x3, b""),
        masked_frame(0xB, b""),
        masked_frame(0x1, b"x", rsv=0x40),
        masked_frame(0x1, b"x", rsv=0x20),
        masked_frame(0x9, b"x", fin=False),
        masked_frame(0x9, b"p" * 126),
        masked_frame(0x0, b"orphan"),
        masked_frame(0x1, b"a", fin=False) + masked_frame(0x1, b"b"),
        b"\x81\x05hello",
        b"\x82\x7e\x00\x05" + b"mask" + b"hello",
    ],
    ids=[
        "reserved-opcode",
        "reserved-control-opcode",
        "rsv1-without-compression",
        "rsv2",
        "fragmented-ping",
        "long-ping",
        "orphan-continuation",
        "new-message-mid-message",
        "unmasked",
        "length-not-minimal",
    ],
)
def test_protocol_errors_fail_with_1002_and_stop_parsing(kind, frame):
    engine = make(kind)
    assert failure_code(engine, frame) == 1002
    assert engine.receive(masked_frame(0x1, b"after")) == []


def test_a_deferred_failure_holds_its_close_frame_and_lets_answers_out_first(kind):
    limits = MessageLimits(1 << 20, 1 << 20)
    engine = LeanEngine(limits, defer_failure_close=True) if kind == "lean" else WsprotoEngine(
        limits, defer_failure_close=True
    )
    events = engine.receive(masked_frame(0x1, b"before") + masked_frame(0x1, b"bad", rsv=0x40))
    assert [type(event) for event in events] == [Data, ProtocolFailure]
    assert (events[1].code, engine.failed) == (1002, True)
    assert engine.data_to_send() == [], "the close frame is held"
    assert engine.state is EngineState.OPEN, "sending still works"
    buffers, frames = engine.encode("before")
    assert b"".join(buffers) == b"\x81\x06before"
    assert engine.receive(masked_frame(0x1, b"after")) == [], "nothing more is parsed"
    assert engine.send_close(1000, "bye"), "a close while the failure is held sends the failure's code"
    assert close_frames(engine) == [(1002, events[1].reason.encode())]
    assert engine.state is EngineState.CLOSED
    assert not engine.send_failure_close() and not engine.send_close(1000)


def test_without_deferral_a_failure_queues_its_close_frame_at_once(kind):
    engine = make(kind)
    engine.receive(masked_frame(0x1, b"before") + masked_frame(0x1, b"bad", rsv=0x40))
    assert [code for code, _ in close_frames(engine)] == [1002]
    assert not engine.send_failure_close()


def test_invalid_utf8_text_fails_with_1007_even_across_fragments(kind):
    engine = make(kind)
    events = engine.receive(masked_frame(0x1, b"\xce", fin=False))
    assert not any(isinstance(event, ProtocolFailure) for event in events)
    assert failure_code(engine, masked_frame(0x0, b"\x41")) == 1007


def test_a_character_split_across_fragments_is_valid(kind):
    engine = make(kind)
    events = engine.receive(masked_frame(0x1, b"\xce", fin=False) + masked_frame(0x0, b"\xba"))
    assert "".join(event.payload for event in events if isinstance(event, Data)) == "κ"


# ----------------------------------------------------------------------- limits


def test_a_frame_header_over_the_limit_fails_before_any_payload(kind):
    engine = make(kind, limit=1000)
    assert failure_code(engine, struct.pack("!BBQ", 0x82, 0xFF, 2**62) + b"mask") == 1009


def test_a_fragmented_message_over_the_limit_fails_before_it_completes(kind):
    engine = make(kind, limit=100_000, frame_limit=60_000)
    engine.receive(masked_frame(0x2, b"a" * 60_000, fin=False))
    assert failure_code(engine, masked_frame(0x0, b"b" * 50_000, fin=False)) == 1009


def test_a_frame_over_the_frame_limit_fails_with_1009(kind):
    engine = make(kind, limit=100_000, frame_limit=60_000)
    assert failure_code(engine, masked_frame(0x2, b"a" * 60_001)) == 1009


def test_text_only_refuses_binary_with_1003(kind):
    engine = make(kind, text_only=True)
    assert engine.receive(masked_frame(0x1, b"fine"))[0].payload == "fine"
    assert failure_code(engine, masked_frame(0x2, b"\x00")) == 1003


def test_a_compression_bomb_fails_with_1009(kind):
    _, negotiated = Rfc7692CompressionFactory().negotiate("permessage-deflate")
    engine = make(kind, limit=1 << 20, compression=negotiated)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = compressor.compress(bytes(64 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert failure_code(engine, masked_frame(0x2, bomb[:-4], rsv=0x40)) == 1009


def deflated(data):
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def failure_reason(engine, data):
    events = engine.receive(data)
    assert isinstance(events[-1], ProtocolFailure), events
    return events[-1].code, events[-1].reason


def test_a_compressed_message_has_its_own_limit_and_an_uncompressed_one_the_message_limit(kind):
    _, negotiated = Rfc7692CompressionFactory().negotiate("permessage-deflate")
    engine = make(kind, limit=100_000, compressed_limit=10_000, compression=negotiated)
    assert engine.receive(masked_frame(0x2, b"u" * 50_000))[0].payload == b"u" * 50_000
    # A compressed message within its limit, in fragments: only the first frame carries RSV1.
    payload = deflated(b"c" * 9_000)
    fragments = [masked_frame(0x2, payload[:3], fin=False, rsv=0x40), masked_frame(0x0, payload[3:])]
    events = [event for fragment in fragments for event in engine.receive(fragment)]
    assert b"".join(event.payload for event in events) == b"c" * 9_000
    assert failure_reason(engine, masked_frame(0x2, deflated(b"c" * 10_001), rsv=0x40)) == (
        1009,
        "Message inflates beyond the limit of 10000 bytes (compressed_message_size_limit)",
    )


@pytest.mark.parametrize("compressed_limit", [None, 200_000])
def test_a_compressed_message_never_gets_more_than_the_message_limit(kind, compressed_limit):
    _, negotiated = Rfc7692CompressionFactory().negotiate("permessage-deflate")
    engine = make(kind, limit=100_000, compressed_limit=compressed_limit, compression=negotiated)
    assert failure_reason(engine, masked_frame(0x1, deflated(b"c" * 100_001), rsv=0x40)) == (
        1009,
        "Message inflates beyond the limit of 100000 bytes (message_size_limit)",
    )


def test_each_1009_names_the_setting_that_refused(kind):
    engine = make(kind, limit=100_000, frame_limit=60_000)
    assert failure_reason(engine, masked_frame(0x2, b"a" * 60_001)) == (
        1009,
        "Frame of 60001 bytes exceeds the limit of 60000 bytes (frame_size_limit)",
    )
    engine = make(kind, limit=100_000, frame_limit=60_000)
    engine.receive(masked_frame(0x2, b"a" * 60_000, fin=False))
    assert failure_reason(engine, masked_frame(0x0, b"b" * 50_000, fin=False)) == (
        1009,
        "Message of 110000+ bytes exceeds the limit of 100000 bytes (message_size_limit)",
    )


# --------------------------------------------------------------- control frames


def test_a_ping_is_answered_with_a_pong_carrying_its_payload(kind):
    engine = make(kind)
    assert engine.receive(masked_frame(0x9, b"hello")) == [Ping(b"hello")]
    assert engine.data_to_send() == [b"\x8a\x05hello"]
    assert engine.receive(masked_frame(0xA, b"x")) == [Pong(b"x")]
    assert engine.data_to_send() == []


def test_pings_between_fragments_are_answered_at_once(kind):
    engine = make(kind)
    events = engine.receive(masked_frame(0x1, b"ab", fin=False) + masked_frame(0x9, b"") + masked_frame(0x0, b"c"))
    assert [type(event) for event in events] == [Data, Ping, Data]
    assert engine.data_to_send() == [b"\x8a\x00"]


def test_a_ping_after_our_close_gets_no_pong(kind):
    engine = make(kind)
    engine.send_close(1000)
    engine.data_to_send()
    engine.receive(masked_frame(0x9, b""))
    assert engine.data_to_send() == []


def test_send_ping_queues_a_ping(kind):
    engine = make(kind)
    engine.send_ping(b"12345678")
    assert engine.data_to_send() == [b"\x89\x0812345678"]


# -------------------------------------------------------------------- encoding


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_length_encoding_boundaries(size):
    engine = LeanEngine(MessageLimits(1 << 20, 1 << 20), 1 << 20)
    buffers, frames = engine.encode(bytes(size))
    wire = b"".join(buffers)
    assert frames == 1
    header = {0: 2, 125: 2, 126: 4, 65535: 4, 65536: 10}[size]
    assert len(wire) == header + size and wire[0] == 0x82


@pytest.mark.parametrize("fin", [True, False])
def test_a_large_frame_goes_out_as_its_header_and_its_payload_uncopied(fin):
    engine = LeanEngine(MessageLimits(1 << 20, 1 << 20), 1 << 20)
    small, large = bytes(JOIN_LIMIT), bytes(JOIN_LIMIT + 1)
    assert engine.encode(small, fin)[0] == [frame_header(0x2, JOIN_LIMIT, fin) + small]
    engine.encode(b"", True)  # end a streamed message
    buffers, frames = engine.encode(large, fin)
    assert frames == 1 and len(buffers) == 2
    assert buffers[0] == frame_header(0x2, JOIN_LIMIT + 1, fin) and buffers[1] is large


def test_frames_are_split_by_bytes_never_over_the_threshold():
    engine = LeanEngine(MessageLimits(1 << 20, 1 << 20), 1000)
    buffers, frames = engine.encode("€" * 1000)  # 3000 bytes of UTF-8
    assert frames == 3
    payloads = [bytes(buffers[index + 1]) for index in range(0, len(buffers), 2)]
    assert [len(payload) for payload in payloads] == [1000, 1000, 1000]
    assert b"".join(payloads).decode() == "€" * 1000
    assert [buffers[index][0] for index in range(0, len(buffers), 2)] == [0x01, 0x00, 0x80]


def test_a_streamed_message_carries_fin_on_its_last_chunk_only():
    engine = LeanEngine(MessageLimits(1 << 20, 1 << 20), 4)
    first, _ = engine.encode("abcdef", fin=False)
    last, _ = engine.encode(b"gh", fin=True)
    headers = [bytes(first[0])[0], bytes(first[2])[0], bytes(last[0])[0]]
    assert headers == [0x01, 0x00, 0x80]  # text, continuation, continuation + FIN
    again, _ = engine.encode(b"new")
    assert again[0][0] == 0x82, "after FIN a new message starts"


def test_what_the_engine_sends_parses_back_through_the_other_engine(kind):
    sender = make("lean", split=1000)
    receiver = make(kind)
    buffers, _ = sender.encode("ünïcödé " * 500)
    wire = b"".join(buffers)
    masked, pos = b"", 0
    while pos < len(wire):  # mask each server frame with a zero key so a server-side parser takes it
        length, start = wire[pos + 1] & 0x7F, pos + 2
        if length == 126:
            length, start = struct.unpack("!H", wire[pos + 2 : pos + 4])[0], pos + 4
        masked += bytes([wire[pos], 0x80 | wire[pos + 1]]) + wire[pos + 2 : start] + b"\0\0\0\0"
        masked += wire[start : start + length]
        pos = start + length
    text = "".join(event.payload for event in receiver.receive(masked) if isinstance(event, Data))
    assert text == "ünïcödé " * 500


# ----------------------------------------------------------------- negotiation


@pytest.mark.parametrize(
    ("offer", "answer"),
    [
        ("permessage-deflate", "permessage-deflate; server_max_window_bits=12"),
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
        ),
        (
            "permessage-deflate; client_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=10",
        ),
        ("permessage-deflate; server_max_window_bits=10", "permessage-deflate; server_max_window_bits=10"),
        ("permessage-deflate; server_max_window_bits=15", "permessage-deflate; server_max_window_bits=12"),
        (
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=12",
        ),
        (
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=12",
        ),
        # Invalid or unsatisfiable offers are declined; the next one is tried.
        (
            "permessage-deflate; server_max_window_bits=8, permessage-deflate",
            "permessage-deflate; server_max_window_bits=12",
        ),
        ("permessage-deflate; server_max_window_bits=16", None),
        ("permessage-deflate; server_max_window_bits", None),
        ("permessage-deflate; client_max_window_bits=abc", None),
        ("permessage-deflate; server_no_context_takeover=1", None),
        ("permessage-deflate; unknown_param", None),
        ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
        ("x-webkit-deflate-frame", None),
        ("", None),
        (None, None),
    ],
)
def test_negotiation_table(offer, answer):
    negotiated = Rfc7692CompressionFactory().negotiate(offer)
    assert (negotiated[0] if negotiated else None) == answer


def test_server_options_shape_the_answer():
    factory = Rfc7692CompressionFactory(
        server_max_window_bits=15,
        client_max_window_bits=15,
        server_no_context_takeover=True,
        client_no_context_takeover=True,
    )
    header, _ = factory.negotiate("permessage-deflate; client_max_window_bits")
    assert header == "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


@pytest.mark.parametrize(
    "options", [{"server_max_window_bits": 8}, {"client_max_window_bits": 16}, {"memory_level": 0}]
)
def test_invalid_compression_options_are_refused(options):
    with pytest.raises(ValueError):
        Rfc7692CompressionFactory(**options)


# ------------------------------------------------------------------- handshake


def test_accept_key_matches_rfc_6455_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize(
    ("key", "valid"),
    [("dGhlIHNhbXBsZSBub25jZQ==", True), ("", False), (None, False), ("c2hvcnQ=", False), ("***", False)],
)
def test_key_validation(key, valid):
    assert is_valid_key(key) is valid


def test_header_tokens_and_the_101():
    assert split_tokens(" Upgrade , keep-alive,, ") == ["Upgrade", "keep-alive"]
    assert split_tokens(None) == []
    wire = serialize_101([("Upgrade", "websocket"), ("Content-Type", "text/plain"), ("Connection", "Upgrade")])
    assert wire == b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


# ---------------------------------------------------------------------- layering


def test_the_protocol_package_imports_without_gevent_or_werkzeug():
    """The sans-I/O core stands alone: in a fresh interpreter with gevent and werkzeug blocked, it imports and works."""
    script = (
        "import sys\n"
        "for name in ('gevent', 'werkzeug', 'greenlet'):\n"
        "    sys.modules[name] = None\n"
        "from geventws.protocol.engine import LeanEngine\n"
        "from geventws.protocol.limits import MessageLimits\n"
        "import geventws.protocol.deflate, geventws.protocol.handshake, geventws.protocol.wsproto_engine\n"
        "engine = LeanEngine(MessageLimits(100, 100))\n"
        "engine.receive(bytes([0x89, 0x80, 0, 0, 0, 0]))\n"
        "assert engine.data_to_send() == [bytes([0x8a, 0])]\n"
        "assert not [n for n in sys.modules if n.split('.')[0] in ('gevent', 'werkzeug') and sys.modules[n]]\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
