"""Groups of clients for broadcasting, on a greenlet pool that one slow client cannot stall.

Concurrency guarantees of :class:`WebsocketClientGateway`:

- Every send returns at once with a :class:`~geventws.SendResult`; the writes happen on
  the gateway's pool, at most one greenlet per client at a time, so whatever
  the gateway sends to one client arrives in the order it was sent.
- Each client's pending data is bounded (bytes and messages).  A client that
  falls behind is closed (1013 by default) or loses its oldest pending
  messages; either way the others are not delayed and memory stays bounded.
- A broadcast to clients without compression serializes the message once
  and writes the same bytes to every socket.
- Clients leave the gateway when they close, whichever side closed, or when
  :meth:`~geventws.WebsocketClientGateway.remove_client` takes them out (they stay
  connected and may join again); what was pending for them is dropped and
  resolved in its results.  A send racing a close or a removal is reported
  in the result, never raised to the caller.
- With ``history``, every broadcast gets an offset and the last ones are
  kept (see :mod:`geventws.history`): a client added with ``since=offset``
  gets what it missed, in order, then the live messages, none twice.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from gevent.pool import Pool

from .connection.client import WebsocketClient
from .connection.fanout import write_clients_nowait
from .history import BinaryPayload, History, TextPayload, messages_after, resolve
from .protocol.close import CloseCode, WebsocketClosedException, WebsocketCloseInfo
from .protocol.engine import DEFAULT_FRAME_SPLIT_THRESHOLD
from .protocol.frames import EncodedMessage
from .send_result import ClientRemovedError as ClientRemovedError
from .send_result import SendResult as SendResult
from .send_result import SlowConsumerError as SlowConsumerError
from .send_result import UnknownClientError as UnknownClientError

logger = logging.getLogger("geventws.gateway")

#: 1 MiB pending per client: a few seconds of a busy chat; a broadcast of large
#: messages to a stalled client costs at most this much before the policy applies.
DEFAULT_MAX_PENDING_BYTES = 1024 * 1024
DEFAULT_MAX_PENDING_MESSAGES = 1024


class SlowConsumerPolicy(enum.Enum):
    """What happens to a client whose pending data would exceed the bounds."""

    CLOSE = "close"  # close it with the gateway's slow-consumer close code
    DROP_OLDEST = "drop_oldest"  # discard its oldest pending messages to make room


class WebsocketGateway(Protocol):
    """What every gateway offers: the local one and :mod:`geventws.redis`'s.

    Sends return a :class:`~geventws.SendResult` at once; delivery happens in the background.
    """

    def add_client(self, client: WebsocketClient, since: str | None = None) -> None:
        """Add ``client``, first sending it what was broadcast after ``since``; it leaves when it closes."""
        ...

    def remove_client(self, client: WebsocketClient) -> None:
        """Take ``client`` out: it gets nothing more from this gateway, stays connected and may join again."""
        ...

    def count_clients(self) -> int:
        """How many clients are in the gateway (in every process, for a gateway that spans processes)."""
        ...

    def get_client_ids(self) -> set[int]:
        """The ids of the clients in the gateway (in every process, for a gateway that spans processes)."""
        ...

    def broadcast_text(self, data: TextPayload, exclude: Iterable[int] = ()) -> SendResult:
        """Send ``data`` (or ``data(offset)``) to every client but those in ``exclude``."""
        ...

    def broadcast_binary(self, data: BinaryPayload, exclude: Iterable[int] = ()) -> SendResult:
        """Send ``data`` (or ``data(offset)``) to every client but those in ``exclude``."""
        ...

    def multicast_text(self, data: str, client_ids: Iterable[int]) -> SendResult:
        """Send ``data`` to the clients in ``client_ids`` (unknown ids are skipped)."""
        ...

    def multicast_binary(self, data: bytes, client_ids: Iterable[int]) -> SendResult:
        """Send ``data`` to the clients in ``client_ids`` (unknown ids are skipped)."""
        ...

    def send_text(self, data: str, client_id: int) -> SendResult:
        """Send ``data`` to one client; an unknown id fails the result with :class:`UnknownClientError`."""
        ...

    def send_binary(self, data: bytes, client_id: int) -> SendResult:
        """Send ``data`` to one client; an unknown id fails the result with :class:`UnknownClientError`."""
        ...

    def get_clients(self) -> dict[int, WebsocketClient]:
        """The clients in the gateway, by id (a copy)."""
        ...


class _Outbox:
    """One client's pending gateway messages; drained by at most one greenlet."""

    __slots__ = ("client", "_items", "size", "draining", "closed")

    def __init__(self, client: WebsocketClient) -> None:
        self.client = client
        self._items: deque[tuple[EncodedMessage, int, SendResult, bool]] | None = None
        self.size = 0
        self.draining = False
        self.closed = False

    @property
    def items(self) -> deque[tuple[EncodedMessage, int, SendResult, bool]]:
        """(message, size, result, begun: its rest is with the writer), made when one first waits (~600 bytes)."""
        if self._items is None:
            self._items = deque()
        return self._items


