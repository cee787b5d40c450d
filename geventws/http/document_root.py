"""Serving static files from a directory, on werkzeug's ``send_from_directory``."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from typing import Any, Callable

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.security import safe_join
from werkzeug.utils import send_from_directory
from werkzeug.wrappers import Request

from .error_handler import DefaultErrorHandler, ErrorHandler, respond_to_http_exception


class DocumentRoot:
    """A WSGI app serving the files under ``root`` (``index.html`` for directories).

    werkzeug refuses paths that escape ``root`` and answers conditional and
    range requests (a range it cannot serve gets 416 with ``Content-Range``);
    anything else than GET or HEAD gets 405.

    Symbolic links inside ``root`` are followed wherever they point, as
    nginx does by default: a link is something the owner of the directory
    put there.  ``follow_symlinks=False`` serves a file only if its real path
    is inside the real path of ``root`` (links within the root still work);
    anything else gets 404.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | Any,
        *deprecated: Any,
        error_handler: ErrorHandler | None = None,
        index: str = "index.html",
        follow_symlinks: bool = True,
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
        self.follow_symlinks = follow_symlinks
        self._real_root = os.path.realpath(self.root)
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
            if not self.follow_symlinks and not self._stays_inside(path):
                raise NotFound()
            response = send_from_directory(self.root, path, environ)
        except NotFound:
            response = self._error_handler.handle_error(404, None, request)
        except HTTPException as error:  # a bad Range header (416), a malformed Host (400), ...
            response = respond_to_http_exception(self._error_handler, error, request)
        return response(environ, start_response)

    def _stays_inside(self, path: str) -> bool:
        """Whether ``path`` resolves, links and all, to somewhere under the root's real path."""
        joined = safe_join(self.root, path)
        if joined is None:
            return False
        real = os.path.realpath(joined)
        return real == self._real_root or real.startswith(self._real_root + os.sep)
