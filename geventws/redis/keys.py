"""The names of the Redis keys geventws keeps, and the hash tag that puts a room's keys beside its channel.

Every key of a room carries its channel as a Redis Cluster hash tag,
``geventws:{<channel>}:<what>`` (``presence`` for the members), so that in a
cluster the room's keys and its sharded channel live on one shard.  A
channel that has a hash tag of its own (``room:{42}``) is hashed by that tag,
so its keys are ``geventws:{42}:room:{42}:<what>``: the same slot again.
"""

from __future__ import annotations


def hash_tag(name: str) -> str:
    """The part of ``name`` that Redis Cluster hashes: its first non-empty ``{...}``, else the whole name."""
    start = name.find("{")
    if start >= 0:
        end = name.find("}", start + 1)
        if end > start + 1:
            return name[start + 1 : end]
    return name


def room_key(channel: str, what: str) -> str:
    """The key of ``what`` for the room on ``channel``, in the slot of the channel."""
    tag = hash_tag(channel)
    if tag == channel and "{" not in channel and "}" not in channel:
        return f"geventws:{{{channel}}}:{what}"
    return f"geventws:{{{tag}}}:{channel}:{what}"


def node_key(node: int) -> str:
    """The key of a client id node number claim (see :mod:`.nodes`)."""
    return f"geventws:node:{node}"
