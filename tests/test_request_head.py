"""The request head parser: the plain-head fast path against h11, head by head.

``_parse_plain`` may decline any head (h11 then decides), but a head it accepts
must be one h11 accepts, parsed into the same :class:`RequestHead`.  These
tests need no server: they call the parser directly, on heads that are mostly
plausible (so the fast path is exercised) and on mutations of them.
"""

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_request_head_fuzz import request_heads

from geventws.http.request_head import BadRequestHead, _parse_plain, _parse_with_h11, parse_request_head

HANDSHAKE = (
    b"GET /chat?room=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
BROWSER = (
    b"GET /ws HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\nPragma: no-cache\r\n"
    b"Cache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36\r\n"
    b"Upgrade: websocket\r\nOrigin: https://example.com\r\nSec-WebSocket-Version: 13\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n"
    b"Cookie: session=abc; theme=dark\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
)
PLAIN_HEADS = [
    HANDSHAKE,
    BROWSER,
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"HEAD /index.html HTTP/1.0\r\nConnection: keep-alive\r\nHost: x\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET http://x/ws HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nX-Spaces:  \t a  b \t \r\nX-Latin: caf\xe9\r\n\r\n",
    b"get /%00 HTTP/1.1\r\nhost: x\r\nCONNECTION: Keep-Alive, Upgrade\r\nconnection: close\r\n\r\n",
]


def h11_verdict(head: bytes) -> object:
    """What h11 makes of ``head``: the parsed head, or the status it refuses it with."""
    try:
        return _parse_with_h11(head)
    except BadRequestHead as error:
        return error.status


@pytest.mark.parametrize("head", PLAIN_HEADS, ids=range(len(PLAIN_HEADS)))
def test_plain_heads_take_the_fast_path_and_parse_as_h11_parses_them(head):
    parsed = _parse_plain(head)
    assert parsed is not None, "a plain head must not need h11"
    assert parsed == _parse_with_h11(head)


def test_header_values_keep_their_inner_whitespace_and_lose_the_outer():
    parsed = _parse_plain(PLAIN_HEADS[6])
    assert parsed is not None
    assert parsed.headers[1:] == [("X-Empty", ""), ("X-Spaces", "a  b"), ("X-Latin", "caf\xe9")]


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: x\r\nhost: x\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"GET / HTTP/1.1\r\nHost: x\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n",  # obs-fold: h11 joins the lines
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n",
    ],
)
def test_other_heads_are_left_to_h11(head):
    assert _parse_plain(head) is None
    try:
        expected = _parse_with_h11(head)
    except BadRequestHead as error:
        with pytest.raises(BadRequestHead) as raised:
            parse_request_head(head)
        assert raised.value.status == error.status
    else:
        assert parse_request_head(head) == expected


def mutations(head: bytes) -> st.SearchStrategy[bytes]:
    """``head`` with a few bytes replaced, inserted or deleted, favouring the bytes parsers disagree on."""
    tricky = st.sampled_from(
        [b"\x00", b"\r", b"\n", b"\t", b" ", b":", b",", b"\x7f", b"\x80", b"\xff", b"\x0b", b"\x01"]
    )
    piece = st.one_of(tricky, tricky, st.binary(min_size=1, max_size=3))

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        data = bytearray(head)
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(data) - 1))
            action = draw(st.sampled_from(["replace", "insert", "delete"]))
            if action == "delete":
                del data[at]
            else:
                data[at : at + (action == "replace")] = draw(piece)
        return bytes(data)

    return mutated()


def assert_same_as_h11(head: bytes) -> None:
    plain = _parse_plain(head)
    verdict = h11_verdict(head)
    event("fast path" if plain is not None else f"h11: {'parsed' if not isinstance(verdict, int) else verdict}")
    if plain is not None:
        assert plain == verdict, head


def joined(alphabet: bytes, min_size: int, max_size: int) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from([bytes([b]) for b in alphabet]), min_size=min_size, max_size=max_size).map(b"".join)


TOKEN_CHARS = b"-!#$%&'*+.^_`|~09azAZ"
VALUE_BYTES = b'ab09 \t:,;="\x01\x7f\x80\xff'


@st.composite
def well_formed_heads(draw: st.DrawFn) -> bytes:
    """Heads built from the grammar's pieces, mostly valid, with the rules on Host and framing in play."""
    token = joined(TOKEN_CHARS, 1, 8)
    name = st.one_of(st.sampled_from([b"Host", b"host", b"Connection", b"Upgrade", b"Content-Length"]), token)
    value = st.one_of(
        st.sampled_from([b"close", b"keep-alive", b"Upgrade, close", b"5", b"chunked", b""]), joined(VALUE_BYTES, 0, 12)
    )
    separator = st.sampled_from([b":", b": ", b":\t", b":  ", b" :"])
    fields = draw(st.lists(st.tuples(name, separator, value, st.sampled_from([b"", b" ", b"\t"])), max_size=6))
    if draw(st.booleans()):
        fields.insert(0, (b"Host", b": ", b"x", b""))
    line = draw(token) + b" " + draw(joined(b"/az%?=*\x21\x7e", 1, 8)) + b" "
    line += draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/1.1"]))
    end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"]))
    return line + end + b"".join(n + sep + v + tail + end for n, sep, v, tail in fields) + end


FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(head=well_formed_heads())
def test_a_well_formed_head_the_fast_path_accepts_is_parsed_as_h11_parses_it(head):
    assert_same_as_h11(head)


@FUZZ
@given(head=request_heads())
def test_a_generated_head_the_fast_path_accepts_is_parsed_as_h11_parses_it(head):
    assert_same_as_h11(head)


@FUZZ
@given(head=st.one_of(mutations(HANDSHAKE), mutations(BROWSER), mutations(PLAIN_HEADS[6])))
def test_a_mutated_head_the_fast_path_accepts_is_parsed_as_h11_parses_it(head):
    assert_same_as_h11(head)


@FUZZ
@given(head=st.binary(max_size=64).map(lambda junk: b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + junk + b"\r\n\r\n"))
def test_any_header_value_is_accepted_exactly_when_h11_accepts_it(head):
    assert_same_as_h11(head)


def test_values_clients_send_alike_are_shared_and_the_sharing_is_bounded(monkeypatch):
    from geventws.http import request_head

    monkeypatch.setattr(request_head, "_shared_values", {})
    monkeypatch.setattr(request_head, "_SHARED_VALUES_LIMIT", 3)

    def head(host: str, key: str, agent: str = "ua") -> dict[str, str]:
        data = f"GET / HTTP/1.1\r\nHost: {host}\r\nSec-WebSocket-Key: {key}\r\nUser-Agent: {agent}\r\n\r\n"
        return dict(parse_request_head(data.encode()).headers)

    first, second = head("example.com", "a2V5MQ=="), head("example.com", "a2V5Mg==")
    assert first["Host"] == second["Host"] == "example.com"
    assert first["Host"] is second["Host"]  # one string for both environs
    assert first["Sec-WebSocket-Key"] == "a2V5MQ==" and second["Sec-WebSocket-Key"] == "a2V5Mg=="
    assert b"a2V5MQ==" not in request_head._shared_values  # a per-connection field is never kept
    long_agent = "x" * (request_head._SHARED_VALUE_SIZE + 1)
    assert head("example.com", "k", long_agent)["User-Agent"] == long_agent
    assert long_agent.encode() not in request_head._shared_values
    for index in range(10):  # distinct hosts: a scan or a hostile client
        assert head(f"h{index}.example", "k")["Host"] == f"h{index}.example"
    assert len(request_head._shared_values) == 3
