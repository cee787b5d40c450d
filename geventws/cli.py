"""``geventws serve MODULE:APP``: run a WSGI app as a monkey-patched, standalone daemon.

The command patches the process with gevent first, then imports the app the
way gunicorn and flask do (the current directory is on ``sys.path``;
``MODULE:NAME``, ``MODULE:factory()`` or ``MODULE:factory('literal', 1)``;
``MODULE`` alone means ``MODULE:app``), serves it on every ``--bind`` address
with :class:`~geventws.Server`, and on SIGTERM or SIGINT stops accepting,
closes every WebSocket client with 1001 and exits 0 within
``--graceful-timeout``; a second signal exits at once with status 1.

Mistakes in the invocation (a module or name that does not exist, an object
that is not a WSGI app, a bad or busy address, an unreadable certificate)
are one line on stderr and exit status 2.  One process is the whole story
here: for several, run gunicorn with ``geventws.gunicorn.Worker``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .http.server import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_MAX_HEADER_SIZE,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
)

#: What ``--bind`` defaults to.
DEFAULT_BIND = "127.0.0.1:8000"
#: Seconds between SIGTERM and exit, at most: clients get their 1001 and the time to answer it.
DEFAULT_GRACEFUL_TIMEOUT = 5.0
#: Exit status of a bad invocation (as argparse, gunicorn and flask use).
USAGE_ERROR = 2
#: Exit status when a second signal cut the graceful stop short.
FORCED_EXIT = 1
#: Set by werkzeug's reloader in the process it restarts on every change.
_RELOADER_CHILD = "WERKZEUG_RUN_MAIN"

logger = logging.getLogger("geventws.cli")


class UsageError(Exception):
    """A mistake in the invocation: reported as one line on stderr, exit status 2."""


@dataclass(frozen=True)
class Bind:
    """One ``--bind`` value: a ``(host, port)`` or a unix socket path."""

    host: str = ""
    port: int = 0
    path: str | None = None

    @property
    def address(self) -> tuple[str, int] | str:
        """What :meth:`geventws.Server.expose` takes."""
        return f"unix:{self.path}" if self.path is not None else (self.host, self.port)

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_bind(value: str) -> Bind:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``unix:PATH``; raises :class:`UsageError` for anything else."""
    problem = f"invalid --bind {value!r}: expected HOST:PORT, [IPV6]:PORT or unix:PATH"
    if value.startswith("unix:"):
        path = value[len("unix:") :]
        if not path:
            raise UsageError(problem)
        return Bind(path=path)
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or not rest.startswith(":") or not host:
            raise UsageError(problem)
        port = rest[1:]
    else:
        host, colon, port = value.rpartition(":")
        if not colon or not host or ":" in host:
            raise UsageError(problem)
    if not port.isdigit() or int(port) > 65535:
        raise UsageError(f"{problem} (the port must be a number from 0 to 65535)")
    return Bind(host=host, port=int(port))


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``geventws serve APP [options]``."""
    parser = argparse.ArgumentParser(prog="geventws", description="A WebSocket server for gevent, WSGI and Flask.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve a WSGI app",
        description="Serve a WSGI app (a Router, a Websocket, a Flask app, ...) with geventws.",
    )
    serve.add_argument("app", metavar="MODULE:APP", help="MODULE:NAME, MODULE:factory() or MODULE (for MODULE:app)")
    serve.add_argument(
        "--bind",
        "-b",
        action="append",
        metavar="ADDR",
        help=f"HOST:PORT, [IPV6]:PORT or unix:PATH; repeat to listen on several (default {DEFAULT_BIND})",
    )
    serve.add_argument(
        "--app-dir", default=".", metavar="DIR", help="import the app from DIR first (default: the current directory)"
    )
    serve.add_argument("--certfile", metavar="FILE", help="TLS certificate chain (PEM): serve https and wss")
    serve.add_argument("--keyfile", metavar="FILE", help="TLS private key (PEM), unless it is in the certificate file")
    serve.add_argument("--ca-certs", metavar="FILE", help="CA certificates (PEM): require client certificates")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error", "critical"],
        help="the root logger's level (default info; debug adds rate limit and heartbeat events)",
    )
    serve.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one line per HTTP request, on geventws.server.access (default on)",
    )
    serve.add_argument("--max-connections", type=int, metavar="N", help="concurrent connections (default unlimited)")
    serve.add_argument(
        "--graceful-timeout",
        type=float,
        default=DEFAULT_GRACEFUL_TIMEOUT,
        metavar="SECONDS",
        help=f"from SIGTERM/SIGINT to exit: clients get 1001 and time to answer (default {DEFAULT_GRACEFUL_TIMEOUT:g})",
    )
    serve.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT,
        metavar="SECONDS",
        help=f"for a whole request head (default {DEFAULT_REQUEST_TIMEOUT:g})",
    )
    serve.add_argument(
        "--keepalive-timeout",
        type=float,
        default=DEFAULT_KEEPALIVE_TIMEOUT,
        metavar="SECONDS",
        help=f"before an idle keep-alive connection is dropped (default {DEFAULT_KEEPALIVE_TIMEOUT:g})",
    )
    serve.add_argument(
        "--max-header-size",
        type=int,
        default=DEFAULT_MAX_HEADER_SIZE,
        metavar="BYTES",
        help=f"of a request head; larger ones get 431 (default {DEFAULT_MAX_HEADER_SIZE})",
    )
    serve.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_BODY_TIMEOUT,
        metavar="SECONDS",
        help=f"for each 64 KiB of a request body (default {DEFAULT_BODY_TIMEOUT:g})",
    )
    serve.add_argument(
        "--tls-handshake-timeout",
        type=float,
        default=DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        metavar="SECONDS",
        help=f"for a TLS handshake (default {DEFAULT_TLS_HANDSHAKE_TIMEOUT:g})",
    )
    serve.add_argument("--reload", action="store_true", help="restart when a source file changes (development only)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """The ``geventws`` console script (and ``python -m geventws``)."""
    options = build_parser().parse_args(argv)
    try:
        binds = [parse_bind(value) for value in options.bind or [DEFAULT_BIND]]
        if options.keyfile and not options.certfile:
            raise UsageError("--keyfile needs --certfile")
        if options.ca_certs and not options.certfile:
            raise UsageError("--ca-certs needs --certfile")
        if options.reload and os.environ.get(_RELOADER_CHILD) != "true":
            # The watching parent: it imports nothing of the app and is not
            # patched; it restarts the child whenever that exits with status 3.
            _configure_logging(options)
            run_with_reloader = _werkzeug_reloader()
            run_with_reloader(lambda: None, reloader_type="stat")
            return
        _patch()
        _configure_logging(options)  # after patching: its locks are then gevent's
        if options.reload:
            _serve_reloading(options, binds)
        else:
            sys.exit(serve(options, binds))
    except UsageError as error:
        print(f"geventws: error: {error}", file=sys.stderr)
        sys.exit(USAGE_ERROR)


def serve(options: argparse.Namespace, binds: list[Bind]) -> int:
    """Load the app, serve it until a signal, stop gracefully; the exit status."""
    import signal

    import gevent
    from gevent.event import AsyncResult

    ssl_context = _ssl_context(options)
    server = _build_server(options, binds, ssl_context)
    app = load_app(options.app, options.app_dir)
    received: AsyncResult = AsyncResult()
    unix_paths: list[str] = []

    def on_signal(signum: int) -> None:
        if not received.ready():
            received.set(signum)
            return
        logger.warning("Second signal: exiting at once")
        _remove_sockets(unix_paths)
        logging.shutdown()
        os._exit(FORCED_EXIT)

    # Trapped before listening, so no signal can find the default handlers.
    handlers = [gevent.signal_handler(signum, on_signal, signum) for signum in (signal.SIGINT, signal.SIGTERM)]
    try:
        try:
            server.start(app)
        except OSError as error:
            failed = binds[min(len(server.addresses), len(binds) - 1)]  # they start in order
            raise UsageError(f"cannot listen on {failed}: {error.strerror or error}") from None
        finally:
            # Only the sockets this server bound: never another process's file.
            unix_paths[:] = [address for address in server.addresses if isinstance(address, str) and address]
        signum = received.get()
        logger.info("Received %s, stopping (at most %.1f s)", signal.Signals(signum).name, options.graceful_timeout)
        server.stop(timeout=options.graceful_timeout)
        return 0
    finally:
        for handler in handlers:
            handler.cancel()
        _remove_sockets(unix_paths)


def _build_server(options: argparse.Namespace, binds: list[Bind], ssl_context: Any) -> Any:
    from .http.endpoint import close_all_websockets
    from .http.server import Server

    server = Server(
        logging.getLogger("geventws.server"),
        max_connections=options.max_connections,
        request_timeout=options.request_timeout,
        keepalive_timeout=options.keepalive_timeout,
        max_header_size=options.max_header_size,
        body_timeout=options.body_timeout,
        tls_handshake_timeout=options.tls_handshake_timeout,
    )
    for bind in binds:
        server.expose(bind.address, ssl_context=None if bind.path is not None else ssl_context)
    # Endpoints made without a server argument are closed too (with 1001).
    server.on_stop(close_all_websockets)
    return server


def load_app(spec: str, app_dir: str = ".") -> Any:
    """Import ``MODULE:NAME`` (or ``MODULE:factory(...)``) from ``app_dir`` or the installed packages.

    Raises :class:`UsageError` when the module or name does not exist or the
    object is not a WSGI app; errors raised by the app's own code propagate.
    """
    module_name, _, expression = spec.partition(":")
    if not module_name:
        raise UsageError(f"invalid app {spec!r}: expected MODULE:NAME or MODULE:factory()")
    directory = os.path.abspath(app_dir)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    module = _import(module_name)
    name, call_args = _parse_expression(spec, expression or "app")
    target: Any = module
    for part in name.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {name!r}") from None
    if call_args is not None:
        if not callable(target):
            raise UsageError(f"{module_name}:{name} is not callable, so it cannot be a factory")
        target = target(*call_args[0], **call_args[1])
    _check_wsgi_app(spec, target)
    return target


def _import(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        # Only when the module itself (or a parent package) is missing; a
        # missing import inside the app's own code is the app's error.
        if error.name is not None and (module_name == error.name or module_name.startswith(error.name + ".")):
            raise UsageError(f"no module named {module_name!r} (looked in the app directory and sys.path)") from None
        raise


def _parse_expression(spec: str, expression: str) -> tuple[str, tuple[list[Any], dict[str, Any]] | None]:
    """``name``, ``a.b`` or ``factory(literal, key=literal)``: the dotted name, and the call's arguments if any."""
    try:
        node = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        raise UsageError(f"invalid app {spec!r}: expected MODULE:NAME or MODULE:factory()") from None
    call_args: tuple[list[Any], dict[str, Any]] | None = None
    if isinstance(node, ast.Call):
        try:
            positional = [ast.literal_eval(argument) for argument in node.args]
            keywords = {keyword.arg: ast.literal_eval(keyword.value) for keyword in node.keywords if keyword.arg}
        except ValueError:
            raise UsageError(f"invalid app {spec!r}: factory arguments must be Python literals") from None
        call_args = (positional, keywords)
        node = node.func
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise UsageError(f"invalid app {spec!r}: expected MODULE:NAME or MODULE:factory()")
    parts.append(node.id)
    return ".".join(reversed(parts)), call_args


