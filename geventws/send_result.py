"""What a gateway send hands back at once: a handle on its deliveries, by client id, and why one failed."""

from __future__ import annotations

from gevent.event import Event


class SlowConsumerError(Exception):
    """A message was not delivered because the client could not keep up."""


class UnknownClientError(LookupError):
    """The client id is not (or no longer) in the gateway."""


class ClientRemovedError(Exception):
    """A message was not delivered because the client left the gateway (it may still be connected)."""


class SendResult:
    """The outcome of one gateway send, by client id; wait for it or ignore it."""

    #: The offset of a broadcast to a room with history (None otherwise): what a
    #: client that saw this message resumes from.
    offset: str | None = None

    def __init__(self, expected: int) -> None:
        self._pending = expected
        self.successes: list[int] = []
        self.errors: dict[int, BaseException] = {}
        self._done = Event()
        if expected == 0:
            self._done.set()

    @property
    def done(self) -> bool:
        """Whether every delivery has finished or failed."""
        return bool(self._done.is_set())

    def wait(self, timeout: float | None = None) -> SendResult:
        """Wait until every client's write finished or failed; :class:`TimeoutError` otherwise."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self._pending} deliveries still pending")
        return self

    def _succeed(self, client_id: int) -> None:
        self.successes.append(client_id)
        self._resolve()

    def _succeed_all(self, client_ids: list[int]) -> None:
        self.successes += client_ids
        self._resolve(len(client_ids))

    def _fail(self, client_id: int, error: BaseException) -> None:
        self.errors[client_id] = error
        self._resolve()

    def _resolve(self, count: int = 1) -> None:
        self._pending -= count
        if self._pending == 0:
            self._done.set()
