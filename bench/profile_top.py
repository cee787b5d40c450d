"""Top functions by self time from a py-spy ``--format raw`` profile (collapsed stacks).

    python bench/profile_top.py bench/results/profile-geventws-echo-c100-16B.txt [-n 15]

``bench/run.py --profile`` writes such files (py-spy record --function --format
raw on the server during the measured window).  The same file opens in
speedscope (https://www.speedscope.app accepts collapsed stacks) for a flame graph.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def load(path: Path) -> tuple[Counter[str], Counter[str], int]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = stack.split(";")
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    return own, inclusive, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path, nargs="+")
    parser.add_argument("-n", type=int, default=15)
    args = parser.parse_args()
    for path in args.profile:
        own, inclusive, total = load(path)
        print(f"{path.name}: {total} samples (on CPU)")
        print(f"{'self %':>7} {'total %':>7}  function")
        for frame, samples in own.most_common(args.n):
            print(f"{100 * samples / total:7.1f} {100 * inclusive[frame] / total:7.1f}  {frame}")
        print()


if __name__ == "__main__":
    main()
