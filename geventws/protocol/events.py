"""What the protocol engines report to the connection: small immutable events.

Both engines (:mod:`.engine`, the default, and :mod:`.wsproto_engine`, the
reference) produce these, so the connection layer has one
dispatch whichever engine runs underneath.
"""

from __future__ import annotations

from typing import NamedTuple, Union


class Data(NamedTuple):
    """A chunk of a text (``str``) or binary (``bytes``) message."""

    payload: str | bytes
    is_binary: bool
    frame_finished: bool
    message_finished: bool


class Ping(NamedTuple):
    """A ping from the peer (the engine has queued the pong)."""

    payload: bytes


class Pong(NamedTuple):
    """A pong from the peer."""

    payload: bytes


class Close(NamedTuple):
    """The peer's close frame (code 1005 when it carried none)."""

    code: int
    reason: str


class ProtocolFailure(NamedTuple):
    """The peer broke the protocol or a limit: the connection must be failed with ``code``."""

    code: int
    reason: str


Event = Union[Data, Ping, Pong, Close, ProtocolFailure]
