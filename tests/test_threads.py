"""A client served by an OS thread on that thread's own hub: calls from other threads run on the owning hub.

The test process is monkey-patched, so the owning thread is started as a
real OS thread through gevent's originals; the peer is a hand-driven socket.
"""

from __future__ import annotations

import socket
from typing import Any

import gevent
import gevent.monkey
import gevent.socket
import pytest
from conftest import masked_frame, read_frame

from geventws import WebsocketClient, WebsocketClosedException
from geventws.connection import writer
from geventws.connection.threads import serve_on_this_thread
from geventws.protocol.engine import LeanEngine
from geventws.protocol.limits import MessageLimits

get_ident = gevent.monkey.get_original("threading", "get_ident")
start_thread = gevent.monkey.get_original("_thread", "start_new_thread")
allocate_lock = gevent.monkey.get_original("_thread", "allocate_lock")


class RecordingEngine(LeanEngine):
    """Notes the OS thread each message is encoded in: the writer runs where the engine does."""

    threads: list[int]

    def encode(self, data: str | bytes, fin: bool = True) -> Any:
        self.threads.append(get_ident())
        return super().encode(data, fin)


def serve_in_a_thread(handler: Any) -> tuple[WebsocketClient, socket.socket, dict[str, Any]]:
    """A thread-served client over one end of a socket pair, running ``handler(client)``; the other end."""
    server_end, peer_end = socket.socketpair()  # gevent's sockets here, as the process is patched
    raw_fd = server_end.detach()
    started, done = allocate_lock(), allocate_lock()
    started.acquire()
    done.acquire()
    state: dict[str, Any] = {"done": done}

    def run() -> None:
        engine = RecordingEngine(MessageLimits(1 << 20, 1 << 20))
        engine.threads = []
        client = WebsocketClient(gevent.socket.socket(fileno=raw_fd), engine, close_period=0.5)
        state.update(client=client, engine=engine, thread=get_ident(), owner=serve_on_this_thread(client))
        client.start()
        started.release()
        try:
            handler(client)
        finally:  # as the endpoint ends a connection
            client.close()
            client.abort()
            client.wait_closed()
            state["owner"].close()
            gevent.get_hub().destroy(destroy_loop=True)
            done.release()

    start_thread(run, ())
    while not started.acquire(False):
        gevent.sleep(0.01)
    return state["client"], peer_end, state


def wait_for_thread(state: dict[str, Any]) -> None:
    with gevent.Timeout(10):
        while not state["done"].acquire(False):
            gevent.sleep(0.01)


def echo(client: WebsocketClient) -> None:
    for message in client:
        client.send_text(f"echo {message}")


def test_a_send_from_another_thread_runs_on_the_owning_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # A small message is encoded and sent by send_frame, a larger one by the engine: record both.
    sent: list[int] = []
    send_frame = writer.send_frame

    def recording_send_frame(sock: Any, data: str | bytes, limit: int) -> Any:
        sent.append(get_ident())
        return send_frame(sock, data, limit)

    monkeypatch.setattr(writer, "send_frame", recording_send_frame)
    client, peer, state = serve_in_a_thread(echo)
    client.send_text("from the main thread")  # this test runs on the main thread's hub
    assert read_frame(peer.recv) == (0x81, b"from the main thread")
    peer.sendall(masked_frame(0x1, b"hi"))
    assert read_frame(peer.recv) == (0x81, b"echo hi")
    closing = gevent.spawn(client.close, 1000, "done")  # from here too: the handshake runs on the owner's hub
    assert read_frame(peer.recv) == (0x88, b"\x03\xe8done")
    peer.sendall(masked_frame(0x8, b"\x03\xe8"))
    closing.join(5)
    assert closing.successful()
    wait_for_thread(state)
    assert sent + state["engine"].threads == [state["thread"], state["thread"]]
    assert client.close_info is not None and client.close_info.code == 1000
    peer.close()


def test_calls_after_the_owning_thread_ended_fail_at_once() -> None:
    client, peer, state = serve_in_a_thread(lambda client: client.receive())
    peer.sendall(masked_frame(0x1, b"bye"))
    wait_for_thread(state)
    with gevent.Timeout(5), pytest.raises(WebsocketClosedException):
        client.send_text("too late")
    client.close()  # returns: its thread closed it already
    peer.close()
