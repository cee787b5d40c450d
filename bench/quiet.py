"""Load-independent measures of a geventws server: instructions, system calls and memory per unit of work.

Wall-clock numbers on a shared machine are noise; these are not.  Each
measure runs ``servers/geventws_server.py`` (the bench's own server, from the
tree given, default this one) in a process of its own and drives it from this
one with plain blocking sockets, so only the server is counted:

- ``echo``: user-space instructions per round trip (callgrind), 100
  connections × 16 B by default, one message in flight per connection;
- ``broadcast``: instructions per delivery of a broadcast (64 B to 1000 by default);
- ``handshake``: instructions per handshake, the connection kept open (200
  more connections in the larger run by default);
- ``idle``: tracemalloc bytes, RSS and gc objects per idle connection;
- ``--strace``: instead of callgrind, system calls per unit (``strace -c -f``).

Two runs of each measure with different amounts of work are subtracted, so
start-up, imports and handshakes drop out::

    .venv/bin/python bench/quiet.py echo broadcast idle
    .venv/bin/python bench/quiet.py --tree /tmp/base echo       # another checkout (its C extension built)
    GEVENTWS_NO_SPEEDUPS=1 .venv/bin/python bench/quiet.py echo  # the pure Python fallback
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MASK = b"\x37\xfa\x21\x3d"


def frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame."""
    head = bytes([0x80 | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + size.to_bytes(8, "big")
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return head + MASK + masked


class Server:
    """The bench server of one tree, optionally under valgrind or strace."""

    def __init__(self, tree: Path, wrapper: list[str], env: dict[str, str] | None = None) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        environ = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{HERE / 'servers'}", **(env or {})}
        script = str(HERE / "servers" / "geventws_server.py")
        self.process = subprocess.Popen(
            [*wrapper, sys.executable, script, str(self.port)],
            stdout=subprocess.PIPE,
            stderr=None if os.environ.get("QUIET_VERBOSE") else subprocess.DEVNULL,
            env=environ,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"server did not start: {line!r}")
        self.config = json.loads(line[6:])

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.split(b"\r\n")[0].decode())
        return sock

    def stop(self) -> None:
        self.process.terminate()  # valgrind writes its counts when the program dies of a signal
        try:
            self.process.wait(600)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def read_frames(sock: socket.socket, count: int) -> bytes:
    """Read ``count`` unmasked server frames; the payload of the last one."""
    buffer = b""
    payload = b""
    while count:
        while True:
            if len(buffer) >= 2:
                size = buffer[1] & 0x7F
                offset = 2
                if size == 126 and len(buffer) >= 4:
                    offset, size = 4, int.from_bytes(buffer[2:4], "big")
                elif size == 127 and len(buffer) >= 10:
                    offset, size = 10, int.from_bytes(buffer[2:10], "big")
                if (size < 126 or offset > 2) and len(buffer) >= offset + size:
                    payload, buffer = buffer[offset : offset + size], buffer[offset + size :]
                    count -= 1
                    break
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("server closed")
            buffer += chunk
    return payload


def finished_messages(buffer: bytearray) -> int:
    """Take the complete server frames off ``buffer``; how many ended a message (FIN)."""
    done = 0
    while len(buffer) >= 2:
        size = buffer[1] & 0x7F
        offset = 2
        if size == 126:
            if len(buffer) < 4:
                break
            offset, size = 4, int.from_bytes(buffer[2:4], "big")
        elif size == 127:
            if len(buffer) < 10:
                break
            offset, size = 10, int.from_bytes(buffer[2:10], "big")
        if len(buffer) < offset + size:
            break
        done += buffer[0] >> 7
        del buffer[: offset + size]
    return done


def drive_echo(server: Server, conns: list[socket.socket], rounds: int, size: int) -> int:
    message = frame(0x2, b"x" * size)

    def send(sock: socket.socket) -> None:
        sock.setblocking(True)  # a large message does not fit the socket at once
        sock.sendall(message)
        sock.setblocking(False)

    selector = selectors.DefaultSelector()
    left = {}
    buffers: dict[socket.socket, bytearray] = {}
    for sock in conns:
        selector.register(sock, selectors.EVENT_READ)
        left[sock] = rounds
        buffers[sock] = bytearray()
        send(sock)
    while left:
        for key, _ in selector.select():
            sock = key.fileobj  # type: ignore[assignment]
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("server closed")
            buffers[sock] += data
            for _ in range(finished_messages(buffers[sock])):
                left[sock] -= 1
                if left[sock]:
                    send(sock)
                else:
                    del left[sock]
                    selector.unregister(sock)
    for sock in conns:
        sock.setblocking(True)
    return rounds * len(conns)


def drive_broadcast(server: Server, conns: list[socket.socket], rounds: int, size: int) -> int:
    trigger, listeners = conns[0], conns[1:]
    expect = len(frame(0x2, b"x" * size)) - 4
    for _ in range(rounds):
        trigger.sendall(frame(0x1, f"broadcast:{size}".encode()))
        for sock in listeners:
            got = 0
            while got < expect:
                got += len(sock.recv(expect - got))
    return rounds * len(listeners)


def measure(args: argparse.Namespace, kind: str, tool: str) -> dict[str, float]:
    """Run the measure at 1× and 2× work; the difference per unit."""
    results = []
    for rounds in (args.rounds, 2 * args.rounds):
        out = tempfile.mktemp(prefix=f"quiet-{kind}-", suffix=".out")
        wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "-q"] if tool == "callgrind" else []
        server = Server(args.tree, wrapper)
        tracer = None
        conns: list[socket.socket] = []
        try:
            if kind != "handshake":  # for handshakes the work is the connections themselves
                conns = [server.connect() for _ in range(args.conns + (kind == "broadcast"))]
            if tool == "strace":  # attached, so that a SIGINT ends the count and not the server
                tracer = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(server.process.pid)])
                time.sleep(1.0)
            if kind == "handshake":
                conns = [server.connect() for _ in range(rounds)]
                units = rounds
            elif kind == "echo":
                units = drive_echo(server, conns, rounds, args.size)
            else:
                units = drive_broadcast(server, conns, rounds, args.size)
        finally:  # the count ends with the connections open: their closes are not in it
            if tracer is not None:
                tracer.send_signal(2)
                tracer.wait(60)
            server.stop()
            for sock in conns:
                sock.close()
        text = Path(out).read_text()
        if args.keep:
            print(f"kept {out}")
        else:
            os.unlink(out)
        if tool == "callgrind":
            found = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
            assert found, "no callgrind summary"
            results.append((units, {"instructions": int(found.group(1))}))
        else:
            calls: dict[str, float] = {}
            for line in text.splitlines():
                parts = line.split()
                if len(parts) >= 5 and parts[-1].isidentifier() and parts[3].isdigit():
                    calls[parts[-1]] = int(parts[3])
            results.append((units, calls))
    (units1, one), (units2, two) = results
    return {name: (two.get(name, 0) - one.get(name, 0)) / (units2 - units1) for name in sorted({*one, *two})}


