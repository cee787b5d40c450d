"""A real browser: Debian's Chromium, driven through selenium and Debian's chromium-driver.

The broadcast chat example runs as users run it (its own process on port 1337)
and two browser tabs chat through it; an in-process test server echoes a
1 MiB binary message back to a page script, and an 8 MiB one compressed
under a 16 MiB ``message_size_limit``.

Without a browser these tests are skipped, with the reason in pytest's summary;
``GEVENTWS_REQUIRE_BROWSER=1`` (set by ``.ci/run``) turns that skip into a failure.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import Running, broadcast_example, factory

import geventws

REQUIRE_BROWSER = os.environ.get("GEVENTWS_REQUIRE_BROWSER") == "1"
TIMEOUT = 30.0

#: Flags for a headless Chromium in a container: no sandbox (root), no GPU, and
#: nothing that reaches for the network on its own (updates, sync, QUIC probes).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def _find_browser() -> tuple[str, str] | str:
    """The Chromium and chromedriver executables, or why they cannot be used."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        return "no Chromium found (apt-get install chromium chromium-driver)"
    return chromium, driver


def _require_browser() -> tuple[str, str]:
    found = _find_browser()
    if isinstance(found, str):
        reason = f"browser tests skipped: {found}"
        if REQUIRE_BROWSER:
            pytest.fail(f"{reason}, and GEVENTWS_REQUIRE_BROWSER=1 requires them")
        pytest.skip(reason)
    return found


@pytest.fixture
def browser() -> Iterator[Any]:
    """A fresh headless Chromium with its own profile, quit after the test."""
    chromium, driver_path = _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="geventws-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        # A driver path given to Service means selenium never looks for (or downloads) one.
        driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
        driver.set_script_timeout(TIMEOUT)
        driver.set_page_load_timeout(TIMEOUT)
        try:
            yield driver
        finally:
            driver.quit()


