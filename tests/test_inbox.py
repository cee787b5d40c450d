"""The inbox between a reader in the event loop and the handler waiting for its messages."""

import time

import gevent
import pytest

from geventws.connection.inbox import Inbox


def from_the_loop(function):
    """Run ``function`` in the hub, where readers call ``wake()``."""
    gevent.get_hub().loop.run_callback(function)


def test_a_message_wakes_the_waiting_handler():
    inbox = Inbox(direct_wakeup=True)
    waiting = gevent.spawn(inbox.get)
    gevent.sleep(0)
    message = object()
    from_the_loop(lambda: (inbox.put(message), inbox.wake()))
    assert waiting.get(timeout=1) is message


def test_close_wakes_the_waiting_handler_with_none():
    inbox = Inbox(direct_wakeup=True)
    waiting = gevent.spawn(inbox.get)
    gevent.sleep(0)
    inbox.close()
    assert waiting.get(timeout=1) is None


def test_a_close_after_the_handler_was_woken_does_not_wake_its_next_wait():
    inbox = Inbox(direct_wakeup=True)
    message = object()
    slept = []

    def handler():
        got = inbox.get()
        started = time.monotonic()
        gevent.sleep(0.2)  # the close's wake-up, run meanwhile, must not end this early
        slept.append(time.monotonic() - started)
        return got

    waiting = gevent.spawn(handler)
    gevent.sleep(0)
    from_the_loop(lambda: (inbox.put(message), inbox.wake()))
    inbox.close()  # its wake-up runs after the message's
    assert waiting.get(timeout=2) is message
    assert slept[0] >= 0.19
    assert inbox.get() is None


def test_a_timeout_raises_timeout_error_and_a_later_message_is_still_taken():
    inbox = Inbox(direct_wakeup=True)
    with pytest.raises(TimeoutError, match="No message within the timeout"):
        inbox.get(timeout=0.05)
    message = object()
    from_the_loop(lambda: (inbox.put(message), inbox.wake()))
    gevent.sleep(0.01)
    assert inbox.get(timeout=1) is message
