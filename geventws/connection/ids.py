"""Client ids unique across processes and machines, so a gateway shared through Redis can address them."""

from __future__ import annotations

import itertools
import os


class ClientIdSource:
    """Hands out client ids: a 21-bit node number of this process above a 32-bit counter.

    The node number is drawn at random per process (again in every forked
    child, so gunicorn workers differ); ids stay below 2**53 and so survive a
    trip through JavaScript numbers.  Two processes draw the same node number
    with probability about n**2 / 2**22 for n processes; :mod:`geventws.redis`
    claims node numbers in Redis to rule that out among the processes that
    share it.
    """

    def __init__(self) -> None:
        self.reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.reset)

    def reset(self, node: int | None = None) -> None:
        """Start a new id sequence, under ``node`` or a random node number."""
        self.node = node if node is not None else int.from_bytes(os.urandom(3), "big") & 0x1FFFFF
        self._counter = itertools.count(1)

    def next(self) -> int:
        """The next id of this process."""
        return (self.node << 32) | (next(self._counter) & 0xFFFFFFFF)


#: The process's one id source: every :class:`~geventws.WebsocketClient` takes its id here.
client_ids = ClientIdSource()