def idle(args: argparse.Namespace) -> dict[str, float]:
    """Per idle connection, between one warm connection and ``--idle`` more: RSS and gc objects, then
    (in a second server, traced) tracemalloc bytes."""
    per: dict[str, float] = {}
    for traced in (False, True):
        server = Server(args.tree, [], {"PYTHONTRACEMALLOC": "1"} if traced else {})
        conns: list[socket.socket] = []
        try:
            probe = server.connect()
            warm = server.connect()
            warm.close()
            time.sleep(0.3)

            request = frame(0x1, f"stats:{args.top if traced else 0}".encode())
            probe.sendall(request)
            before = json.loads(read_frames(probe, 1))
            start = time.perf_counter()
            conns = [server.connect() for _ in range(args.idle)]
            elapsed = time.perf_counter() - start
            time.sleep(0.5)
            probe.sendall(request)
            after = json.loads(read_frames(probe, 1))
        finally:
            for sock in conns:
                sock.close()
            server.process.kill()
            server.process.wait()
        names = ["tracemalloc_bytes"] if traced else ["rss_bytes", "gc_objects"]
        if traced and args.top:
            print("\n".join(after["top"]))
        per.update({name: (after[name] - before[name]) / args.idle for name in names})
        if not traced:
            per["handshakes_s (one blocking client)"] = args.idle / elapsed
    return per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("measures", nargs="+", choices=["echo", "broadcast", "handshake", "idle"])
    parser.add_argument("--tree", type=Path, default=HERE.parent, help="checkout whose geventws is measured")
    parser.add_argument("--strace", action="store_true", help="system calls instead of instructions")
    parser.add_argument("--conns", type=int, help="connections (echo 100, broadcast listeners 1000)")
    parser.add_argument("--size", type=int, help="message bytes (echo 16, broadcast 64)")
    parser.add_argument("--rounds", type=int, help="rounds of the smaller run (echo 20, broadcast 5, handshake 200)")
    parser.add_argument("--idle", type=int, default=2000, help="idle connections")
    parser.add_argument("--keep", action="store_true", help="keep the callgrind/strace output (callgrind_annotate)")
    parser.add_argument("--top", type=int, default=0, help="idle: print the N source lines that allocated most")
    args = parser.parse_args()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for kind in args.measures:
        if kind == "idle":
            result = idle(args)
            unit = "per idle connection"
        else:
            defaults = {"echo": (100, 16, 20), "broadcast": (1000, 64, 5), "handshake": (0, 0, 200)}[kind]
            local = argparse.Namespace(**vars(args))
            local.conns = args.conns or defaults[0]
            local.size = args.size or defaults[1]
            local.rounds = args.rounds or defaults[2]
            result = measure(local, kind, "strace" if args.strace else "callgrind")
            unit = {"echo": "per round trip", "broadcast": "per delivery", "handshake": "per handshake"}[kind]
        print(f"{kind} ({args.tree}, {unit}):")
        for name, value in result.items():
            if value:
                print(f"  {name:40} {value:12.1f}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
