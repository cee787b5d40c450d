"""The reader of a TLS socket, where readable is not a record: a bare greenlet that blocks in ``recv``."""

from __future__ import annotations

import time
from typing import Any

import gevent
import greenlet
from gevent.event import Event

from ..protocol.engine import EngineState
from .reader import Reader, logger


class GreenletReader(Reader):
    """Reads in a greenlet of its own that blocks in ``recv`` (TLS, where readable is not a record)."""

    __slots__ = ("_greenlet", "_room")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._greenlet: greenlet.greenlet | None = None
        self._room = Event()  # set while the reader may read
        self._room.set()

    def start(self) -> None:
        # A bare greenlet, not a gevent.Greenlet: nothing joins or kills it
        # (it ends when the socket does), and it costs a third of the memory.
        hub = gevent.get_hub()
        self._greenlet = greenlet.greenlet(self._read_loop, parent=hub)
        hub.loop.run_callback(self._greenlet.switch)

    def is_current(self) -> bool:
        return gevent.getcurrent() is self._greenlet

    def resume(self) -> None:
        self._room.set()

    def _read_loop(self) -> None:
        read_into = self._socket.recv_into
        buffer = self._buffer
        engine = self._engine
        try:
            while engine.state is not EngineState.CLOSED or engine.failed:
                if self._must_pause():
                    self._pause()
                elif self._held:
                    data, self._held = self._held, b""
                    self._on_data(data)
                elif self.at_eof:
                    break
                else:
                    size = read_into(buffer)
                    if not size:
                        break
                    self._on_data(buffer[:size])
        except OSError as error:
            logger.debug("%r: read failed: %s", self._client, error)
        except Exception:
            logger.exception("%r: reader failed", self._client)
        finally:
            self._client._finish()

    def _pause(self) -> None:
        """One pause: the receive window is full, or the rate limit asked for a pause."""
        pause = self.throttled_until - time.monotonic()
        if self.throttled_until and pause <= 0:
            self.throttled_until = 0.0
            return
        if pause <= 0 or self.at_eof or len(self._held) >= self.receive_window:
            self.window_full = self.unread >= self.receive_window
            self._room.clear()
            self._room.wait(pause if pause > 0 else None)
            return
        size = -1
        with gevent.Timeout(pause, False):
            size = self._socket.recv_into(self._buffer)
        if size > 0:
            self._received(self._buffer[:size])
        elif size == 0:
            self._eof()
