"""The lean engine against wsproto's: the same bytes must give the same messages, pings, closes and failures."""

import os
import struct
import tracemalloc
import zlib

import pytest
from conftest import masked_frame
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import geventws.protocol.engine
from geventws.protocol.engine import LeanEngine
from geventws.protocol.events import Close, Data, Ping, Pong, ProtocolFailure
from geventws.protocol.frames import _single_frame_python
from geventws.protocol.limits import MessageLimits
from geventws.protocol.masking import HAS_SPEEDUPS, _apply_mask_python, apply_mask
from geventws.protocol.reader import WHOLE_FRAME_LIMIT, FrameReader, PythonFrameReader
from geventws.protocol.speedups import speedups
from geventws.protocol.wsproto_engine import WsprotoEngine


@pytest.fixture(params=["speedups", "pure-python"])
def reader(request, monkeypatch):
    """Run the engine with the C reader and with its pure Python fallback (and its pure Python unmasking)."""
    if request.param == "speedups" and not HAS_SPEEDUPS:
        pytest.skip("C speedups not built")
    if request.param == "pure-python":
        monkeypatch.setattr(geventws.protocol.engine, "FrameReader", PythonFrameReader)
        monkeypatch.setattr(geventws.protocol.reader, "apply_mask", _apply_mask_python)
    return request.param


def answers(protocol):
    """What the engine queued in answer: (opcode, close code) of each control frame."""
    sent = []
    for frame in protocol.data_to_send():
        opcode, length = frame[0] & 0x0F, frame[1] & 0x7F
        code = struct.unpack("!H", frame[2:4])[0] if opcode == 0x8 and length >= 2 else None
        sent.append(("sent", opcode, code if opcode == 0x8 else bytes(frame[2:])))
    return sent


def summarize(protocol, chunks):
    """Whole messages, control events, the answers queued and the failure code, whatever the chunking of the input."""
    summary, parts, queued = [], [], []
    for chunk in chunks:
        events = protocol.receive(chunk)
        queued += answers(protocol)
        for event in events:
            if isinstance(event, Data):
                parts.append(event.payload)
                if event.message_finished:
                    joined = "".join(parts) if not event.is_binary else b"".join(parts)
                    summary.append(("message", event.is_binary, joined))
                    parts = []
            elif isinstance(event, (Ping, Pong)):
                summary.append((type(event).__name__, bytes(event.payload)))
            elif isinstance(event, Close):
                summary.append(("close", event.code, event.reason))
                return summary + queued
            elif isinstance(event, ProtocolFailure):
                summary.append(("failure", event.code))
                return summary + queued
    return summary + queued


def engines(limit=4096):
    return LeanEngine(MessageLimits(limit, limit), 1024), WsprotoEngine(MessageLimits(limit, limit))


def split(data, cuts):
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return [piece for piece in pieces if piece]


frame = st.builds(
    masked_frame,
    opcode=st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xA, 0xB]),
    payload=st.one_of(
        st.binary(max_size=200),
        st.text(max_size=60).map(str.encode),
        st.sampled_from([struct.pack("!H", 1000) + b"bye", struct.pack("!H", 999), b"\x03", b"\xff\xfe"]),
    ),
    fin=st.booleans(),
    rsv=st.sampled_from([0, 0, 0, 0x40]),
)


