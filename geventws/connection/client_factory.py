"""Building a :class:`~.client.WebsocketClient` for an accepted connection, with its limits."""

from __future__ import annotations

import enum
import socket
from typing import TYPE_CHECKING, Literal
from typing import Protocol as TypingProtocol

from ..protocol.deflate import NegotiatedDeflate
from ..protocol.engine import DEFAULT_FRAME_SPLIT_THRESHOLD, LeanEngine, ProtocolEngine
from ..protocol.limits import DEFAULT_MESSAGE_SIZE_LIMIT, MessageLimits
from ..protocol.reader import WHOLE_FRAME_LIMIT
from ..protocol.wsproto_engine import WsprotoEngine
from .client import DEFAULT_CLOSE_PERIOD, WebsocketClient
from .heartbeat import Heartbeat, PeriodicHeartbeat
from .rate_limit import ConstantRateLimit, RateLimit
from .reader import DEFAULT_RECEIVE_WINDOW
from .writer import DEFAULT_WRITE_TIMEOUT

if TYPE_CHECKING:
    from werkzeug.wrappers import Request, Response


class _Default(enum.Enum):
    TOKEN = 0


#: Stands for "the documented default" where ``None`` means "off".
DEFAULT: Literal[_Default.TOKEN] = _Default.TOKEN

#: 1 MiB, websockets' ``max_size``: the limit of a compressed message, once
#: inflated, when no message limit was chosen.  A compressed message's size on
#: the wire says nothing about its size in memory (deflate reaches about
#: 1000:1, so 10 KiB can inflate to 10 MiB); at 1 MiB a few KiB on the wire
#: pin at most one mebibyte of message per connection.
DEFAULT_COMPRESSED_MESSAGE_SIZE_LIMIT = 1024 * 1024


class WebsocketClientFactory(TypingProtocol):
    """Builds the client of an accepted connection (the endpoint calls it once the 101 is written)."""

    def create_client(
        self,
        request: Request,
        response: Response,
        sock: socket.socket,
        leftover: bytes,
        compression: NegotiatedDeflate | None,
    ) -> WebsocketClient:
        """The client for ``sock``, the socket after the 101; ``leftover``: what the peer sent after its handshake."""
        ...


