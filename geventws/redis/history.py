"""Room history in Redis: one stream per channel, shared by every process, so a client may come back anywhere.

A broadcast to a gateway with ``history`` runs one Lua script: ``XADD`` to
the stream ``geventws:{<channel>}:history`` (trimmed with ``MAXLEN ~``: at
least ``history`` entries, at most about 100 more, one stream node; Redis
trims whole nodes, so trimming costs no more than the append) and
``PUBLISH`` of the message with its entry id as offset.  Both happen in one
step of Redis, so the stream's order is the order every subscriber receives
the messages in, in every process; the key's hash tag puts the stream on
the channel's shard in a cluster.

A function of the offset (``broadcast_text(lambda offset: ...)``) is called
with a mark, a random token of this process; the script replaces the mark
in the published message by the id, and a replay replaces it in the stored
entry.  So the function must put the offset into its message as it is.

The sending process delivers its own message to its clients when it comes
back from Redis, like every other process: then all clients, everywhere, see
a room's messages in the order of their offsets.  While Redis is away a
broadcast is delivered locally only, with no offset (the function gets
``""``), and is not kept.

Joining with ``since``: live messages for the room are buffered for the
joining client while the stream is read from ``since`` (an ``XRANGE``), then
the client gets the entries after ``since`` and the buffered messages whose
offsets come later, in one step without a greenlet switch, and from then on
the live stream: no gap, nothing twice.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import TYPE_CHECKING, Any

import redis as redis_py

from ..gateway import SendResult
from ..history import BinaryPayload, HistoryGap, TextPayload, parse_offset
from .connection import SOCKET_TIMEOUT
from .envelope import Envelope, decode_envelope, encode_envelope
from .keys import room_key

if TYPE_CHECKING:
    from ..connection.client import WebsocketClient
    from .gateway import RedisGateway
    from .subscriber import SharedSubscriber

# KEYS: the stream, the channel; ARGV: the trim length, the header without its closing brace,
# the payload, the offset's mark in it ("" when there is none).
SCRIPT = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'h', ARGV[2], 'p', ARGV[3], 'm', ARGV[4])
local payload = ARGV[3]
if ARGV[4] ~= '' then payload = (string.gsub(payload, ARGV[4], id)) end
redis.call('PUBLISH', KEYS[2], ARGV[2] .. ',"offset":"' .. id .. '"}\\n' .. payload)
return id
"""

#: The same on a cluster: sharded pub/sub (the stream and the channel share a slot).
SHARDED_SCRIPT = SCRIPT.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")

#: Entries read per ``XRANGE`` of a replay.
REPLAY_PAGE = 500


def history_key(channel: str) -> str:
    """The stream of a channel's history; the hash tag keeps it on the channel's shard."""
    return room_key(channel, "history")


def _rebuild(entry_id: bytes, fields: dict[bytes, bytes]) -> Envelope:
    """A stored entry as the envelope that was published for it."""
    payload = fields[b"p"]
    mark = fields.get(b"m", b"")
    if mark:
        payload = payload.replace(mark, entry_id)
    return decode_envelope(fields[b"h"] + b',"offset":"' + entry_id + b'"}\n' + payload)


class PendingBroadcast(SendResult):
    """The result of a broadcast with history: done once this process has delivered it (``offset`` set then)."""

    def __init__(self) -> None:
        super().__init__(1)

    def adopt(self, local: SendResult | None, offset: str | None) -> None:
        """Take the outcome of the local delivery of the message."""
        self.offset = offset
        if local is None:
            self._resolve()
        else:
            local._done.rawlink(lambda _: self._finish(local))

    def _finish(self, local: SendResult) -> None:
        self.successes.extend(local.successes)
        self.errors.update(local.errors)
        self._resolve()


