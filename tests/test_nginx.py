"""A Flask app behind a real nginx configured as docs/deployment.rst shows, on a port other than 80.

The browser's page is ``http://127.0.0.1:PORT/`` on nginx's port, so the
handshake's Origin carries that port: the route's same-origin check passes
only if nginx forwards the Host with its port and ProxyFix shows it to the
app.  Every other origin is refused.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import websocket
from conftest import handshake_request, raw_exchange
from nginx_server import documented_config, nginx_proxy, proxied_app


@pytest.fixture
def behind_nginx(serve: Any, tmp_path: Any) -> Any:
    running = serve(proxied_app())
    with nginx_proxy(tmp_path / "nginx", running.port) as port:
        yield port, running


def test_the_pages_own_origin_passes_through_nginx(behind_nginx: Any) -> None:
    port, _ = behind_nginx
    origin = f"http://127.0.0.1:{port}"  # what a browser on nginx's page sends
    client = websocket.create_connection(f"ws://127.0.0.1:{port}/chat", origin=origin, timeout=10)
    assert client.recv() == f"http://127.0.0.1:{port} 127.0.0.1"
    client.close()


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "null",
        "http://127.0.0.1.evil.example:{port}",
        "https://127.0.0.1:{port}",
        "http://127.0.0.1",
        "http://127.0.0.1:{upstream}",  # the app's own address is not the public origin
    ],
)
def test_other_origins_are_refused_through_nginx(
    behind_nginx: Any, caplog: pytest.LogCaptureFixture, origin: str
) -> None:
    port, running = behind_nginx
    origin = origin.format(port=port, upstream=running.port)
    caplog.set_level(logging.WARNING, logger="geventws.flask")
    request = handshake_request(port, path="/chat", headers={"Origin": origin})
    status, _, _ = raw_exchange(port, request, read_until_close=False)
    assert status == 403
    [line] = [record.getMessage() for record in caplog.records if record.name == "geventws.flask"]
    assert f"is not this site's (http://127.0.0.1:{port})" in line


def test_forwarding_host_without_its_port_would_refuse_the_pages_own_origin(serve: Any, tmp_path: Any) -> None:
    """Why the doc forwards $http_host: nginx's $host drops the port, and the app sees another origin."""
    running = serve(proxied_app())
    config = documented_config().replace("$http_host", "$host")
    with nginx_proxy(tmp_path / "nginx", running.port, config) as port:
        request = handshake_request(port, path="/chat", headers={"Origin": f"http://127.0.0.1:{port}"})
        status, _, _ = raw_exchange(port, request, read_until_close=False)
    assert status == 403