class Rfc6455ClientFactory:
    """Creates clients with the given limits, heartbeat and rate limit.

    By default every client is pinged after 10 idle seconds and closed after
    3 unanswered pings (:class:`PeriodicHeartbeat`), and reading from it is
    throttled to 1 MiB/s and 100 frames/s after a one-second burst
    (:class:`ConstantRateLimit`); pass ``None`` to turn either off.

    ``engine`` picks the protocol engine: ``"fast"``, the lean one of
    :mod:`geventws.protocol.engine`, or ``"wsproto"``, the reference it is
    tested against (several times slower per message; there for comparison
    and as a fallback).

    ``write_timeout`` drops a peer whose socket takes nothing for that many
    seconds while a send is blocked (``None``: never).

    ``frame_size_limit`` defaults to ``message_size_limit``: most client
    libraries send a whole message as one frame, so a smaller frame limit would
    refuse messages the message limit allows.

    ``message_size_limit`` given alone holds for every message, compressed or
    not.  Given nothing, a connection that negotiated permessage-deflate
    allows compressed messages only ``compressed_message_size_limit`` (1 MiB)
    once inflated, where a few KiB on the wire can claim megabytes; pass it to
    choose that limit yourself (``None``: the message limit).  A 1009 reason
    names the setting that refused the message.
    """

    def __init__(
        self,
        *,
        heartbeat: Heartbeat | None | Literal[_Default.TOKEN] = DEFAULT,
        rate_limit: RateLimit | None | Literal[_Default.TOKEN] = DEFAULT,
        message_size_limit: int | Literal[_Default.TOKEN] = DEFAULT,
        frame_size_limit: int | None = None,
        compressed_message_size_limit: int | None | Literal[_Default.TOKEN] = DEFAULT,
        text_only: bool = False,
        frame_split_threshold: int = DEFAULT_FRAME_SPLIT_THRESHOLD,
        close_period: float = DEFAULT_CLOSE_PERIOD,
        receive_window: int = DEFAULT_RECEIVE_WINDOW,
        engine: Literal["fast", "wsproto"] = "fast",
        write_timeout: float | None = DEFAULT_WRITE_TIMEOUT,
    ) -> None:
        if compressed_message_size_limit is DEFAULT:
            # The amplification defence applies unless the user chose a message limit.
            compressed_message_size_limit = (
                DEFAULT_COMPRESSED_MESSAGE_SIZE_LIMIT if message_size_limit is DEFAULT else None
            )
        if message_size_limit is DEFAULT:
            message_size_limit = DEFAULT_MESSAGE_SIZE_LIMIT
        if (
            message_size_limit <= 0
            or (compressed_message_size_limit is not None and compressed_message_size_limit <= 0)
            or (frame_size_limit is not None and frame_size_limit <= 0)
        ):
            raise ValueError("Size limits must be positive")
        self.heartbeat: Heartbeat | None = PeriodicHeartbeat() if heartbeat is DEFAULT else heartbeat
        self.rate_limit: RateLimit | None = ConstantRateLimit() if rate_limit is DEFAULT else rate_limit
        self.message_size_limit = message_size_limit
        self.frame_size_limit = frame_size_limit if frame_size_limit is not None else message_size_limit
        #: ``None``: compressed messages have the message limit.
        self.compressed_message_size_limit: int | None = compressed_message_size_limit
        self.text_only = text_only
        self.frame_split_threshold = frame_split_threshold
        self.close_period = close_period
        self.receive_window = receive_window
        if engine not in ("fast", "wsproto"):
            raise ValueError(f"engine must be 'fast' or 'wsproto', not {engine!r}")
        self.engine = engine
        self.write_timeout = write_timeout
        self._limits: MessageLimits | None = None
        self._limits_settings: tuple[int, int, bool, int | None] | None = None

    def create_client(
        self,
        request: Request,
        response: Response,
        sock: socket.socket,
        leftover: bytes,
        compression: NegotiatedDeflate | None,
    ) -> WebsocketClient:
        """A client for ``sock`` with this factory's limits and the negotiated ``compression``."""
        settings = (self.message_size_limit, self.frame_size_limit, self.text_only, self.compressed_message_size_limit)
        engine: ProtocolEngine
        if self.engine == "wsproto":  # wsproto's extension keeps each message's size: one each
            extensions = [compression.wsproto_extension()] if compression is not None else []
            limits = MessageLimits(*settings)
            engine = WsprotoEngine(limits, extensions, self.frame_split_threshold, defer_failure_close=True)
        else:
            limits = self._lean_limits(settings)
            deflate = compression.codec() if compression is not None else None
            # A frame delivered whole is held until complete: never more than the window allows.
            whole_frame_limit = min(WHOLE_FRAME_LIMIT, self.receive_window)
            engine = LeanEngine(
                limits, self.frame_split_threshold, deflate, whole_frame_limit, defer_failure_close=True
            )
        return WebsocketClient(
            sock,
            engine,
            leftover=leftover,
            subprotocol=_header(response, "Sec-WebSocket-Protocol"),
            compression_enabled=compression is not None,
            close_period=self.close_period,
            receive_window=self.receive_window,
            heartbeat=self.heartbeat,
            rate_limit=self.rate_limit,
            write_timeout=self.write_timeout,
        )

    def _lean_limits(self, settings: tuple[int, int, bool, int | None]) -> MessageLimits:
        """One :class:`MessageLimits` for every lean engine while the settings stay: it only reads them."""
        if self._limits is None or self._limits_settings != settings:
            self._limits = MessageLimits(*settings)
            self._limits_settings = settings
        return self._limits


def _header(response: Response, name: str) -> str | None:
    """A response header or ``None``.

    werkzeug's ``get()`` and ``in`` raise and catch a ``BadRequestKeyError``
    when the header is absent, which costs about a tenth of a handshake;
    ``getlist`` only compares.
    """
    values = response.headers.getlist(name)
    return values[0] if values else None
