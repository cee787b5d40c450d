"""Large compressed messages from the client libraries people use: websockets, aiohttp and Node's ws.

Each client runs in its own process, offers permessage-deflate (as each does
by default or when asked) and sends 8 MiB of random hex text (about 4.4 MiB
deflated).  An endpoint whose ``message_size_limit`` is 16 MiB echoes it,
compressed or not; an endpoint with the default limits refuses it with a
1009 that names ``compressed_message_size_limit``, the setting to raise.

Node's ``ws`` is installed once per session with npm into ``.node/`` (or
``GEVENTWS_NODE_PREFIX``).  Without Node the Node cases are skipped;
``GEVENTWS_REQUIRE_NODE=1`` (set by ``.ci/run``) turns that skip into a failure.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import factory

import geventws

CLIENTS = Path(__file__).parent / "clients"
NODE_PREFIX = Path(os.environ.get("GEVENTWS_NODE_PREFIX", Path(__file__).parent.parent / ".node"))
REQUIRE_NODE = os.environ.get("GEVENTWS_REQUIRE_NODE") == "1"
#: The Node client library, as npm names it (major version pinned).
NODE_WS = "ws@8"
MiB = 1024 * 1024


@pytest.fixture(scope="session")
def node_path() -> str:
    """NODE_PATH for a Node process that can ``require("ws")``; installs ws with npm on first use."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        reason = "Node tests skipped: no node/npm on PATH (apt-get install nodejs npm)"
        if REQUIRE_NODE:
            pytest.fail(f"{reason}, and GEVENTWS_REQUIRE_NODE=1 requires them")
        pytest.skip(reason)
    modules = NODE_PREFIX / "node_modules"
    if not (modules / "ws" / "package.json").exists():
        subprocess.run(
            [npm, "install", "--prefix", str(NODE_PREFIX), "--no-save", "--no-audit", "--no-fund", NODE_WS],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return str(modules)


def run_client(client: str, url: str, size: int, node_path: str | None = None) -> dict:
    """Run one client process to its end; its JSON report."""
    if client == "node-ws":
        command = ["node", str(CLIENTS / "ws_send.mjs"), url, str(size)]
        env = {**os.environ, "NODE_PATH": node_path or ""}
    else:
        command = [sys.executable, str(CLIENTS / "send_one.py"), client, url, str(size)]
        env = dict(os.environ)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, f"{client} failed: {done.stdout}{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def endpoints(serve):
    """``/16mib``: message_size_limit=16 MiB; ``/default``: the default limits; both compress and echo."""
    received: list[int] = []

    def echo(client, request, response):
        for message in client:
            data = message.buffer()
            received.append(len(data))
            client.send_text(data) if isinstance(data, str) else client.send_binary(data)

    @factory
    def app(server):
        router = geventws.Router(None, geventws.DefaultErrorHandler())
        for path, limits in (
            ("/16mib", {"message_size_limit": 16 * MiB, "frame_size_limit": 16 * MiB}),
            ("/default", {}),
        ):
            client_factory = geventws.Rfc6455ClientFactory(rate_limit=None, **limits)
            websocket = geventws.Websocket(
                server,
                None,
                None,
                echo,
                compression_factory=geventws.Rfc7692CompressionFactory(),
                client_factory=client_factory,
            )
            router.add_route("GET", path, websocket)
        return router

    return serve(app), received


@pytest.fixture(params=["websockets", "aiohttp", "node-ws"])
def client(request):
    """A client library's name; for Node, the session's ws installation is made first."""
    if request.param == "node-ws":
        request.getfixturevalue("node_path")
    return request.param


def node_path_of(request, client):
    return request.getfixturevalue("node_path") if client == "node-ws" else None


def test_an_8_mib_compressed_message_is_echoed_under_a_16_mib_message_limit(request, endpoints, client):
    running, received = endpoints
    report = run_client(client, running.url + "/16mib", 8 * MiB, node_path_of(request, client))
    assert report["extensions"].startswith("permessage-deflate"), report
    assert (report.get("same"), report.get("length")) == (True, 8 * MiB), report
    assert received == [8 * MiB]


def test_the_default_limit_refuses_an_8_mib_compressed_message_and_names_its_setting(request, endpoints, client):
    running, received = endpoints
    report = run_client(client, running.url + "/default", 8 * MiB, node_path_of(request, client))
    assert report["extensions"].startswith("permessage-deflate"), report
    assert report.get("code") == 1009, report
    assert report["reason"] == "Message inflates beyond the limit of 1048576 bytes (compressed_message_size_limit)"
    assert received == []


def test_a_compressed_message_over_the_message_limit_names_message_size_limit(request, endpoints, client):
    running, received = endpoints
    report = run_client(client, running.url + "/16mib", 17 * MiB, node_path_of(request, client))
    assert report.get("code") == 1009, report
    assert report["reason"] == "Message inflates beyond the limit of 16777216 bytes (message_size_limit)"
    assert received == []


@pytest.mark.parametrize(
    ("options", "compressed_limit"),
    [
        ({}, MiB),  # nothing chosen: the amplification-safe default
        ({"message_size_limit": 16 * MiB}, None),  # a message limit chosen holds for compressed messages too
        ({"message_size_limit": 16 * MiB, "compressed_message_size_limit": 2 * MiB}, 2 * MiB),
        ({"compressed_message_size_limit": None}, None),
    ],
)
def test_which_limit_a_compressed_message_gets(options, compressed_limit):
    assert geventws.Rfc6455ClientFactory(**options).compressed_message_size_limit == compressed_limit
