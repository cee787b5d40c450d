"""Who is in a room, across processes: members kept in Redis, each process refreshing its own.

A room's members are the sorted set ``geventws:{<channel>}:presence`` (see
:mod:`.keys`): one entry per client id, scored with the time (Redis's
clock, in ms) until which it counts.  A process adds a client when it joins,
removes it when it leaves or closes, and every ``presence_ttl / 3`` seconds
pushes the expiry of all its members forward, dropping entries that have
expired.  So a process that dies stops counting within ``presence_ttl``, and
a room whose processes all died disappears with its last expiry.

Costs: ``Presence.count()`` is one round trip, ``O(log N)`` in Redis for N
members; ``Presence.ids()`` one round trip, ``O(log N + N)``; a join or a
leave one round trip; a refresh one round trip per room with local members
every ``presence_ttl / 3`` seconds.  Redis's own clock scores the entries,
so the processes' clocks need not agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .keys import room_key

#: Seconds a member counts without a refresh from its process.
DEFAULT_PRESENCE_TTL = 15.0

_NOW = "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "

# KEYS[1] the room's set; ARGV[1] the ttl in ms, then the ids: counted until now + ttl.
_REFRESH = (
    _NOW
    + """
local expiry = now + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], expiry, ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIREAT', KEYS[1], last[2]) end
return 1
"""
)
_COUNT = _NOW + "return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')"
_IDS = _NOW + "return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')"


class Presence:
    """The members of one room in Redis (``client`` is a redis-py client, of a cluster too)."""

    def __init__(self, client: Any, channel: str, ttl: float) -> None:
        if not ttl > 0:
            raise ValueError(f"presence_ttl must be a positive number of seconds, not {ttl!r}")
        self.key = room_key(channel, "presence")
        self.ttl = ttl
        self._client = client
        self._refresh = client.register_script(_REFRESH)
        self._count = client.register_script(_COUNT)
        self._ids = client.register_script(_IDS)

    def add(self, client_ids: Iterable[int]) -> None:
        """Count these clients for another ``ttl`` seconds (a join, or a process's refresh)."""
        ids = [str(client_id) for client_id in client_ids]
        if ids:
            self._refresh(keys=[self.key], args=[int(self.ttl * 1000), *ids])

    def remove(self, client_id: int) -> None:
        self._client.zrem(self.key, str(client_id))

    def count(self) -> int:
        return int(self._count(keys=[self.key]))

    def ids(self) -> set[int]:
        return {int(client_id) for client_id in self._ids(keys=[self.key])}
