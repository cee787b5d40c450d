"""What the socket says about the other end: its addresses and what TLS negotiated."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TlsInfo:
    """What the TLS layer of a ``wss://`` connection negotiated."""

    version: str | None
    cipher: str | None
    alpn_protocol: str | None
    peer_certificate: dict[str, Any] | None


def address(getter: Callable[[], Any]) -> Any:
    """``getpeername()`` or ``getsockname()``, or ``None`` once the socket is gone."""
    try:
        return getter()
    except OSError:
        return None


#: Local addresses seen so far, one tuple each: every connection of a listener has the same
#: one (about 140 bytes less per idle connection, ``bench/quiet.py idle``).  Bounded: a server
#: listens on few addresses; past the bound each connection keeps its own.
_LOCAL_ADDRESSES_LIMIT = 64
_local_addresses: dict[Any, Any] = {}


def local_address(sock: Any) -> Any:
    """``getsockname()``, shared with the other connections of the same listener; ``None`` once the socket is gone."""
    found = address(sock.getsockname)
    if found is None:
        return None
    try:
        shared = _local_addresses.get(found)
    except TypeError:  # not hashable: an unusual address family
        return found
    if shared is not None:
        return shared
    if len(_local_addresses) < _LOCAL_ADDRESSES_LIMIT:
        _local_addresses[found] = found
    return found


def tls_info(sock: Any) -> TlsInfo | None:
    """What TLS negotiated on ``sock``, or ``None`` on a plain socket."""
    if not hasattr(sock, "version") or not hasattr(sock, "cipher"):
        return None
    cipher = sock.cipher()
    return TlsInfo(
        version=sock.version(),
        cipher=cipher[0] if cipher else None,
        alpn_protocol=sock.selected_alpn_protocol(),
        peer_certificate=sock.getpeercert() or None,
    )