class Echoes:
    """This process's broadcasts with history on their way through Redis, by reference number.

    One per :class:`~.subscriber.SharedSubscriber`.  An echo that does not
    come back (the publishing connection failed) is delivered locally
    without an offset after :data:`~.connection.SOCKET_TIMEOUT`, or at once
    when the subscriber loses Redis.
    """

    def __init__(self) -> None:
        self.mark = "gwsoffset" + os.urandom(12).hex()  # letters and digits: a plain pattern in Lua
        self._numbers = itertools.count(1)
        self._pending: dict[int, tuple[float, RedisGateway, Envelope, PendingBroadcast]] = {}

    def send(self, shared: SharedSubscriber, gateway: RedisGateway, data: TextPayload | BinaryPayload,
             exclude: tuple[int, ...], size: int) -> SendResult:  # fmt: skip
        """Broadcast through the script; the result is resolved when the message comes back."""
        publisher = gateway._shard_now().publisher  # the channel's shard, on a cluster
        if not publisher.ready.is_set():
            shared.health.counters["dropped"] += 1  # Redis is away: delivered here only
            return self._deliver_unkept(shared, gateway, data, exclude)
        message = data(self.mark) if callable(data) else data
        ref = next(self._numbers)
        head, _, payload = encode_envelope(shared.origin, message, exclude, ref=ref).partition(b"\n")
        result = PendingBroadcast()
        self._pending[ref] = (time.monotonic() + SOCKET_TIMEOUT, gateway, Envelope("", message, exclude), result)
        script = SHARDED_SCRIPT if shared.topology.sharded else SCRIPT
        sent = publisher.send(
            len(payload),
            "EVAL", script, 2, history_key(gateway.channel), gateway.channel,
            size, head[:-1], payload, self.mark if callable(data) else "",
        )  # fmt: skip
        if not sent:  # dropped (and counted) by the publisher
            del self._pending[ref]
            return self._deliver_unkept(shared, gateway, data, exclude)
        if not gateway._client_ids:  # no member here, so no subscription: the echo will not come
            del self._pending[ref]
            return SendResult(0)
        return result

    def arrived(self, shared: SharedSubscriber, channel: str, envelope: Envelope) -> None:
        """One of ours is back from Redis: deliver it here now, in its place among the others."""
        pending = self._pending.pop(envelope.ref or 0, None)
        if pending is not None:  # else too late: already delivered here, unkept
            pending[3].adopt(shared.deliver(channel, envelope, pending[1]), envelope.offset)

    def expire(self, shared: SharedSubscriber, everything: bool = False) -> None:
        """Deliver locally, unkept, what Redis will not send back."""
        now = time.monotonic()
        for ref, (deadline, gateway, envelope, result) in list(self._pending.items()):
            if everything or deadline < now:
                del self._pending[ref]
                data = envelope.data
                data = data.replace(self.mark, "") if isinstance(data, str) else data.replace(self.mark.encode(), b"")
                result.adopt(shared.deliver(gateway.channel, envelope._replace(data=data), gateway), None)

    def _deliver_unkept(self, shared: SharedSubscriber, gateway: RedisGateway, data: TextPayload | BinaryPayload,
                        exclude: tuple[int, ...]) -> SendResult:  # fmt: skip
        message = data("") if callable(data) else data
        return shared.deliver(gateway.channel, Envelope("", message, exclude), gateway) or SendResult(0)


class _Join:
    __slots__ = ("live", "overflow")

    def __init__(self) -> None:
        self.live: list[Envelope] = []
        self.overflow = False


class StreamHistory:
    """One gateway's view of its channel's stream: the trim length, the clients joining and catching up."""

    def __init__(self, channel: str, size: int) -> None:
        if size < 1:
            raise ValueError(f"a history keeps at least 1 message, not {size}")
        self.size = size
        self.key = history_key(channel)
        self._joins: list[_Join] = []
        # Client id -> the offset its replay ended at: the stream can be read before this process
        # receives what was published, so live messages up to there are not sent to it again.
        self._replayed: dict[int, tuple[int, int]] = {}

    def observe(self, envelope: Envelope) -> tuple[int, ...]:
        """A live message of the room: kept for the clients joining now; the ids that already had it."""
        for join in self._joins:
            if len(join.live) < self.size:
                join.live.append(envelope)
            else:
                join.overflow = True
        if not self._replayed:
            return ()
        position = parse_offset(envelope.offset)
        had_it = tuple(client_id for client_id, last in self._replayed.items() if position <= last)
        if len(had_it) < len(self._replayed):  # the others are past their replay: live from now on
            self._replayed = {client_id: self._replayed[client_id] for client_id in had_it}
        return had_it

    def join(self, gateway: RedisGateway, client: WebsocketClient, since: str) -> None:
        """Add ``client`` to ``gateway.local`` after sending it what came after ``since``."""
        position = parse_offset(since)
        if max(position) >= 2**64:
            raise HistoryGap(since, "malformed offset: a stream entry id has two 64-bit numbers")
        if not gateway.connected:
            raise HistoryGap(since, "Redis is unavailable")
        join = _Join()
        self._joins.append(join)
        try:
            entries = self._read(gateway, since)
            if not entries or entries[0][0].decode() != since:
                raise HistoryGap(since, "no longer kept (too old), or unknown")
            if not gateway.connected or join.overflow:
                raise HistoryGap(since, "Redis was lost, or the room too busy, while reading the history")
            missed = [_rebuild(entry_id, fields) for entry_id, fields in entries[1:]]
            if missed:
                position = parse_offset(missed[-1].offset)
            missed += [live for live in join.live if parse_offset(live.offset) > position]
            # From here to the end no greenlet switch: nothing broadcast meanwhile is missed or sent twice.
            local = gateway.local
            local.add_client(client)
            for envelope in missed:
                if client.id not in envelope.exclude:
                    if isinstance(envelope.data, str):
                        local.send_text(envelope.data, client.id)
                    else:
                        local.send_binary(envelope.data, client.id)
            self._replayed[client.id] = position
            client.on_close(lambda closed, info: self._replayed.pop(closed.id, None))
        finally:
            self._joins.remove(join)

    def _read(self, gateway: RedisGateway, since: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """The entries from ``since`` on, page by page (other greenlets run meanwhile)."""
        redis = gateway._shared.topology.keys
        entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        start = since
        try:
            while True:
                page: Any = redis.xrange(self.key, min=start, max="+", count=REPLAY_PAGE)
                entries += page
                if len(page) < REPLAY_PAGE or not entries or entries[0][0].decode() != since:
                    return entries
                start = "(" + page[-1][0].decode()
        except (redis_py.RedisError, OSError) as error:
            raise HistoryGap(since, f"Redis is unavailable ({error})") from None
