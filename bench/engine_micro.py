"""The protocol engine alone, without sockets: the cost of receive() and encode() per message.

    python bench/engine_micro.py                      # the geventws this interpreter imports
    python bench/engine_micro.py /work/main .         # A/B: each tree in its own interpreter, interleaved
    GEVENTWS_NO_SPEEDUPS=1 python bench/engine_micro.py /work/main .   # the pure Python fallback

The socket benchmarks (``run.py``) measure the engine together with the I/O
around it; this isolates the engine, so that a change to it can be compared
with another tree's in one run.  Each case feeds pre-built client frames
(a random mask each) the way the connection does: as memoryviews of reads of
at most 256 KiB, one frame per read for small messages (what the echo cells
deliver).  The receive cases also assemble each message the way
``WebsocketMessage.buffer()`` does (a message that came in several chunks is
joined), since whether the engine delivers a frame whole or in pieces decides
that copy.  Times are the best of ``--repeats`` runs, in nanoseconds per
message (per frame for ``x32``); with several trees, the ratio column is the
first tree's time divided by each tree's (above 1: faster than the first).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

KIB, MIB = 1024, 1024 * 1024
READ_SIZE = 256 * KIB
LIMIT = 16 * MIB


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame, FIN set."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        header = bytes((0x80 | opcode, 0xFE)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0xFF)) + length.to_bytes(8, "big")
    key = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(length, "little")
    return header + mask + masked


def reads(frames: list[bytes], read_size: int, one_frame_per_read: bool) -> list[memoryview]:
    """The chunks a connection would pass to receive(): views of one buffer, like its shared read buffer."""
    if one_frame_per_read:
        return [memoryview(frame) for frame in frames]
    wire = memoryview(b"".join(frames))
    return [wire[start : start + read_size] for start in range(0, len(wire), read_size)]


def receive_case(
    size: int, count: int, *, text: bool = False, per_read: int = 1, read_size: int = READ_SIZE
) -> Callable[[], int]:
    """Feed ``count`` messages of ``size`` bytes; returns a run() giving the number of messages."""
    from geventws.protocol.engine import LeanEngine
    from geventws.protocol.events import Data
    from geventws.protocol.limits import MessageLimits

    payload = (b"x" * size) if text else os.urandom(size)
    frames = [client_frame(0x1 if text else 0x2, payload) for _ in range(count)]
    if per_read > 1:
        frames = [b"".join(frames[index : index + per_read]) for index in range(0, count, per_read)]
    chunks = reads(frames, read_size, one_frame_per_read=size < read_size)

    def run() -> int:
        engine = LeanEngine(MessageLimits(LIMIT, LIMIT))
        receive = engine.receive
        messages = 0
        parts: list[str | bytes] = []
        for chunk in chunks:
            for event in receive(chunk):
                if type(event) is Data:
                    if event.message_finished and not parts:  # whole in one chunk
                        message = event.payload
                    else:
                        parts.append(event.payload)
                        if not event.message_finished:
                            continue
                        message = "".join(parts) if text else b"".join(parts)  # type: ignore[arg-type]
                        parts = []
                    messages += len(message) >= 0
        assert messages == count, messages
        return messages

    return run


def encode_case(size: int, count: int, *, text: bool = False) -> Callable[[], int]:
    from geventws.protocol.engine import LeanEngine
    from geventws.protocol.limits import MessageLimits

    data: str | bytes = "x" * size if text else os.urandom(size)

    def run() -> int:
        engine = LeanEngine(MessageLimits(LIMIT, LIMIT))
        encode = engine.encode
        for _ in range(count):
            encode(data)
        return count

    return run


CASES: dict[str, Callable[[], Callable[[], int]]] = {
    "receive 16B": lambda: receive_case(16, 20000),
    "receive 16B x32": lambda: receive_case(16, 32000, per_read=32),
    "receive 1KiB": lambda: receive_case(KIB, 20000),
    "receive 1KiB text": lambda: receive_case(KIB, 20000, text=True),
    "receive 64KiB": lambda: receive_case(64 * KIB, 400, read_size=64 * KIB),
    "receive 64KiB 256KiB-reads": lambda: receive_case(64 * KIB, 400),
    "receive 1MiB": lambda: receive_case(MIB, 24),
    "receive 1MiB 64KiB-reads": lambda: receive_case(MIB, 24, read_size=64 * KIB),
    "encode 16B": lambda: encode_case(16, 20000),
    "encode 1KiB": lambda: encode_case(KIB, 20000),
    "encode 1KiB text": lambda: encode_case(KIB, 20000, text=True),
    "encode 64KiB": lambda: encode_case(64 * KIB, 2000),
    "encode 1MiB": lambda: encode_case(MIB, 100),
}


def measure(repeats: int, only: list[str]) -> dict[str, float]:
    """Best time per message of each case, in nanoseconds."""
    # Free a large buffer first, as a long-running server has: glibc then
    # serves buffers up to that size from its heap instead of fresh mmaps
    # (each 1 MiB mmap costing 256 page faults), whatever order the cases run in.
    warm = bytes(4 * MIB)
    del warm
    results = {}
    for name, build in CASES.items():
        if only and not any(word in name for word in only):
            continue
        run = build()
        run()  # warm up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter_ns()
            count = run()
            best = min(best, (time.perf_counter_ns() - start) / count)
        results[name] = best
    return results


def in_tree(tree: str, repeats: int, only: list[str]) -> dict[str, float]:
    """Run the cases in a fresh interpreter that imports geventws from ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(Path(tree).resolve()))
    command = [sys.executable, __file__, "--json", "--repeats", str(repeats), *(["--only", *only] if only else [])]
    output = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(output.splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="*", help="source trees to compare (default: the geventws importable here)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each case; the best counts")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the trees")
    parser.add_argument("--only", nargs="*", default=[], help="cases whose name contains one of these words")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.trees:
        results = measure(args.repeats, args.only)
        if args.json:
            print(json.dumps(results))
            return
        import geventws.protocol.masking as masking

        print(f"geventws from {Path(masking.__file__).parents[2]}, C speedups: {masking.HAS_SPEEDUPS}")
        for name, ns in results.items():
            print(f"{name:28} {ns:12.0f} ns")
        return
    best: list[dict[str, float]] = [{} for _ in args.trees]
    for _ in range(args.rounds):  # interleaved: a noisy moment hurts every tree alike
        for index, tree in enumerate(args.trees):
            for name, ns in in_tree(tree, args.repeats, args.only).items():
                best[index][name] = min(best[index].get(name, ns), ns)
    speedups = "off" if os.environ.get("GEVENTWS_NO_SPEEDUPS") else "on"
    print(f"ns per message (best of {args.rounds} x {args.repeats}); C speedups {speedups}")
    print(f"{'case':28}" + "".join(f"{tree[-24:]:>26}" for tree in args.trees))
    for name in best[0]:
        row = f"{name:28}{best[0][name]:26.0f}"
        for other in best[1:]:
            ratio = best[0][name] / other[name] if name in other else float("nan")
            row += f"{other.get(name, float('nan')):18.0f} ({ratio:4.2f}x)"
        print(row)


if __name__ == "__main__":
    main()
