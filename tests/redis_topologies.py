"""A Sentinel set and a Redis Cluster of real valkey-server processes, for the tests and the bench.

:class:`SentinelSet`: a master, a replica and three sentinels (quorum 2, a
short ``down-after-milliseconds``), ready once the replica is in sync and
every sentinel knows the replica and the other sentinels.  :class:`Cluster`:
three masters made one cluster by ``valkey-cli --cluster create``, ready once
every node reports ``cluster_state:ok``.  Everything listens on 127.0.0.1 and
keeps its files in its own directory.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis
from processes import stop_process
from redis_server import RedisProcess, free_port

SERVICE = "geventws"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout} s")
        time.sleep(0.05)


class Sentinel:
    """One sentinel process (``valkey-server CONFIG --sentinel``)."""

    def __init__(self, directory: Path, binary: str, master_port: int, down_after_ms: int) -> None:
        self.directory = directory
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "sentinel.conf"  # sentinels rewrite their config: one each
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {directory}\nlogfile {directory / 'sentinel.log'}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} 10000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.process = subprocess.Popen(
            [binary, str(self.config), "--sentinel"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        self.client = redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def stop(self) -> None:
        self.client.close()
        stop_process(self.process)


class SentinelSet:
    """A master, a replica and three sentinels watching them as :data:`SERVICE`."""

    def __init__(self, directory: Path, binary: str, down_after_ms: int = 1000) -> None:
        self.directory = directory
        self.binary = binary
        self.down_after_ms = down_after_ms
        self.servers: list[RedisProcess] = []
        self.sentinels: list[Sentinel] = []

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}"

    def start(self) -> None:
        try:
            master = RedisProcess(self.directory / "master", self.binary)
            (self.directory / "master").mkdir(parents=True, exist_ok=True)
            master.start()
            self.servers.append(master)
            (self.directory / "replica").mkdir(parents=True, exist_ok=True)
            replica = RedisProcess(
                self.directory / "replica", self.binary, args=("--replicaof", "127.0.0.1", str(master.port))
            )
            replica.start()
            self.servers.append(replica)
            self.wait_in_sync(replica)
            for index in range(3):
                self.sentinels.append(
                    Sentinel(self.directory / f"sentinel{index}", self.binary, master.port, self.down_after_ms)
                )
            for sentinel in self.sentinels:
                wait_until(lambda sentinel=sentinel: self._knows_all(sentinel), 30, "the sentinels did not meet")
        except BaseException:
            self.stop()
            raise

    def _knows_all(self, sentinel: Sentinel) -> bool:
        replicas = sentinel.client.sentinel_slaves(SERVICE)
        others = sentinel.client.sentinel_sentinels(SERVICE)
        return len(others) == 2 and any(not replica["is_sdown"] for replica in replicas)

    def wait_in_sync(self, replica: RedisProcess) -> None:
        client = redis.Redis(port=replica.port, decode_responses=True)
        try:
            wait_until(lambda: client.info("replication")["master_link_status"] == "up", 30, "no sync")
        finally:
            client.close()

    def master_port(self) -> int:
        """The master's port, as the first sentinel tells it."""
        host, port = self.sentinels[0].client.sentinel_get_master_addr_by_name(SERVICE)
        return int(port)

    def master(self) -> RedisProcess:
        port = self.master_port()
        return next(server for server in self.servers if server.port == port)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers:
            server.stop()


class Cluster:
    """Three masters, no replicas, slots spread evenly by ``valkey-cli --cluster create``."""

    def __init__(
        self,
        directory: Path,
        binary: str,
        size: int = 3,
        extra: tuple[str, ...] = (),
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.directory = directory
        self.binary = binary
        self.cli = str(Path(binary).with_name("valkey-cli"))
        self.nodes: list[RedisProcess] = []
        for index in range(size):
            node_dir = directory / f"node{index}"
            node_dir.mkdir(parents=True, exist_ok=True)
            options = ("--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"))
            # the bus port too: the default (port + 10000) may be taken, or past 65535
            options += ("--cluster-port", str(free_port()), "--cluster-node-timeout", "2000", *extra)
            self.nodes.append(RedisProcess(node_dir, binary, preexec_fn, args=options))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            if len(self.nodes) == 1:  # valkey-cli makes clusters of three or more: one node takes every slot
                client = redis.Redis(port=self.nodes[0].port)
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
                client.close()
            else:
                hosts = [f"127.0.0.1:{node.port}" for node in self.nodes]
                subprocess.run(
                    [self.cli, "--cluster", "create", *hosts, "--cluster-replicas", "0", "--cluster-yes"],
                    check=True,
                    capture_output=True,
                    timeout=60,
                )
            for node in self.nodes:
                client = redis.Redis(port=node.port, decode_responses=True)
                try:
                    wait_until(lambda client=client: client.cluster("info")["cluster_state"] == "ok", 30, "not ok")
                finally:
                    client.close()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
