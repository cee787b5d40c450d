"""Per-connection counters and timestamps."""

from __future__ import annotations

import enum
import time


class WebsocketCount(enum.Enum):
    """Deprecated names of the counters of :class:`.ClientStats` (read ``client.stats.<name>``)."""

    BYTES_RECEIVED = "bytes_received"
    BYTES_SENT = "bytes_sent"
    FRAMES_RECEIVED = "frames_received"
    FRAMES_SENT = "frames_sent"
    MESSAGES_RECEIVED = "messages_received"
    MESSAGES_SENT = "messages_sent"
    PINGS_RECEIVED = "pings_received"
    PINGS_SENT = "pings_sent"
    PONGS_RECEIVED = "pongs_received"
    PONGS_SENT = "pongs_sent"


class WebsocketTimestamp(enum.Enum):
    """Deprecated names of the timestamps of :class:`.ClientStats` (read ``client.stats.<name>``)."""

    CONNECTED = "connected"
    LAST_READ = "last_read"
    LAST_SEND = "last_send"
    LAST_DATA_READ = "last_data_read"
    LAST_DATA_SEND = "last_data_send"
    LAST_HEARTBEAT = "last_heartbeat"
    CLOSED = "closed"


class ClientStats:
    """Counters and timestamps of one connection; plain attributes keep the hot path cheap."""

    __slots__ = tuple(item.value for item in (*WebsocketCount, *WebsocketTimestamp))

    def __init__(self) -> None:
        self.bytes_received = 0
        self.bytes_sent = 0
        self.frames_received = 0
        self.frames_sent = 0
        self.messages_received = 0
        self.messages_sent = 0
        self.pings_received = 0
        self.pings_sent = 0
        self.pongs_received = 0
        self.pongs_sent = 0
        self.connected = time.time()
        self.last_read = 0.0
        self.last_send = 0.0
        self.last_data_read = 0.0
        self.last_data_send = 0.0
        self.last_heartbeat = 0.0
        self.closed = 0.0

    def count(self, which: WebsocketCount) -> int:
        """The counter named by ``which``."""
        return int(getattr(self, which.value))

    def timestamp(self, which: WebsocketTimestamp) -> float:
        """Seconds since the epoch, 0.0 if it never happened."""
        return float(getattr(self, which.value))
