"""Room history: offsets for broadcasts, and the last messages of a room kept for clients that come back.

A client that drops and reconnects presents the offset of the last message
it saw (``add_client(client, since=offset)``) and gets every broadcast it
missed before any live one.  An offset is a string ``"<epoch>-<sequence>"``:
the epoch is the time the history was created, in milliseconds, and the
sequence counts the room's broadcasts from 1; within a room both only grow.
Treat offsets as opaque tokens: hand them to the client and back.

:class:`History` keeps the messages in this process's memory: a deque of at
most ``size`` payloads, kept as the broadcast made them (no copy): a room
costs at most ``size`` messages, each its payload plus about 60 bytes (the
object's header and its deque slot: 158 bytes for a 100-character line, by
tracemalloc); trimming is the deque dropping its oldest entry, never a wait.

An offset that cannot be resumed from -- older than what the history holds,
from another history (another room, an earlier run of the process), from
the future, or malformed -- raises :class:`HistoryGap`: the client has to
reload its state instead.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Union

#: What a text broadcast takes: the message, or a function from its offset to the
#: message, so that the application can put the offset inside its own format.
TextPayload = Union[str, Callable[[str], str]]
#: The same for a binary broadcast.
BinaryPayload = Union[bytes, Callable[[str], bytes]]


class HistoryGap(LookupError):
    """The history cannot give every message after this offset: the client must reload its state.

    ``offset`` is the offset asked for; the message says why (too old,
    unknown, malformed, no history kept).  Nothing was added.
    """

    def __init__(self, offset: object, reason: str) -> None:
        super().__init__(f"Cannot resume after offset {str(offset)[:100]!r}: {reason}")
        self.offset = offset
        self.reason = reason


def resolve(data: TextPayload | BinaryPayload, offset: str | None) -> str | bytes:
    """The message of a broadcast: ``data``, or ``data(offset)`` (``""`` when the room keeps no history)."""
    if callable(data):
        return data("" if offset is None else offset)
    return data


def parse_offset(offset: object) -> tuple[int, int]:
    """``"<a>-<b>"`` as ``(a, b)``: the shape of local and Redis offsets alike; :class:`HistoryGap` otherwise."""
    if not isinstance(offset, str):
        raise HistoryGap(offset, f"malformed offset: a string is expected, not {type(offset).__name__}")
    first, dash, second = offset.partition("-")
    # isdigit() alone accepts other scripts' digits; ascii keeps "١-٢" out, length keeps int() cheap.
    if not (dash and len(offset) <= 41 and offset.isascii() and first.isdigit() and second.isdigit()):
        raise HistoryGap(offset, 'malformed offset: expected "<number>-<number>"')
    return int(first), int(second)


class History:
    """The last ``size`` broadcasts of one room, in this process's memory, by offset."""

    __slots__ = ("size", "epoch", "_epoch_prefix", "_last", "_messages")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a history keeps at least 1 message, not {size}")
        self.size = size
        self.epoch = time.time_ns() // 1_000_000
        self._epoch_prefix = f"{self.epoch}-"
        self._last = 0  # sequence number of the newest message
        self._messages: deque[str | bytes] = deque(maxlen=size)

    @property
    def last_offset(self) -> str:
        """The offset of the newest broadcast (``"<epoch>-0"`` before any): a client joining now resumes from it."""
        return f"{self._epoch_prefix}{self._last}"

    def next_offset(self) -> str:
        """The offset the next :meth:`append` gets."""
        return f"{self._epoch_prefix}{self._last + 1}"

    def append(self, data: str | bytes) -> None:
        """Keep ``data`` as the newest message (the oldest goes when the history is full)."""
        self._last += 1
        self._messages.append(data)

    def after(self, offset: object) -> list[str | bytes]:
        """Every message after ``offset``, oldest first; :class:`HistoryGap` if some are no longer kept."""
        epoch, sequence = parse_offset(offset)
        if epoch != self.epoch:
            raise HistoryGap(offset, "unknown offset: from another room or an earlier run of the server")
        if sequence > self._last:
            raise HistoryGap(offset, "unknown offset: no such message yet")
        missed = self._last - sequence
        if missed > len(self._messages):
            raise HistoryGap(offset, f"too old: the history keeps the last {self.size} messages")
        return list(itertools.islice(self._messages, len(self._messages) - missed, None))


def messages_after(history: History | None, since: object) -> list[str | bytes]:
    """What a client that saw ``since`` missed; :class:`HistoryGap` without a history."""
    if history is None:
        parse_offset(since)  # a malformed offset says so, even here
        raise HistoryGap(since, "this room keeps no history")
    return history.after(since)
