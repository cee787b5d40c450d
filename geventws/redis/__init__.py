"""Broadcast across processes and machines through Redis (or Valkey) pub/sub.

:class:`RedisGateway` has the interface of the local gateway; one gateway is
one Redis channel (a room).  Each send is delivered at once to this process's
clients through a local :class:`~geventws.gateway.WebsocketClientGateway`
(encode once, bounded outboxes, slow-consumer policy) and published once;
every other process subscribed to the channel delivers it to its own clients
the same way.  A process ignores the echo of its own messages.
:class:`RedisEmitter` publishes the same messages from a process without
WebSocket clients (no gevent, no server needed).

Guarantees of a delivery to another process:

- at most once, and in the order the publishing process sent them (per
  process and Redis: one publishing connection, one subscriber connection);
- lost while Redis is unreachable: publishes are dropped (counted, logged
  once), never queued without bound; local delivery goes on meanwhile;
- :class:`~geventws.SendResult` covers the local deliveries only.

Client ids are unique across the processes sharing a Redis: each process
claims its id node number (see ``client_ids`` in
:mod:`geventws.connection.ids`) as the key ``geventws:node:<n>``.

The message format is described in :mod:`geventws.redis.envelope`, so other
languages can publish too.
"""

from __future__ import annotations

try:  # here, before the modules that need it, to say what is missing
    import redis.backoff as _backoff  # noqa: F401
    import redis.retry as _retry  # noqa: F401
except ImportError as error:  # pragma: no cover - the extra is missing
    raise ImportError("geventws.redis needs redis-py: pip install 'geventws[redis]'") from error

from .emitter import RedisEmitter
from .envelope import FORMAT_VERSION, Envelope, EnvelopeError, decode_envelope, encode_envelope
from .gateway import RedisGateway, RedisUnavailableError

__all__ = [
    "FORMAT_VERSION",
    "Envelope",
    "EnvelopeError",
    "RedisEmitter",
    "RedisGateway",
    "RedisUnavailableError",
    "decode_envelope",
    "encode_envelope",
]
