"""Shared by every echo server script: arguments, limits, the broadcast trigger, readiness.

Each script under this folder is one server, started by ``bench/run.py`` as
``python bench/servers/NAME.py PORT [--deflate] [--defaults]``.  Every server:

- echoes each message back with the same type (text as text, binary as binary);
- on the text message ``broadcast:<n>`` sends ``n`` bytes (one binary message)
  to every *other* connected client instead of echoing;
- geventws' scripts answer the text message ``stats`` with :func:`process_stats`;
- is configured alike: no compression unless ``--deflate``, no inbound rate
  limit, no heartbeat, message size limit ``MESSAGE_LIMIT``;
- prints one line ``READY {json}`` on stdout once it listens, then nothing more
  on stdout (logs go to stderr).

Scripts that use gevent monkey-patch *before* importing this module.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys

HOST = "127.0.0.1"
#: The same message limit for every server (16 MiB): larger than the biggest
#: message of the matrix (1 MiB), so it only proves every server has one.
MESSAGE_LIMIT = 16 * 1024 * 1024
BROADCAST_PREFIX = "broadcast:"


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("port", type=int)
    parser.add_argument("--deflate", action="store_true", help="enable permessage-deflate (RFC 7692)")
    parser.add_argument("--defaults", action="store_true", help="the library's shipped defaults (geventws only)")
    args = parser.parse_args()
    raise_nofile()
    return args


def raise_nofile(want: int = 65536) -> int:
    """Raise RLIMIT_NOFILE (to ``want`` where allowed, else to the hard limit): the idle scenario holds 10k sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, hard), max(want, hard)))
    except (ValueError, OSError):
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def broadcast_size(message: object) -> int | None:
    """``n`` for a ``broadcast:<n>`` text message, else ``None``."""
    if isinstance(message, str) and message.startswith(BROADCAST_PREFIX):
        return int(message[len(BROADCAST_PREFIX) :])
    return None


_SNAPSHOT: list[object] = []


def process_stats(top: int = 0) -> str:
    """The answer to the text message ``stats[:top]`` (``bench/quiet.py``): memory and objects, as JSON.

    Traced (``PYTHONTRACEMALLOC``), ``top`` > 0 adds the ``top`` source lines whose
    allocations grew most since the previous call.
    """
    import gc
    import os
    import tracemalloc

    lines = []
    if tracemalloc.is_tracing() and top:
        snapshot = tracemalloc.take_snapshot()
        if _SNAPSHOT:
            lines = [str(stat) for stat in snapshot.compare_to(_SNAPSHOT.pop(), "lineno")[:top]]
        _SNAPSHOT.append(snapshot)

    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
    return json.dumps(
        {"rss_bytes": rss, "tracemalloc_bytes": traced, "gc_objects": len(gc.get_objects()), "top": lines}
    )


def broadcast_payload(size: int) -> bytes:
    return b"b" * size


def ready(**config: object) -> None:
    config.setdefault("message_limit", MESSAGE_LIMIT)
    config["nofile"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    sys.stdout.write("READY " + json.dumps(config, default=str) + "\n")
    sys.stdout.flush()
