"""Turning an HTTP error status into a response, for the router, acceptors and static files."""

from __future__ import annotations

import html
from typing import Protocol

from werkzeug.exceptions import HTTPException
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


def respond_to_http_exception(error_handler: ErrorHandler, error: HTTPException, request: Request) -> Response:
    """The error handler's page for a werkzeug ``HTTPException``, with the headers the exception carries.

    werkzeug raises these for client mistakes (``BadHost`` for a malformed
    ``Host``, ``RequestedRangeNotSatisfiable`` with its ``Content-Range``, ...):
    each one becomes its own status, never a 500.
    """
    status = error.code or 500
    response = error_handler.handle_error(status, None, request)
    for name, value in error.get_headers(request.environ):
        if name.lower() != "content-type":
            response.headers[name] = value
    return response
