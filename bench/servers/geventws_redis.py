"""geventws broadcasting through Redis: this process, peer processes and a Redis-protocol server or cluster.

``python geventws_redis.py PORT [--processes N] [--cluster]`` starts
valkey-server (or redis-server) on a free port, or with ``--cluster`` a
three-shard valkey cluster (sharded pub/sub), N - 1 peers (``geventws_server.py
--redis``, 2 processes in all by default) on other ports, then becomes (exec)
``geventws_server.py PORT --redis URL --peer-url PEER...``: the runner
measures this pid, and the loadgen spreads its clients over every URL of the
READY config.  The helpers die with this process (``PR_SET_PDEATHSIG``), so
the runner's kill stops them all.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))  # the tests' Redis server helper

from redis_server import RedisProcess, free_port, server_binary  # noqa: E402
from redis_topologies import Cluster  # noqa: E402

_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """In the helpers: die with this process, and run on any core (the runner pins this one to the server core)."""
    _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    os.sched_setaffinity(0, range(os.cpu_count() or 1))


def main() -> None:
    port, rest = sys.argv[1], sys.argv[2:]
    processes, cluster = 2, "--cluster" in rest
    if "--processes" in rest:
        at = rest.index("--processes")
        processes = int(rest[at + 1])
        del rest[at : at + 2]
    rest = [arg for arg in rest if arg != "--cluster"]
    try:
        binary = server_binary()
    except RuntimeError as error:
        sys.exit(str(error))
    directory = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    if cluster:
        shards = Cluster(directory, binary, preexec_fn=die_with_parent)
        shards.start()
        url = shards.url
    else:
        redis = RedisProcess(directory, binary, preexec_fn=die_with_parent)
        redis.start()
        url = redis.url
    peer_urls = []
    for _ in range(processes - 1):
        peer_port = free_port()
        peer = subprocess.Popen(
            [sys.executable, str(HERE / "geventws_server.py"), str(peer_port), "--redis", url, *rest],
            stdout=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        assert peer.stdout is not None
        ready, _, _ = select.select([peer.stdout], [], [], 20)
        if not ready or not peer.stdout.readline().startswith(b"READY"):
            sys.exit("a peer server did not start")
        peer_urls += ["--peer-url", f"ws://127.0.0.1:{peer_port}/"]
    script = str(HERE / "geventws_server.py")
    os.execv(sys.executable, [sys.executable, script, port, "--redis", url, *peer_urls, *rest])


if __name__ == "__main__":
    main()