def wait_for_text(driver: Any, text: str) -> str:
    """Wait until the current tab's chat log contains ``text``; return the whole log."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(driver, TIMEOUT).until(expected_conditions.text_to_be_present_in_element((By.ID, "log"), text))
    return str(driver.find_element(By.ID, "log").text)


@pytest.fixture
def chat_example() -> Iterator[subprocess.Popen[str]]:
    """examples/broadcast/server.py in its own process, stopped with SIGTERM or killed after the test."""
    with broadcast_example(pytest.fail if REQUIRE_BROWSER else pytest.skip) as process:
        yield process


def test_two_tabs_chat_both_ways_over_permessage_deflate_and_see_the_1001_on_stop(browser, chat_example):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get("http://127.0.0.1:1337/")
    first = browser.current_window_handle
    assert "Connected (permessage-deflate" in wait_for_text(browser, "Connected")
    assert browser.execute_script("return socket.extensions").startswith("permessage-deflate")

    browser.switch_to.new_window("tab")
    browser.get("http://127.0.0.1:1337/")
    second = browser.current_window_handle
    assert "Connected (permessage-deflate" in wait_for_text(browser, "Connected")

    # Typed and sent with Enter, as a person does; each tab sees both messages.
    browser.find_element(By.ID, "message").send_keys("hello from the second tab", Keys.ENTER)
    wait_for_text(browser, ": hello from the second tab")
    browser.switch_to.window(first)
    wait_for_text(browser, ": hello from the second tab")
    browser.find_element(By.ID, "message").send_keys("hello from the first tab", Keys.ENTER)
    wait_for_text(browser, ": hello from the first tab")
    browser.switch_to.window(second)
    log = wait_for_text(browser, ": hello from the first tab")
    assert log.index("hello from the second tab") < log.index("hello from the first tab")

    # SIGTERM: the example calls server.stop(), which closes every client with 1001.
    chat_example.send_signal(signal.SIGTERM)
    assert "Disconnected (1001: Server shutting down)." in wait_for_text(browser, "Disconnected (")
    browser.switch_to.window(first)
    assert "Disconnected (1001: Server shutting down)." in wait_for_text(browser, "Disconnected (")
    assert chat_example.wait(10) == 0


#: Sends ``size`` random bytes on a new WebSocket to ``path`` and resolves with
#: what came back: whether it is the same bytes, their SHA-256 and the extensions.
ROUND_TRIP_SCRIPT = """
const [path, size, done] = arguments;
const sent = new Uint8Array(size);
for (let offset = 0; offset < size; offset += 65536) {
  crypto.getRandomValues(sent.subarray(offset, offset + 65536));
}
const ws = new WebSocket(`ws://${location.host}${path}`);
ws.binaryType = "arraybuffer";
ws.onopen = () => ws.send(sent);
ws.onclose = (event) => done({error: `closed ${event.code} before the echo`});
ws.onmessage = async (event) => {
  ws.onclose = null;
  const received = new Uint8Array(event.data);
  const same = received.length === sent.length && received.every((byte, i) => byte === sent[i]);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", sent));
  const sha256 = Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join("");
  ws.close(1000);
  done({same, length: received.length, sha256, extensions: ws.extensions});
};
"""


@pytest.fixture
def echo_page(serve: Callable[..., Running]) -> tuple[Running, list[str]]:
    """A test server: ``/`` serves an empty page, ``/plain``, ``/deflate`` and
    ``/deflate-16mib`` (``message_size_limit`` 16 MiB) echo; the SHA-256 of each
    message the server received is recorded."""
    received: list[str] = []

    def echo(client: geventws.WebsocketClient, request: Any, response: Any) -> None:
        for message in client:
            data = message.buffer()
            assert isinstance(data, bytes)
            received.append(hashlib.sha256(data).hexdigest())
            client.send_binary(data)

    def page(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [b"<!doctype html><title>echo</title>"]

    @factory
    def app(server: geventws.Server) -> geventws.Router:
        router = geventws.Router(None, geventws.DefaultErrorHandler())
        router.add_route("GET", "/plain", geventws.Websocket(server, None, None, echo))
        deflate = geventws.Websocket(server, None, None, echo, compression_factory=geventws.Rfc7692CompressionFactory())
        router.add_route("GET", "/deflate", deflate)
        limits = geventws.Rfc6455ClientFactory(
            message_size_limit=16 * 2**20, frame_size_limit=16 * 2**20, rate_limit=None
        )
        compression = geventws.Rfc7692CompressionFactory()
        large = geventws.Websocket(server, None, None, echo, compression_factory=compression, client_factory=limits)
        router.add_route("GET", "/deflate-16mib", large)
        router.set_fallback(page)
        return router

    return serve(app), received


@pytest.mark.parametrize(
    ("path", "size", "extensions"),
    [
        ("/plain", 2**20, ""),
        ("/deflate", 2**20, "permessage-deflate"),
        # Over the 1 MiB compressed default: the message limit given holds for compressed messages too.
        ("/deflate-16mib", 8 * 2**20, "permessage-deflate"),
    ],
)
def test_a_large_binary_message_round_trips_from_a_page(browser, echo_page, path, size, extensions):
    running, received = echo_page
    browser.get(running.http_url + "/")

    result = browser.execute_async_script(ROUND_TRIP_SCRIPT, path, size)

    assert "error" not in result, result["error"]
    assert result["length"] == size
    assert result["same"] is True
    assert received == [result["sha256"]]
    assert result["extensions"].startswith(extensions)


#: Opens a WebSocket to ``url`` and resolves with its first message, or with the close code if refused.
FIRST_MESSAGE_SCRIPT = """
const [url, done] = arguments;
const ws = new WebSocket(url);
ws.onmessage = (event) => { ws.onclose = null; ws.close(1000); done({message: event.data}); };
ws.onclose = (event) => done({closed: event.code});
"""


def test_through_nginx_the_pages_own_origin_connects_and_another_sites_page_is_refused(
    browser, serve, tmp_path, caplog
):
    """docs/deployment.rst's nginx block on a high port, in front of a Flask route with the default origin check."""
    import logging

    from nginx_server import nginx_proxy, proxied_app

    caplog.set_level(logging.WARNING, logger="geventws.flask")
    running = serve(proxied_app())
    with nginx_proxy(tmp_path / "nginx", running.port) as port:
        chat = f"ws://127.0.0.1:{port}/chat"
        browser.get(f"http://127.0.0.1:{port}/")
        assert browser.execute_async_script(FIRST_MESSAGE_SCRIPT, chat) == {
            "message": f"http://127.0.0.1:{port} 127.0.0.1"
        }
        # Another origin: the same app reached on its own port is another site for the browser.
        browser.get(f"{running.http_url}/")
        assert browser.execute_async_script(FIRST_MESSAGE_SCRIPT, chat) == {"closed": 1006}
    [refusal] = [record.getMessage() for record in caplog.records if record.name == "geventws.flask"]
    assert f"Origin '{running.http_url}' is not this site's (http://127.0.0.1:{port})" in refusal
