"""nginx in front of a test server, configured exactly as docs/deployment.rst shows (not a test module).

The configuration is read from the doc's "Behind nginx" block; only its
``listen`` port and its ``proxy_pass`` upstream are replaced, so the tests
run what the doc tells users to write.  nginx runs in the foreground from a
temporary directory and is stopped after the test.  Without nginx the tests
skip; ``GEVENTWS_REQUIRE_NGINX=1`` (set by ``.ci/run``) turns that skip into
a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import flask
import pytest
from processes import stop_process
from servers import free_port
from werkzeug.middleware.proxy_fix import ProxyFix

from geventws import WebsocketClient
from geventws.flask import Websockets

DEPLOYMENT_DOC = Path(__file__).parent.parent / "docs" / "deployment.rst"
REQUIRE_NGINX = os.environ.get("GEVENTWS_REQUIRE_NGINX") == "1"


def proxied_app() -> flask.Flask:
    """The doc's app side: ProxyFix trusting one proxy, and a Flask route with the default origin check.

    ``/`` is a page; ``/chat`` answers with the scheme and host the app sees, and the client's address.
    """
    app = flask.Flask(__name__)
    ws = Websockets(app)

    @app.route("/")
    def page() -> str:
        return "<!doctype html><title>chat</title>"

    @ws.route("/chat")
    def chat(client: WebsocketClient) -> None:
        client.send_text(f"{flask.request.scheme}://{flask.request.host} {flask.request.remote_addr}")

    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    return app


def require_nginx() -> str:
    """The nginx executable, or skip (fail under GEVENTWS_REQUIRE_NGINX=1)."""
    found = shutil.which("nginx") or next((path for path in ("/usr/sbin/nginx",) if os.path.exists(path)), None)
    if found is None:
        reason = "nginx tests skipped: no nginx (apt-get install nginx)"
        if REQUIRE_NGINX:
            pytest.fail(f"{reason}, and GEVENTWS_REQUIRE_NGINX=1 requires it")
        pytest.skip(reason)
    return found


def documented_config() -> str:
    """The nginx configuration of docs/deployment.rst, as written there."""
    lines = DEPLOYMENT_DOC.read_text().splitlines()
    start = next(index for index, line in enumerate(lines) if line.strip().startswith("map $http_upgrade"))
    block = []
    for line in lines[start:]:
        if line and not line.startswith(" "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip() + "\n"


def proxy_config(listen_port: int, upstream_port: int, config: str | None = None) -> str:
    """``config`` (the documented one by default) listening on ``listen_port`` in front of ``upstream_port``."""
    config = config if config is not None else documented_config()
    replacements = {
        "listen 80;": f"listen 127.0.0.1:{listen_port};",
        "proxy_pass http://127.0.0.1:8000;": f"proxy_pass http://127.0.0.1:{upstream_port};",
    }
    for documented, used in replacements.items():
        assert config.count(documented) == 1, f"docs/deployment.rst's nginx block no longer has {documented!r}"
        config = config.replace(documented, used)
    return config


@contextmanager
def nginx_proxy(directory: Path, upstream_port: int, config: str | None = None) -> Iterator[int]:
    """nginx in front of ``127.0.0.1:upstream_port`` on a free port (yielded), stopped afterwards."""
    nginx = require_nginx()
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    main = f"""
        daemon off;
        worker_processes 1;
        pid {directory}/nginx.pid;
        error_log {directory}/error.log info;
        events {{ worker_connections 64; }}
        http {{
            access_log {directory}/access.log;
            client_body_temp_path {directory}/client_body;
            proxy_temp_path {directory}/proxy;
            fastcgi_temp_path {directory}/fastcgi;
            uwsgi_temp_path {directory}/uwsgi;
            scgi_temp_path {directory}/scgi;
    """
    conf = directory / "nginx.conf"
    conf.write_text(textwrap.dedent(main) + textwrap.indent(proxy_config(port, upstream_port, config), "    ") + "}\n")
    log = directory / "error.log"
    process = subprocess.Popen(
        [nginx, "-p", str(directory), "-e", str(log), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_listening(port, process, log)
        yield port
    finally:
        stop_process(process)


def _wait_for_listening(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 15) -> None:
    """Poll the port: nginx announces nothing a test could wait on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"nginx exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nginx did not listen on {port}:\n{log.read_text(errors='replace')}")
