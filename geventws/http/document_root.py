"""Serving static files from a directory, on werkzeug's ``send_from_directory``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from typing import Any, Callable

from werkzeug.exceptions import NotFound
from werkzeug.utils import send_from_directory
from werkzeug.wrappers import Request

from .error_handler import DefaultErrorHandler, ErrorHandler


class DocumentRoot:
    """A WSGI app serving the files under ``root`` (``index.html`` for directories).

    werkzeug refuses paths that escape ``root`` and answers conditional and
    range requests; anything else than GET or HEAD gets 405.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | Any,
        *deprecated: Any,
        error_handler: ErrorHandler | None = None,
        index: str = "index.html",
    ) -> None:
        if deprecated:
            # The seed's DocumentRoot(server, error_handler, root[, index]): the server was never used.
            warnings.warn(
                "DocumentRoot(server, error_handler, root) is deprecated: use DocumentRoot(root, error_handler=...)",
                DeprecationWarning,
                stacklevel=2,
            )
            error_handler, root = deprecated[0], deprecated[1]
            index = deprecated[2] if len(deprecated) > 2 else index
        self.root = os.path.abspath(root)
        if not os.path.isdir(self.root):
            raise ValueError(f"Document root {self.root!r} is not a directory")
        self.index = index
        self._error_handler = error_handler or DefaultErrorHandler()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Serve the file the path names, or 404/405."""
        request = Request(environ)
        if request.method not in ("GET", "HEAD"):
            response = self._error_handler.handle_error(405, None, request)
            response.headers["Allow"] = "GET, HEAD"
            return response(environ, start_response)
        path = request.path.lstrip("/")
        if path == "" or path.endswith("/"):
            path += self.index
        try:
            response = send_from_directory(self.root, path, environ)
        except NotFound:
            response = self._error_handler.handle_error(404, None, request)
        return response(environ, start_response)
