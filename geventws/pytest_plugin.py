"""The geventws pytest plugin: a monkey-patched test process and a ``geventws_serve`` fixture.

Installed with geventws (entry point ``pytest11``, name ``geventws``), it
monkey-patches the process with ``gevent.monkey.patch_all()`` when pytest
starts, before any conftest.py or test module is imported, so that
websocket-client and the server under test share gevent's loop.  A conftest.py
that patches by itself as well is harmless (patching twice is a no-op).

Opting out:

- ``pytest -p no:geventws`` (or ``-p no:geventws`` in ``addopts``) does not
  load the plugin at all: no patching, no fixture;
- ``geventws_patch = false`` in the ini file keeps the fixture and leaves the
  patching to you (``geventws.testing.serve`` still checks it happened).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from gevent import monkey

from .http.server import WSGIApp
from .testing import TestServer, serve


def pytest_addoption(parser: pytest.Parser) -> None:
    """The ``geventws_patch`` ini option (on by default)."""
    parser.addini(
        "geventws_patch",
        "Monkey-patch the test process with gevent at startup (geventws plugin)",
        type="bool",
        default=True,
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Patch before conftest.py files and test modules are imported."""
    if early_config.getini("geventws_patch"):
        monkey.patch_all()


@pytest.fixture
def geventws_serve() -> Iterator[Callable[..., TestServer]]:
    """``geventws_serve(app, **server_options)`` serves ``app`` for this test (see :func:`geventws.testing.serve`).

    Every server started this way is stopped at the end of the test, and the
    clients it connected are dropped at once.
    """
    with ExitStack() as stack:

        def start(app: WSGIApp, **server_options: Any) -> TestServer:
            return stack.enter_context(serve(app, **server_options))

        yield start
