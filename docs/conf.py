"""Sphinx configuration: ``make docs`` builds the site into docs/_build/html with warnings as errors."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import geventws  # noqa: E402

project = "geventws"
author = "the geventws authors"
copyright = "the geventws authors"  # noqa: A001 - Sphinx's name
release = geventws.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

html_theme = "furo"
html_title = f"geventws {release}"
exclude_patterns = ["_build", ".venv", "requirements.txt"]
default_role = "py:obj"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "undoc-members": True}
python_use_unqualified_type_names = True

nitpicky = True
# Building must not need the network, so there is no intersphinx: names of the
# standard library and of other projects stay plain text instead of links.
_EXTERNAL = (
    "werkzeug",
    "gevent",
    "greenlet",
    "prometheus_client",
    "socket",
    "stdlib_socket",  # the connection modules' name for the socket module
    "ssl",
    "logging",
    "typing",
    "collections",
    "enum",
    "weakref",
    "zlib",
    "wsproto",
    "flask",
    "redis",
    "gunicorn",
    "websocket",
    "os",
)
nitpick_ignore_regex = [
    (r"py:.*", rf"({'|'.join(_EXTERNAL)})(\..*)?"),
    # Builtins and standard names as they appear in signatures.
    (r"py:.*", r"(int|str|bytes|bytearray|memoryview|float|bool|object|None|Any|Callable|Iterable|Iterator|Literal)"),
    (r"py:.*", r"(Request|Response|Pool|Logger|SSLContext|CollectorRegistry|Metric|Collector|Exception)"),
    # Internal types that appear in public signatures: the engine interface, the
    # negotiated compression parameters, the handler type alias, and what a
    # transport needs of its request handler.
    (r"py:class", r"(geventws\.protocol\.\w+\.)?(ProtocolEngine|NegotiatedDeflate)"),
    (r"py:class", r"ClientHandler|Gateway"),
    (r"py:class", r"geventws\.http\.transport\.RequestHandler"),
    # Internals that public docstrings point to: the sans-I/O protocol modules
    # and the client id source.  They are not part of the API reference.
    (r"py:mod", r"geventws\.(protocol|connection)(\.\w+)?"),
    (r"py:data", r"client_ids"),
    # Integrations that docstrings mention before they exist.
    (r"py:mod", r"geventws\.(redis|flask|gunicorn)"),
]
