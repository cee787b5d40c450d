"""The chart and the narrow table of a ``bench/run.py`` report.

The chart: per cell and metric, each server's ratio to websockets' asyncio
server in the same run, the peers side by side (log scale; 1.0 is
websockets).  Rows where lower is better (latency, memory, CPU per delivery)
are marked ``↓``.  The table gives the same ratios, and websockets' own
value, in few enough columns to fit beneath the chart on the docs page.

``bench/run.py`` draws both next to its report (``<stamp>.png`` and
``<stamp>-table.txt``).  To put a run into the docs and README::

    bench/.venv/bin/python bench/chart.py bench/results/<stamp>.json --docs

writes ``docs/_static/performance.png`` and replaces the table between the
``bench-table`` markers of ``docs/performance.rst`` and ``README.rst``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "websockets-asyncio"
#: Column names short enough for the table.
SHORT = {
    "websockets-asyncio": "ws",
    "websockets-uvloop": "ws-uvloop",
    "websockets-sync": "ws-sync",
    "flask-sock": "flask-sock",
    "gevent-websocket": "gevent-ws",
    "geventws": "geventws",
    "geventws-defaults": "gws-dflt",
    "geventws-metrics": "gws-metr",
    "geventws-loop": "gws-loop",
    "geventws-redis": "gws-redis",
    "picows": "picows",
}
#: The servers the docs compare (others stay in the run's own report).
DOCS_SERVERS = ("websockets-uvloop", "geventws", "picows")


def short(name: str) -> str:
    if name.startswith("geventws@"):
        return "gws@" + name.split("@", 1)[1][:7]
    return SHORT.get(name, name)


def label(row: dict[str, Any]) -> str:
    title = re.sub(r" conn × ", "×", row["title"])
    title = title.replace(", 256 in flight", "").replace(", 16 in flight", "").replace("broadcast 1 KiB to ", "bcast ")
    title = title.replace("idle connections", "idle").replace(" connections, broadcast 64 B to all", " conns")
    metric = row["label"].replace(" idle:", "").replace("all received", "all rcvd")
    arrow = "" if row["higher_is_better"] else " ↓"
    return f"{title}: {metric}{arrow}"


def peers(document: dict[str, Any], only: tuple[str, ...] | None = None) -> list[str]:
    names = [spec["name"] for spec in document["servers"] if spec["name"] != BASELINE]
    if only is not None:
        names = [name for name in names if name in only or name.startswith("geventws@")]
    return names


def rows_with_ratios(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for row in document["rows"] if row["servers"].get(BASELINE, {}).get("median")]


def table(document: dict[str, Any], only: tuple[str, ...] | None = None) -> str:
    """Ratios to websockets, one line per cell and metric; ``≥`` where the load generator was the limit."""
    names = peers(document, only)
    busy = set()
    for entry in document.get("cpu", []):
        for name, cpu in entry["servers"].items():
            client, server = cpu["client_cpu"], cpu["server_cpu"]
            if client >= 85 or (client >= 50 and client > server):
                busy.add((entry["cell"], name))
    lines = []
    for row in rows_with_ratios(document):
        base = row["servers"][BASELINE]["median"]
        cols = [_value(base)]
        for name in names:
            entry = row["servers"].get(name, {})
            ratio = entry.get("ratio")
            mark = "≥" if (row["cell"], name) in busy and row["higher_is_better"] else ""
            cols.append("—" if ratio is None else f"{mark}{ratio:.2f}×")
        lines.append([label(row), *cols])
    header = ["cell: metric (↓: lower is better)", "ws", *[short(name) for name in names]]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
    out = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * width for width in widths))
    out += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines]
    return "\n".join(out) + "\n"


def _value(value: float) -> str:
    if value >= 1e4:
        return f"{value / 1e3:.1f}k"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def draw(document: dict[str, Any], output: Path, only: tuple[str, ...] | None = None) -> None:
    """The chart as a PNG: a group of horizontal bars per cell and metric, one bar per peer."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = rows_with_ratios(document)
    names = peers(document, only)
    bar = 0.8 / max(1, len(names))
    figure, axes = plt.subplots(figsize=(8, 0.12 * len(rows) * max(2, len(names)) + 1.2))
    colors = plt.get_cmap("tab10")
    for index, name in enumerate(names):
        positions, ratios = [], []
        for position, row in enumerate(rows):
            ratio = row["servers"].get(name, {}).get("ratio")
            if ratio:
                positions.append(position + (index - (len(names) - 1) / 2) * bar)
                ratios.append(ratio)
        axes.barh(positions, ratios, height=bar, label=name, color=colors(index), left=0)
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_xscale("log")
    ticks = [0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4]
    axes.set_xticks(ticks, [f"{tick:g}×" for tick in ticks])
    axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes.set_yticks(range(len(rows)), [label(row) for row in rows], fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("ratio to websockets (asyncio server) in the same run; ↓ rows: lower is better", fontsize=8)
    axes.tick_params(axis="x", labelsize=7)
    axes.grid(axis="x", which="both", linewidth=0.3)
    axes.legend(fontsize=7, loc="lower right")
    axes.set_title(f"geventws bench {document['timestamp']}", fontsize=9)
    figure.tight_layout()
    figure.savefig(output, dpi=130)
    plt.close(figure)


def replace_between_markers(path: Path, text: str) -> None:
    """Put ``text`` (indented as a literal block) between the ``bench-table`` markers of ``path``."""
    source = path.read_text()
    block = "".join(f"    {line}\n" if line else "\n" for line in text.splitlines())
    pattern = re.compile(r"(\.\. bench-table-start\n).*?(\n\.\. bench-table-end)", re.S)
    if not pattern.search(source):
        raise SystemExit(f"{path}: no bench-table markers")
    path.write_text(pattern.sub(lambda m: f"{m.group(1)}\n::\n\n{block}{m.group(2)}", source))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="a bench/results/<stamp>.json")
    parser.add_argument("--docs", action="store_true", help="write the docs' chart and tables from this run")
    args = parser.parse_args()
    document = json.loads(args.report.read_text())
    if args.docs:
        draw(document, ROOT / "docs" / "_static" / "performance.png", DOCS_SERVERS)
        text = table(document, DOCS_SERVERS)
        for path in (ROOT / "docs" / "performance.rst", ROOT / "README.rst"):
            replace_between_markers(path, text)
        print(text)
        return
    stem = args.report.with_suffix("")
    draw(document, stem.with_suffix(".png"))
    stem.with_name(stem.name + "-table.txt").write_text(table(document))
    print(table(document))


if __name__ == "__main__":
    main()