@settings(
    max_examples=int(os.environ.get("GEVENTWS_DIFF_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(frames=st.lists(frame, max_size=8), cuts=st.lists(st.integers(0, 10_000), max_size=6))
def test_both_engines_agree_on_frame_sequences(reader, frames, cuts):
    data = b"".join(frames)
    fast, reference = engines()
    assert summarize(fast, split(data, cuts)) == summarize(reference, [data])


@settings(
    max_examples=int(os.environ.get("GEVENTWS_DIFF_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 10_000), max_size=4))
def test_both_engines_agree_on_arbitrary_bytes(reader, data, cuts):
    fast, reference = engines()
    ours, theirs = summarize(fast, split(data, cuts)), summarize(reference, [data])
    if ours != theirs:
        # On input that stops mid-frame one engine may fail before the other
        # has read enough to: everything before must agree, and so must the code.
        # The one that failed answered with a close frame carrying the failure's code.
        shorter, longer = sorted((ours, theirs), key=len)
        failure = next(index for index, entry in enumerate(longer) if entry[0] == "failure")
        code = longer[failure][1]
        assert longer[-1] == ("sent", 0x8, code), (ours, theirs)
        assert longer[:failure] + longer[failure + 1 : -1] == shorter, (ours, theirs)


def test_large_frame_is_delivered_as_it_arrives_without_buffering_it_whole(reader):
    protocol = LeanEngine(MessageLimits(10 * 2**20, 10 * 2**20), 32768)
    payload = os.urandom(3 * 2**20)
    wire = masked_frame(0x2, payload)
    received, sizes = [], []
    for start in range(0, len(wire), 65536):
        for event in protocol.receive(wire[start : start + 65536]):
            received.append(event.payload)
            sizes.append(len(event.payload))
    assert b"".join(received) == payload
    assert max(sizes) <= 65536
    assert len(protocol._reader.pending) == 0


def test_a_frame_up_to_the_whole_frame_limit_is_delivered_whole_however_it_arrives(reader):
    protocol = LeanEngine(MessageLimits(10 * 2**20, 10 * 2**20), 32768)
    payload = os.urandom(WHOLE_FRAME_LIMIT)
    wire = masked_frame(0x2, payload) + masked_frame(0x1, "é".encode() * 1000)
    events = []
    for start in range(0, len(wire), 7777):
        events += protocol.receive(wire[start : start + 7777])
    assert events[0] == Data(payload, True, True, True)
    assert "".join(event.payload for event in events[1:]) == "é" * 1000  # text is decoded as it arrives


def test_a_header_announcing_a_large_frame_reserves_nothing_before_its_payload(reader):
    protocol = LeanEngine(MessageLimits(10 * 2**20, 10 * 2**20), 32768)
    wire = masked_frame(0x2, bytes(WHOLE_FRAME_LIMIT))
    assert tracemalloc_peak(lambda: protocol.receive(wire[:14])) < 16384
    assert tracemalloc_peak(lambda: protocol.receive(wire[14:1014])) < 16384  # a few times what arrived, at most
    assert protocol.receive(wire[1014:]) == [Data(bytes(WHOLE_FRAME_LIMIT), True, True, True)]


def tracemalloc_peak(action):
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


client_bytes = st.one_of(
    st.lists(frame, max_size=8).map(b"".join),
    st.binary(max_size=600),
    st.lists(st.one_of(frame, st.binary(max_size=20)), max_size=8).map(b"".join),
)


@pytest.mark.skipif(not HAS_SPEEDUPS, reason="C speedups not built")
@settings(max_examples=int(os.environ.get("GEVENTWS_DIFF_EXAMPLES", "400")) * 2, deadline=None)
@given(
    data=client_bytes,
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
    limit=st.sampled_from([0, 3, 100, 4096]),
    text_only=st.booleans(),
    compression=st.booleans(),
    whole=st.sampled_from([0, 5, 64, 1 << 20]),
)
def test_the_c_reader_matches_the_python_reader_event_for_event(data, cuts, limit, text_only, compression, whole):
    """Not only the same messages: the same events, chunk by chunk, the same answers and what is kept."""
    readers = [kind(limit, limit + 50, text_only, compression, whole) for kind in (FrameReader, PythonFrameReader)]
    for chunk in split(data, cuts):
        results = []
        for reader in readers:
            events = []
            attention = reader.feed(memoryview(bytearray(chunk)), events)
            results.append((attention, events, reader.pending))
        assert results[0] == results[1]


def test_header_over_the_limit_fails_before_any_payload(reader):
    protocol = LeanEngine(MessageLimits(1000, 1000), 1024)
    events = protocol.receive(struct.pack("!BBQ", 0x82, 0xFF, 2**62) + b"mask")
    assert events == [
        ProtocolFailure(1009, "Frame of 4611686018427387904 bytes exceeds the limit of 1000 bytes (frame_size_limit)")
    ]


def test_outgoing_frames_parse_back(reader):
    protocol = LeanEngine(MessageLimits(2**20, 2**20), 1000)
    parts, count = protocol.encode("é" * 1500)
    assert count == 3  # 3000 bytes of UTF-8 cut at 1000 bytes: frames are split by bytes, not characters
    wire = b"".join(parts)
    # Server frames are unmasked: mask them with a zero key so a server-side parser accepts them.
    frames, pos = [], 0
    while pos < len(wire):
        length = wire[pos + 1] & 0x7F
        start = pos + 2 + (2 if length == 126 else 0)
        if length == 126:
            length = struct.unpack("!H", wire[pos + 2 : pos + 4])[0]
        frames.append(
            bytes([wire[pos], 0x80 | wire[pos + 1]])
            + wire[pos + 2 : start]
            + b"\0\0\0\0"
            + wire[start : start + length]
        )
        pos = start + length
    assert len(frames) == 3
    echo = LeanEngine(MessageLimits(2**20, 2**20), 1000)
    assert summarize(echo, frames) == [("message", False, "é" * 1500)]


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), mask=st.binary(min_size=4, max_size=4))
def test_pure_python_unmasking_matches_the_c_loop(data, mask):
    expected = bytes(byte ^ mask[index % 4] for index, byte in enumerate(data))
    assert _apply_mask_python(data, mask) == expected
    assert apply_mask(data, mask) == expected


@pytest.mark.skipif(not HAS_SPEEDUPS, reason="C speedups not built")
@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(st.text(max_size=300), st.binary(max_size=70_000), st.binary(max_size=300).map(bytearray)),
    limit=st.sampled_from([0, 1, 125, 126, 300, 65535, 65536, 1 << 20]),
)
def test_the_c_single_frame_matches_the_python_one(data, limit):
    expected = _single_frame_python(data, limit)
    assert speedups.single_frame(data, limit) == expected
    if expected is not None:
        assert summarize(LeanEngine(MessageLimits(1 << 20, 1 << 20)), [masked(expected)]) == [
            ("message", not isinstance(data, str), data if isinstance(data, str) else bytes(data))
        ]


def masked(wire):
    """A server frame masked with a zero key, so that a server-side parser takes it."""
    length, start = wire[1] & 0x7F, 2
    start += {126: 2, 127: 8}.get(length, 0)
    return bytes([wire[0], 0x80 | wire[1]]) + wire[2:start] + b"\0\0\0\0" + wire[start:]


def deflate_engines(limit=1 << 16, **options):
    from geventws.protocol.deflate import DeflateParameters, NegotiatedDeflate

    agreed = DeflateParameters(15, 15, options.get("server_nct", False), options.get("client_nct", False))
    negotiated = NegotiatedDeflate(agreed, 6, 8, 0, True)
    fast = LeanEngine(MessageLimits(limit, limit), 1024, negotiated.codec())
    reference = WsprotoEngine(MessageLimits(limit, limit), [negotiated.wsproto_extension()])
    return fast, reference


def compressed_frames(messages, context_takeover, pieces):
    """Client frames of compressed messages, each split into ``pieces`` fragments."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    wire = []
    for data in messages:
        payload = data.encode() if isinstance(data, str) else data
        if not context_takeover:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
        size = max(1, -(-len(body) // pieces))
        parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
        for index, part in enumerate(parts):
            opcode = (0x1 if isinstance(data, str) else 0x2) if index == 0 else 0x0
            wire.append(masked_frame(opcode, part, fin=index == len(parts) - 1, rsv=0x40 if index == 0 else 0))
    return b"".join(wire)


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(st.one_of(st.text(max_size=2000), st.binary(max_size=2000)), min_size=1, max_size=5),
    takeover=st.booleans(),
    pieces=st.integers(1, 3),
    cuts=st.lists(st.integers(0, 10_000), max_size=4),
)
def test_both_engines_agree_on_compressed_messages(messages, takeover, pieces, cuts):
    data = compressed_frames(messages, takeover, pieces)
    fast, reference = deflate_engines(client_nct=not takeover)
    ours = summarize(fast, split(data, cuts))
    assert ours == summarize(reference, [data])
    assert [entry[2] for entry in ours if entry[0] == "message"] == messages


def test_compressed_bomb_is_refused_by_the_lean_engine():
    fast, _ = deflate_engines(limit=1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = compressor.compress(bytes(64 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    events = fast.receive(masked_frame(0x2, bomb[:-4], rsv=0x40))
    assert isinstance(events[-1], ProtocolFailure) and events[-1].code == 1009


def test_compressed_frames_from_the_lean_engine_inflate_back():
    fast, _ = deflate_engines()
    text = "compress me " * 200
    parts, _ = fast.encode(text)
    wire = b"".join(parts)
    assert wire[0] == 0xC1  # FIN, RSV1, text
    length = wire[1] & 0x7F
    start = 2 + (2 if length == 126 else 0)
    payload = wire[start:]
    assert zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff").decode() == text


@pytest.mark.skipif(not HAS_SPEEDUPS, reason="C speedups not built")
def test_the_c_functions_refuse_wrong_arguments_with_a_type_error():
    reader = speedups.FrameReader(100, 150, False, False)
    calls = {
        "feed() takes exactly 2 arguments (1 given)": lambda: reader.feed(b"x"),
        "feed() argument 2 must be list, not tuple": lambda: reader.feed(b"x", ()),
        "a bytes-like object is required, not 'str'": lambda: reader.feed("x", []),
        "single_frame() takes exactly 2 arguments (3 given)": lambda: speedups.single_frame("x", 1, 2),
        "an integer is required": lambda: speedups.single_frame("x", "1"),
        "send_each() argument 2 must be list, not tuple": lambda: speedups.send_each(b"x", ()),
        "apply_mask() takes exactly 2 arguments (0 given)": lambda: speedups.apply_mask(),
    }
    for message, call in calls.items():
        with pytest.raises(TypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
            call()
    events: list = []
    reader.feed(memoryview(bytearray(b"\x81\x80\x00\x00\x00\x00")), events)  # right arguments: an empty text message
    assert len(events) == 1 and events[0].message_finished and events[0].payload == ""
    assert speedups.apply_mask(b"\x01\x02", b"\x01\x01\x01\x01") == b"\x00\x03"