def _check_wsgi_app(spec: str, app: Any) -> None:
    if inspect.isclass(app) or inspect.ismodule(app) or not callable(app):
        raise UsageError(f"{spec} is not a WSGI app: it is {_kind(app)}, not a callable(environ, start_response)")
    try:
        inspect.signature(app).bind(None, None)
    except TypeError:
        hint = f"; if it is a factory, call it: '{spec}()'" if "(" not in spec else ""
        message = f"{spec} is not a WSGI app: it cannot be called with (environ, start_response){hint}"
        raise UsageError(message) from None
    except ValueError:
        pass  # no signature to inspect (a builtin): trust it


def _kind(value: Any) -> str:
    if inspect.isclass(value):
        return f"the class {value.__name__}"
    if inspect.ismodule(value):
        return f"the module {value.__name__}"
    return f"a {type(value).__name__}"


def _ssl_context(options: argparse.Namespace) -> Any:
    """The server's TLS context from --certfile/--keyfile/--ca-certs, built after patching (gevent's ssl)."""
    if not options.certfile:
        return None
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(options.certfile, options.keyfile)
    except (OSError, ssl.SSLError) as error:
        files = " / ".join(path for path in (options.certfile, options.keyfile) if path)
        raise UsageError(f"cannot load the certificate {files}: {_reason(error)}") from None
    if options.ca_certs:
        try:
            context.load_verify_locations(cafile=options.ca_certs)
        except (OSError, ssl.SSLError) as error:
            raise UsageError(f"cannot load the CA certificates {options.ca_certs}: {_reason(error)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _reason(error: Exception) -> str:
    return str(getattr(error, "strerror", None) or getattr(error, "reason", None) or error)


def _remove_sockets(paths: list[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            logger.warning("Cannot remove the unix socket %s: %s", path, error)


def _configure_logging(options: argparse.Namespace) -> None:
    logging.basicConfig(
        level=options.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    if not options.access_log:
        logging.getLogger("geventws.server.access").setLevel(logging.WARNING)


def _patch() -> None:
    """Patch the standard library with gevent before the app (and what it imports) is imported."""
    from gevent import monkey

    monkey.patch_all()


def _werkzeug_reloader() -> Any:
    """werkzeug's reloader, the one behind ``flask run --reload`` (werkzeug 3 keeps it in ``_reloader``)."""
    from werkzeug._reloader import run_with_reloader

    return run_with_reloader


def _serve_reloading(options: argparse.Namespace, binds: list[Bind]) -> None:
    """The reloader's child: serve in a greenlet while werkzeug watches the source files.

    werkzeug runs ``main`` in a (patched, so green) thread and exits with
    status 3 from the main greenlet when a file changes; the parent then
    starts a fresh child.  Ending the serving greenlet ends the process.
    """
    run_with_reloader = _werkzeug_reloader()

    def main() -> None:
        try:
            status = serve(options, binds)
        except UsageError as error:
            print(f"geventws: error: {error}", file=sys.stderr)
            status = USAGE_ERROR
        except Exception:
            traceback.print_exc()
            status = 1
        logging.shutdown()
        sys.stderr.flush()
        os._exit(status)

    run_with_reloader(main, reloader_type="stat")