class WebsocketClientGateway:
    """Sends to groups of clients; clients may be in several gateways at once.

    ``history``: how many of the last broadcasts to keep for clients that come
    back (0, the default, keeps none and gives broadcasts no offset); see
    :mod:`geventws.history` for what they cost.
    """

    def __init__(
        self,
        *,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        max_pending_messages: int = DEFAULT_MAX_PENDING_MESSAGES,
        slow_consumer_policy: SlowConsumerPolicy = SlowConsumerPolicy.CLOSE,
        slow_consumer_close_code: int = CloseCode.TRY_AGAIN_LATER,
        frame_split_threshold: int = DEFAULT_FRAME_SPLIT_THRESHOLD,
        pool: Pool | None = None,
        history: int = 0,
    ) -> None:
        #: The kept broadcasts, or None without history.
        self.history = History(history) if history else None
        self.max_pending_bytes = max_pending_bytes
        self.max_pending_messages = max_pending_messages
        self.slow_consumer_policy = slow_consumer_policy
        self.slow_consumer_close_code = slow_consumer_close_code
        self._split = frame_split_threshold
        self._pool = pool if pool is not None else Pool()
        self._outboxes: dict[int, _Outbox] = {}
        self._watched: set[int] = set()  # clients whose close this gateway already listens for
        self._remove_callback = self._remove  # one bound method for every client, not one each
        #: Messages written whole to one client, since the gateway was made (read by :mod:`geventws.metrics`).
        self.deliveries = 0
        #: Clients closed for being too slow.
        self.slow_consumer_closes = 0
        #: Pending messages dropped for slow clients (:attr:`SlowConsumerPolicy.DROP_OLDEST`).
        self.slow_consumer_drops = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes queued for clients whose sockets are full, across all clients."""
        return sum(outbox.size for outbox in self._outboxes.values())

    def add_client(self, client: WebsocketClient, since: str | None = None) -> None:
        """Add ``client`` (again: no effect); it leaves by itself when it closes, whichever side closed.

        With ``since``, the offset of the last broadcast the client saw, it
        first gets every broadcast after it, through its outbox like any
        other message; :class:`~geventws.history.HistoryGap` (and the client
        is not added) when the history no longer holds them all.
        """
        missed = () if since is None else messages_after(self.history, since)
        if client.id in self._outboxes or client.is_closed:
            return
        outbox = self._outboxes[client.id] = _Outbox(client)
        if client.id not in self._watched:  # once per client, however often it joins and leaves
            self._watched.add(client.id)
            client.on_close(self._remove_callback)
        for data in missed:  # no greenlet switch since the history was read: no gap, nothing twice
            self._send(data, [outbox])

    def remove_client(self, client: WebsocketClient) -> None:
        """Take ``client`` out at once (not in the gateway: no effect); it stays connected and may join again.

        What was pending for it is dropped, each result failing with
        :class:`ClientRemovedError`; only a message whose first bytes are
        already on the wire is finished, so the connection stays well framed.
        """
        outbox = self._outboxes.pop(client.id, None)
        if outbox is None:
            return
        outbox.closed = True
        items = outbox.items
        error = ClientRemovedError(f"Client {client.id} left the gateway")
        while items and not (len(items) == 1 and items[0][3]):  # only the first can be begun
            _, size, result, _ = items.pop()
            outbox.size -= size
            result._fail(client.id, error)

    def get_clients(self) -> dict[int, WebsocketClient]:
        """The clients in the gateway, by id (a copy)."""
        return {client_id: outbox.client for client_id, outbox in self._outboxes.items()}

    def count_clients(self) -> int:
        """How many clients are in the gateway."""
        return len(self._outboxes)

    def get_client_ids(self) -> set[int]:
        """The ids of the clients in the gateway."""
        return set(self._outboxes)

    def broadcast_text(self, data: TextPayload, exclude: Iterable[int] = ()) -> SendResult:
        """Send ``data`` to every client but those in ``exclude``, encoded once for all of them.

        ``data`` may be a function of the broadcast's offset that returns the
        message (it gets ``""`` when the gateway keeps no history).
        """
        if self.history is None:
            return self._send(data("") if callable(data) else data, self._all_but(exclude))
        return self._broadcast_kept(data, exclude)

    def broadcast_binary(self, data: BinaryPayload, exclude: Iterable[int] = ()) -> SendResult:
        """Send ``data`` (or ``data(offset)``) to every client but those in ``exclude``, encoded once for all."""
        if self.history is None:
            return self._send(bytes(data("") if callable(data) else data), self._all_but(exclude))
        return self._broadcast_kept(data, exclude)

    def _broadcast_kept(self, data: TextPayload | BinaryPayload, exclude: Iterable[int]) -> SendResult:
        history = self.history
        assert history is not None
        offset = history.next_offset()
        message = resolve(data, offset)
        message = message if isinstance(message, str) else bytes(message)
        history.append(message)
        result = self._send(message, self._all_but(exclude))
        result.offset = offset
        return result

    def multicast_text(self, data: str, client_ids: Iterable[int]) -> SendResult:
        """Send ``data`` to the clients in ``client_ids``; ids not in the gateway are skipped."""
        return self._send(data, self._known(client_ids))

    def multicast_binary(self, data: bytes, client_ids: Iterable[int]) -> SendResult:
        """Send ``data`` to the clients in ``client_ids``; ids not in the gateway are skipped."""
        return self._send(bytes(data), self._known(client_ids))

    def send_text(self, data: str, client_id: int) -> SendResult:
        """Send ``data`` to one client; an unknown id fails the result with :class:`UnknownClientError`."""
        return self._send_one(data, client_id)

    def send_binary(self, data: bytes, client_id: int) -> SendResult:
        """Send ``data`` to one client; an unknown id fails the result with :class:`UnknownClientError`."""
        return self._send_one(bytes(data), client_id)

    def _all_but(self, exclude: Iterable[int]) -> list[_Outbox]:
        excluded = set(exclude)
        return [outbox for client_id, outbox in self._outboxes.items() if client_id not in excluded]

    def _known(self, client_ids: Iterable[int]) -> list[_Outbox]:
        outboxes = self._outboxes
        return [outboxes[client_id] for client_id in dict.fromkeys(client_ids) if client_id in outboxes]

    def _send_one(self, data: str | bytes, client_id: int) -> SendResult:
        outbox = self._outboxes.get(client_id)
        if outbox is None:
            result = SendResult(1)
            result._fail(client_id, UnknownClientError(f"No client {client_id} in this gateway"))
            return result
        return self._send(data, [outbox])

    def _send(self, data: str | bytes, outboxes: list[_Outbox]) -> SendResult:
        result = SendResult(len(outboxes))
        if not outboxes:
            return result
        message = EncodedMessage.encode(data, self._split)  # once for every recipient
        size = len(message.wire)
        idle = [outbox for outbox in outboxes if not (outbox.draining or outbox.closed)]
        # Behind earlier messages, or gone: mostly none, and then not looked for.
        behind = [box for box in outboxes if box.draining or box.closed] if len(idle) < len(outboxes) else ()
        done, rest = write_clients_nowait(message, [outbox.client for outbox in idle])  # written at once
        result._succeed_all(done)
        self.deliveries += len(done)
        for index, written in rest:
            outbox = idle[index]
            if written < 0:  # idle, but not written to: one by one, no pool greenlet unless the socket is full
                written = self._begin(outbox, message, result)
                if written < 0:
                    continue  # written whole, or failed (both reported)
            self._queue(outbox, message, size - written, result, written > 0)
        for outbox in behind:
            if self._make_room(outbox, size, result):
                self._queue(outbox, message, size, result, False)
        return result

    def _queue(self, outbox: _Outbox, message: EncodedMessage, size: int, result: SendResult, begun: bool) -> None:
        """Leave ``size`` bytes of ``message`` (the rest of it when ``begun``) for the client's drainer."""
        outbox.items.append((message, size, result, begun))
        outbox.size += size
        if not outbox.draining:
            outbox.draining = True
            self._pool.spawn(self._drain, outbox)

    def _begin(self, outbox: _Outbox, message: EncodedMessage, result: SendResult) -> int:
        """Try to write without blocking: bytes written (0: queue it whole; the writer holds the rest), -1 when done."""
        client = outbox.client
        if client.is_compression_enabled:
            return 0  # compressed per connection: encoded in the pool greenlet
        try:
            written = client.writer.write_nowait(message)
        except WebsocketClosedException as error:
            result._fail(client.id, error)
            self._discard(outbox, error)
            return -1
        if written == len(message.wire):
            result._succeed(client.id)
            self.deliveries += 1
            return -1
        return max(written, 0)

    def _make_room(self, outbox: _Outbox, size: int, result: SendResult) -> bool:
        """Apply the slow-consumer policy; False if this message is not queued."""
        client_id = outbox.client.id
        if outbox.closed:
            result._fail(client_id, WebsocketClosedException(CloseCode.ABNORMAL_CLOSE, "Client left the gateway"))
            return False
        if self._fits(outbox, size):
            return True
        if self.slow_consumer_policy is SlowConsumerPolicy.DROP_OLDEST:
            dropped = 0
            while outbox.items and not outbox.items[0][3] and not self._fits(outbox, size):
                _, old_size, old_result, _ = outbox.items.popleft()
                outbox.size -= old_size
                old_result._fail(client_id, SlowConsumerError("Dropped: the client is too slow"))
                dropped += 1
            logger.warning("%r is too slow: dropped %d pending messages", outbox.client, dropped)
            self.slow_consumer_drops += dropped
            if self._fits(outbox, size) or not outbox.items:
                return True
        logger.warning(
            "%r is too slow (%d bytes, %d messages pending): closing with %d",
            outbox.client,
            outbox.size,
            len(outbox.items),
            self.slow_consumer_close_code,
        )
        self.slow_consumer_closes += 1
        self._discard(outbox, SlowConsumerError("The client was closed for being too slow"))
        result._fail(client_id, SlowConsumerError("The client was closed for being too slow"))
        self._pool.spawn(outbox.client.close, self.slow_consumer_close_code, "Client too slow")
        return False

    def _fits(self, outbox: _Outbox, size: int) -> bool:
        return outbox.size + size <= self.max_pending_bytes and len(outbox.items) < self.max_pending_messages

    def _drain(self, outbox: _Outbox) -> None:
        client = outbox.client
        items = outbox.items
        try:
            while items:
                message, size, result, begun = items.popleft()
                outbox.size -= size
                try:
                    if begun:
                        client.writer.flush()
                    else:
                        client.send_encoded(message)
                except WebsocketClosedException as error:
                    result._fail(client.id, error)
                    self._discard(outbox, error)
                    return
                except Exception as error:  # never let one client's failure escape the pool
                    logger.exception("Sending to %r failed", client)
                    result._fail(client.id, error)
                else:
                    result._succeed(client.id)
                    self.deliveries += 1
        finally:
            outbox.draining = False

    def _discard(self, outbox: _Outbox, error: BaseException) -> None:
        """Stop sending to this client: fail what is pending and forget it."""
        outbox.closed = True
        if self._outboxes.get(outbox.client.id) is outbox:  # not a later join of the same client
            del self._outboxes[outbox.client.id]
        while outbox.items:
            _, _, result, _ = outbox.items.popleft()
            result._fail(outbox.client.id, error)
        outbox.size = 0

    def _remove(self, client: WebsocketClient, info: WebsocketCloseInfo) -> None:
        self._watched.discard(client.id)
        outbox = self._outboxes.get(client.id)
        if outbox is not None:
            self._discard(outbox, WebsocketClosedException(info.code, info.reason))
