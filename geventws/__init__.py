"""geventws: a WebSocket server for gevent, WSGI and Flask users.

Every public name is importable from here.  They are loaded on first use
(PEP 562), so that ``import geventws.protocol`` -- the sans-I/O core -- does
not pull in gevent or werkzeug.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0.dev0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "AllowOriginAcceptor": "http.acceptor",
    "Rfc6455Acceptor": "http.acceptor",
    "SameOriginAcceptor": "http.acceptor",
    "WebsocketAcceptor": "http.acceptor",
    "TlsInfo": "connection.peer",
    "WebsocketClient": "connection.client",
    "Rfc6455ClientFactory": "connection.client_factory",
    "WebsocketClientFactory": "connection.client_factory",
    "CloseCode": "protocol.close",
    "WebsocketClosedException": "protocol.close",
    "WebsocketCloseInfo": "protocol.close",
    "Rfc7692CompressionFactory": "protocol.deflate",
    "DocumentRoot": "http.document_root",
    "DefaultErrorHandler": "http.error_handler",
    "ErrorHandler": "http.error_handler",
    "EncodedMessage": "protocol.frames",
    "HistoryGap": "history",
    "ClientRemovedError": "send_result",
    "SendResult": "send_result",
    "SlowConsumerError": "send_result",
    "SlowConsumerPolicy": "gateway",
    "UnknownClientError": "send_result",
    "WebsocketClientGateway": "gateway",
    "WebsocketGateway": "gateway",
    "WebsocketClientHandler": "http.client_handler",
    "PeriodicHeartbeat": "connection.heartbeat",
    "MessageBufferLimitError": "connection.message",
    "MessageDiscardedError": "connection.message",
    "WebsocketMessage": "connection.message",
    "ConstantRateLimit": "connection.rate_limit",
    "Router": "http.router",
    "Server": "http.server",
    "trap_signal": "signals",
    "WebsocketCount": "connection.stats",
    "WebsocketTimestamp": "connection.stats",
    "CompressionFactory": "http.endpoint",
    "Websocket": "http.endpoint",
}

__all__ = [
    "AllowOriginAcceptor",
    "ClientRemovedError",
    "CloseCode",
    "CompressionFactory",
    "ConstantRateLimit",
    "DefaultErrorHandler",
    "DocumentRoot",
    "EncodedMessage",
    "ErrorHandler",
    "HistoryGap",
    "MessageBufferLimitError",
    "MessageDiscardedError",
    "PeriodicHeartbeat",
    "Rfc6455Acceptor",
    "SameOriginAcceptor",
    "Rfc6455ClientFactory",
    "Rfc7692CompressionFactory",
    "Router",
    "SendResult",
    "Server",
    "SlowConsumerError",
    "SlowConsumerPolicy",
    "TlsInfo",
    "UnknownClientError",
    "Websocket",
    "WebsocketAcceptor",
    "WebsocketClient",
    "WebsocketClientFactory",
    "WebsocketClientGateway",
    "WebsocketClientHandler",
    "WebsocketCloseInfo",
    "WebsocketClosedException",
    "WebsocketCount",
    "WebsocketGateway",
    "WebsocketMessage",
    "WebsocketTimestamp",
    "trap_signal",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'geventws' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .connection.client import WebsocketClient
    from .connection.client_factory import Rfc6455ClientFactory, WebsocketClientFactory
    from .connection.heartbeat import PeriodicHeartbeat
    from .connection.message import MessageBufferLimitError, MessageDiscardedError, WebsocketMessage
    from .connection.peer import TlsInfo
    from .connection.rate_limit import ConstantRateLimit
    from .connection.stats import WebsocketCount, WebsocketTimestamp
    from .gateway import SlowConsumerPolicy, WebsocketClientGateway, WebsocketGateway
    from .history import HistoryGap
    from .http.acceptor import AllowOriginAcceptor, Rfc6455Acceptor, SameOriginAcceptor, WebsocketAcceptor
    from .http.client_handler import WebsocketClientHandler
    from .http.document_root import DocumentRoot
    from .http.endpoint import CompressionFactory, Websocket
    from .http.error_handler import DefaultErrorHandler, ErrorHandler
    from .http.router import Router
    from .http.server import Server
    from .protocol.close import CloseCode, WebsocketClosedException, WebsocketCloseInfo
    from .protocol.deflate import Rfc7692CompressionFactory
    from .protocol.frames import EncodedMessage
    from .send_result import ClientRemovedError, SendResult, SlowConsumerError, UnknownClientError
    from .signals import trap_signal
