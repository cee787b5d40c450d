"""geventws: a WebSocket server for gevent, WSGI and Flask users."""

from .acceptor import AllowOriginAcceptor, Rfc6455Acceptor, WebsocketAcceptor
from .client import TlsInfo, WebsocketClient
from .client_factory import Rfc6455ClientFactory, WebsocketClientFactory
from .close import CloseCode, WebsocketClosedException, WebsocketCloseInfo
from .compression import Rfc7692CompressionFactory
from .document_root import DocumentRoot
from .error_handler import DefaultErrorHandler, ErrorHandler
from .frames import EncodedMessage
from .gateway import (
    SendResult,
    SlowConsumerError,
    SlowConsumerPolicy,
    UnknownClientError,
    WebsocketClientGateway,
    WebsocketGateway,
)
from .handler import WebsocketClientHandler
from .heartbeat import PeriodicHeartbeat
from .message import MessageBufferLimitError, WebsocketMessage
from .rate_limit import ConstantRateLimit
from .router import Router
from .server import Server
from .signals import trap_signal
from .stats import WebsocketCount, WebsocketTimestamp
from .websocket import CompressionFactory, Websocket

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
