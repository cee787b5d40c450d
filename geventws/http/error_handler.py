"""Turning an HTTP error status into a response, for the router, acceptors and static files."""

from __future__ import annotations

import html
from typing import Protocol

from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Request, Response


class ErrorHandler(Protocol):
    """Turns an HTTP error status into the response sent."""

    def handle_error(self, status: int, reason: str | None = None, request: Request | None = None) -> Response:
        """The response for ``status``, with ``reason`` (safe to show the client) if given."""
        ...


class DefaultErrorHandler:
    """A small HTML page naming the status and, when given, the reason."""

    def handle_error(self, status: int, reason: str | None = None, request: Request | None = None) -> Response:
        """A small HTML page naming the status and the reason."""
        phrase = HTTP_STATUS_CODES.get(status, "Error")
        detail = html.escape(reason or phrase)
        body = (
            f"<!doctype html>\n<html><head><title>{status} {phrase}</title></head>"
            f"<body><h1>{status} {phrase}</h1><p>{detail}</p></body></html>\n"
        )
        return Response(body, status=status, mimetype="text/html")
