"""geventws: a WebSocket server for gevent, WSGI and Flask users."""

from .connection.client import TlsInfo, WebsocketClient
from .connection.client_factory import Rfc6455ClientFactory, WebsocketClientFactory
from .connection.heartbeat import PeriodicHeartbeat
from .connection.message import MessageBufferLimitError, WebsocketMessage
from .connection.rate_limit import ConstantRateLimit
from .connection.stats import WebsocketCount, WebsocketTimestamp
from .gateway import (
    SendResult,
    SlowConsumerError,
    SlowConsumerPolicy,
    UnknownClientError,
    WebsocketClientGateway,
    WebsocketGateway,
)
from .http.acceptor import AllowOriginAcceptor, Rfc6455Acceptor, WebsocketAcceptor
from .http.client_handler import WebsocketClientHandler
from .http.document_root import DocumentRoot
from .http.endpoint import CompressionFactory, Websocket
from .http.error_handler import DefaultErrorHandler, ErrorHandler
from .http.router import Router
from .http.server import Server
from .protocol.close import CloseCode, WebsocketClosedException, WebsocketCloseInfo
from .protocol.deflate import Rfc7692CompressionFactory
from .protocol.frames import EncodedMessage
from .signals import trap_signal

__version__ = "0.1.0"

__all__ = [
    "AllowOriginAcceptor",
    "CloseCode",
    "CompressionFactory",
    "ConstantRateLimit",
    "DefaultErrorHandler",
    "DocumentRoot",
    "EncodedMessage",
    "ErrorHandler",
    "MessageBufferLimitError",
    "PeriodicHeartbeat",
    "Rfc6455Acceptor",
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
