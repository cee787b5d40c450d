"""A request body that must keep arriving: ``wsgi.input`` with a deadline on every read.

pywsgi reads a body without a deadline, in the application's reads and after
the response, when it discards what the application left unread to keep the
connection alive.  A ``Content-Length: 100`` with no body, or a chunked body
with no chunks, then holds the connection (and its file descriptor) forever.
Here every 64 KiB of body must arrive within ``timeout`` seconds (a body that
stalls is cut off; a large upload is not, as long as it keeps coming), and an
error response never waits for an unread body: the connection is closed
instead of kept alive.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import gevent
from gevent.pywsgi import Input, _InvalidClientInput
from werkzeug.exceptions import RequestTimeout

#: The request body must keep arriving: each 64 KiB of it within 30 s.
DEFAULT_BODY_TIMEOUT = 30.0
#: How much body one deadline covers.
_PIECE = 64 * 1024

_logger = logging.getLogger("geventws.http")
_NOTHING = io.BytesIO()


class BodyTimeout(_InvalidClientInput, RequestTimeout):  # type: ignore[misc]
    """The request body stopped arriving.

    Both an HTTP 408 for werkzeug and Flask (which answer it as such) and the
    exception pywsgi treats as bad client input (it closes the connection and
    logs one line) for plain WSGI apps.
    """

    def __init__(self, message: str = "The request body did not arrive in time") -> None:
        _InvalidClientInput.__init__(self, message)
        self.description = message
        self.response = None


class BodyInput(Input):  # type: ignore[misc]
    """pywsgi's ``Input`` with a deadline on each read and no waiting for a body after an error response."""

    __slots__ = ("_timeout", "_handler")

    def __init__(
        self, rfile: Any, content_length: int | None, sock: Any, chunked: bool, timeout: float | None, handler: Any
    ) -> None:
        super().__init__(rfile, content_length, socket=sock, chunked_input=chunked)
        self._timeout = timeout
        self._handler = handler

    def end(self) -> None:
        """Take nothing more from the connection (it was handed over): from now on this input reads as empty."""
        if self.content_length is None and not self.chunked_input:
            self.rfile = _NOTHING  # type: ignore[misc]  # a slot of pywsgi's Input; no length: it reads as empty
        else:
            super().__init__(_NOTHING, None)  # pywsgi's Input over nothing, with no length

    def read(self, length: int | None = None) -> bytes:
        """Up to ``length`` bytes of body (all of it for ``None``), each 64 KiB within the deadline."""
        left = -1 if length is None or length < 0 else length
        if left == 0:
            return b""
        pieces: list[bytes] = []
        while left != 0:
            size = _PIECE if left < 0 else min(left, _PIECE)
            with gevent.Timeout(self._timeout, BodyTimeout()):
                piece: bytes = super().read(size)
            if not piece:
                break
            pieces.append(piece)
            if left > 0:
                left -= len(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def readline(self, size: int | None = None) -> bytes:
        """One line of body, within the deadline."""
        with gevent.Timeout(self._timeout, BodyTimeout()):
            line: bytes = super().readline(size)
        return line

    def _discard(self) -> None:
        handler = self._handler
        if not self._unread():
            return
        if handler.close_connection or (handler.code or 0) >= 400:
            # Nothing to keep alive for: an error answer does not wait for a body it did not need.
            handler.close_connection = True
            return
        try:
            super()._discard()
        except BodyTimeout:
            _logger.debug("Request body from %s stopped arriving; closing", handler.client_address)
            handler.close_connection = True

    def _unread(self) -> bool:
        return bool(self.chunked_input and self.chunk_length != 0) or self.position < (self.content_length or 0)


#: The input of every request without a body (no ``Content-Length``, not
#: chunked): it reads as empty and keeps no state, so one serves them all.
NO_BODY = BodyInput(_NOTHING, None, None, False, None, None)
