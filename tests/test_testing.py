"""geventws.testing: serve() in the test process, its connections, its fast teardown, and the pytest plugin."""

import os
import subprocess
import sys
import textwrap
import time

import pytest
import websocket

import geventws
from geventws.testing import NotPatchedError, serve


def echo(client, request, response):
    for message in client:
        client.send_text(str(message))


def origin_reporter(client, request, response):
    client.send_text(request.headers.get("Origin", "(none)"))
    client.receive()


def test_serve_yields_urls_and_connections_to_the_app():
    router = geventws.Router()
    router.add_route("GET", "/echo", geventws.Websocket(None, None, None, echo))
    router.add_route("GET", "/origin", geventws.Websocket(None, None, None, origin_reporter))
    with serve(router) as running:
        assert running.url == f"http://127.0.0.1:{running.port}"
        assert running.ws_url("/echo") == f"ws://127.0.0.1:{running.port}/echo"
        client = running.connect("/echo")
        client.send("hello")
        assert client.recv() == "hello"
        # The Origin is the server's own, as from a page it served.
        assert running.connect("/origin").recv() == running.url
        assert client.gettimeout() == 5


def test_server_options_reach_the_server():
    refused_status = pytest.raises(websocket.WebSocketBadStatusException)
    with serve(geventws.Websocket(None, None, None, echo), max_header_size=1024) as running, refused_status as refused:
        running.connect("/", header=["X-Big: " + "x" * 2000])
    assert refused.value.status_code == 431


def test_leaving_five_clients_open_tears_down_at_once():
    with serve(geventws.Websocket(None, None, None, echo)) as running:
        clients = [running.connect() for _ in range(5)]
        for client in clients:
            client.send("hi")
            assert client.recv() == "hi"
        started = time.monotonic()
    elapsed = time.monotonic() - started
    assert elapsed < 0.5, f"teardown took {elapsed:.3f} s"
    assert not running.server.is_running


def test_clients_made_elsewhere_are_cut_off_within_the_stop_timeout():
    # Clients not made by connect() never answer the server's close frame while
    # nobody reads them: the stop timeout, not the 3 s close period, bounds the wait.
    endpoint_without_server = geventws.Websocket(None, None, None, echo)
    with serve(endpoint_without_server) as running:
        clients = [websocket.create_connection(running.ws_url("/"), timeout=5) for _ in range(5)]
        for client in clients:
            client.send("hi")
            assert client.recv() == "hi"
        started = time.monotonic()
    elapsed = time.monotonic() - started
    assert elapsed < 0.5, f"teardown took {elapsed:.3f} s"
    for client in clients:
        client.close(timeout=0)


def test_serve_refuses_an_unpatched_process_with_a_clear_error():
    script = textwrap.dedent(
        """
        import geventws
        from geventws.testing import NotPatchedError, serve
        try:
            with serve(geventws.Websocket(None, None, None, lambda *args: None)):
                pass
        except NotPatchedError as error:
            print(error)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "needs a gevent-monkey-patched process" in result.stdout
    assert "gevent.monkey.patch_all()" in result.stdout
    assert NotPatchedError.__mro__[1] is RuntimeError


PLUGIN_TEST = """
import geventws
from gevent import monkey


def echo(client, request, response):
    for message in client:
        client.send_text(str(message))


def test_patched():
    print("PATCHED", monkey.is_module_patched("socket"))


def test_fixture(geventws_serve):
    running = geventws_serve(geventws.Websocket(None, None, None, echo))
    client = running.connect()
    client.send("through the plugin")
    assert client.recv() == "through the plugin"
"""


def run_pytest(folder, *args):
    """pytest in a fresh process on ``folder`` (no conftest.py there): what a user's suite sees."""
    env = {key: value for key, value in os.environ.items() if key != "PYTEST_ADDOPTS"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", *args]
        + [str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=folder,
        env=env,
    )


def test_plugin_patches_at_startup_and_offers_the_fixture(tmp_path):
    (tmp_path / "test_user.py").write_text(PLUGIN_TEST)
    result = run_pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PATCHED True" in result.stdout
    assert "2 passed" in result.stdout


def test_plugin_opt_out_with_p_no_geventws(tmp_path):
    (tmp_path / "test_user.py").write_text(PLUGIN_TEST)
    result = run_pytest(tmp_path, "-p", "no:geventws", "-k", "test_patched")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PATCHED False" in result.stdout


def test_plugin_opt_out_of_patching_keeps_the_fixture(tmp_path):
    (tmp_path / "test_user.py").write_text(PLUGIN_TEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\ngeventws_patch = false\n")
    result = run_pytest(tmp_path)
    assert "PATCHED False" in result.stdout
    # The fixture is there, and serve() says why it cannot work unpatched.
    assert "NotPatchedError: geventws.testing needs a gevent-monkey-patched process" in result.stdout
