"""Run the benchmark matrix: every server side by side, in the same run, relative to websockets' asyncio server.

Usage (from the repository root, in bench/.venv; ``make bench`` does this)::

    python bench/run.py                       # the full matrix (about 16 min on 2 cores)
    python bench/run.py --quick               # a ~3 minute subset (also BENCH_QUICK=1)
    python bench/run.py --scenarios echo,broadcast --servers geventws,websockets-asyncio
    python bench/run.py --cells 'echo-c100-*' --repeats 5 --duration 3
    python bench/run.py --list                # the cells and servers, without running
    python bench/run.py --profile --servers geventws --cells echo-c100-16B,echo-c1-64KiB --duration 8
    python bench/run.py --servers geventws,geventws-redis --no-baseline --cells broadcast-1000   # Redis vs local

Each cell starts the server in its own process (pinned to core 0), has it echo
one 1 MiB message (``loadgen.season``; ``--fresh`` skips it), runs the
picows/uvloop load generator in this process (pinned to core 1), and kills the
server at the end of the cell.  Repeats go round the whole matrix, so a
server's samples are spread over the run; the table shows medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fnmatch
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chart
import loadgen
import uvloop
from servers._common import raise_nofile

BENCH = Path(__file__).resolve().parent
SERVERS_DIR = BENCH / "servers"
RESULTS = BENCH / "results"
HOST = "127.0.0.1"
BASELINE = "websockets-asyncio"
#: The scale cell: one server holding this many connections (the hard limit of open files here is 20,000).
SCALE_CLIENTS = 15000
#: Servers that cannot hold that many connections within the limit on open files.
SCALE_SKIP = {
    "websockets-sync": "three descriptors per connection (the socket and a socketpair)",
    "flask-sock": "two descriptors per connection (simple-websocket dup()s the socket)",
}
KIB, MIB = 1024, 1024 * 1024
SERVER_CORE, CLIENT_CORE = 0, 1


# --------------------------------------------------------------------- servers


@dataclass(frozen=True)
class ServerSpec:
    name: str
    script: str
    args: tuple[str, ...] = ()
    deflate: bool = True  # can run the deflate cells
    note: str = ""
    pythonpath: str | None = None  # put first on the server's PYTHONPATH (--versus: another geventws)


SERVERS = [
    ServerSpec(BASELINE, "websockets_asyncio.py", note="websockets asyncio server, stdlib asyncio loop"),
    ServerSpec(
        "websockets-uvloop",
        "websockets_asyncio.py",
        ("--uvloop",),
        note="the same server on uvloop, as websockets' performance guide advises",
    ),
    ServerSpec(
        "websockets-sync", "websockets_sync_gevent.py", note="websockets.sync.server under gevent monkey-patching"
    ),
    ServerSpec("flask-sock", "flask_sock_gevent.py", note="flask-sock (simple-websocket) on gevent pywsgi"),
    ServerSpec("gevent-websocket", "gevent_websocket.py", deflate=False, note="no permessage-deflate support"),
    ServerSpec("geventws", "geventws_server.py", note="16 MiB limit, no rate limit, no heartbeat"),
    ServerSpec("geventws-defaults", "geventws_server.py", ("--defaults",), note="Rfc6455ClientFactory() as shipped"),
    ServerSpec(
        "picows", "picows_server.py", deflate=False, note="picows (Cython) on uvloop, the upper reference; no deflate"
    ),
]
#: Run only when named with --servers: geventws broadcasting with a plain loop
#: of send_binary (each client serializes the message) instead of the gateway,
#: to measure what encoding once and writing without greenlets brings; and
#: geventws with its Prometheus metrics recording, to measure what they cost.
EXTRA_SERVERS = [
    ServerSpec(
        "geventws-loop", "geventws_server.py", ("--loop-broadcast",), note="broadcast by looping over send_binary"
    ),
    # Broadcast cells only: the listeners spread over two processes sharing a Redis (valkey-server), see
    # servers/geventws_redis.py; compare with "geventws" (one process, the local gateway) in the same run.
    ServerSpec(
        "geventws-redis",
        "geventws_redis.py",
        deflate=False,
        note="RedisGateway over 2 processes + valkey-server (those two on any core); CPU: the first process only",
    ),
    # The same over three processes: one Redis, or a three-shard cluster with sharded pub/sub.
    ServerSpec(
        "geventws-redis3",
        "geventws_redis.py",
        ("--processes", "3"),
        deflate=False,
        note="RedisGateway over 3 processes + valkey-server; CPU: the first process only",
    ),
    ServerSpec(
        "geventws-cluster3",
        "geventws_redis.py",
        ("--processes", "3", "--cluster"),
        deflate=False,
        note="RedisGateway over 3 processes + a 3-shard valkey cluster (sharded pub/sub); CPU: the first only",
    ),
    ServerSpec(
        "geventws-metrics", "geventws_server.py", ("--metrics",), note="geventws with geventws.metrics recording"
    ),
]


# ----------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool


@dataclass
class Cell:
    id: str
    scenario: str
    title: str
    params: dict[str, Any]
    metrics: list[Metric] = field(default_factory=list)


def size_name(size: int) -> str:
    if size >= MIB:
        return f"{size // MIB}MiB"
    if size >= KIB:
        return f"{size // KIB}KiB"
    return f"{size}B"


def build_cells(quick: bool) -> list[Cell]:
    cells: list[Cell] = []
    msg_s = [Metric("msg_s", "msg/s", True)]
    echo_matrix = (
        [(1, 16), (100, 16), (1, 64 * KIB), (10, MIB)]
        if quick
        else [(c, s) for c in (1, 10, 100) for s in (16, KIB, 64 * KIB, MIB)]
    )
    for conns, size in echo_matrix:
        cells.append(
            Cell(
                f"echo-c{conns}-{size_name(size)}",
                "echo",
                f"echo {conns} conn × {size_name(size)}",
                {"connections": conns, "size": size},
                msg_s,
            )
        )
    for size, window in [(64 * KIB, 16)] if quick else [(KIB, 256), (64 * KIB, 16)]:
        cells.append(
            Cell(
                f"stream-{size_name(size)}",
                "stream",
                f"stream 1 conn × {size_name(size)}, {window} in flight",
                {"connections": 1, "size": size, "window": window},
                [Metric("mb_s", "MB/s", True)],
            )
        )
    for clients, rounds in [(100, 10)] if quick else [(100, 30), (1000, 10)]:
        cells.append(
            Cell(
                f"broadcast-{clients}",
                "broadcast",
                f"broadcast 1 KiB to {clients}",
                {"clients": clients, "size": KIB, "rounds": rounds},
                [
                    Metric("all_ms", "all received ms", False),
                    Metric("p50_ms", "p50 ms", False),
                    Metric("p99_ms", "p99 ms", False),
                    Metric("cpu_us", "server CPU µs/delivery", False),
                ],
            )
        )
    levels = [1000] if quick else [1000, 5000, 10000]
    idle_metrics = []
    for level in levels:
        idle_metrics.append(Metric(f"rss_kib@{level}", f"{level // 1000}k idle: RSS KiB/conn", False))
        idle_metrics.append(Metric(f"hs_s@{level}", f"{level // 1000}k idle: handshakes/s", True))
    cells.append(Cell("idle", "idle", "idle connections", {"levels": levels}, idle_metrics))
    if not quick:
        cells.append(
            Cell(
                f"scale-{SCALE_CLIENTS}",
                "scale",
                f"{SCALE_CLIENTS // 1000}k connections, broadcast 64 B to all",
                {"clients": SCALE_CLIENTS, "size": 64, "rounds": 5},
                [
                    Metric("hs_s", "handshakes/s", True),
                    Metric("rss_kib", "RSS KiB/conn", False),
                    Metric("cpu_us", "server CPU µs/delivery", False),
                    Metric("all_ms", "all received ms", False),
                    Metric("p50_ms", "p50 ms", False),
                ],
            )
        )
    for conns, size in [(10, KIB)] if quick else [(10, KIB), (10, 64 * KIB)]:
        cells.append(
            Cell(
                f"deflate-c{conns}-{size_name(size)}",
                "deflate",
                f"deflate echo {conns} conn × {size_name(size)}",
                {"connections": conns, "size": size},
                msg_s,
            )
        )
    return cells


# ------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def pin(core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})


try:
    _LIBC: Any = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _LIBC = None
PR_SET_PDEATHSIG = 1


def child_setup(core: int | None) -> None:
    """In the forked child: pin it, and have the kernel kill it if this runner dies."""
    pin(core)
    if _LIBC is not None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class ServerProcess:
    """One echo server in its own process; always killed on exit from the ``with``."""

    def __init__(self, spec: ServerSpec, deflate: bool, core: int | None, log_dir: Path) -> None:
        self.spec = spec
        self.port = free_port()
        self.log_path = log_dir / f"{spec.name}.log"
        args = [sys.executable, str(SERVERS_DIR / spec.script), str(self.port), *spec.args]
        if deflate:
            args.append("--deflate")
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in __exit__
        env = None
        if spec.pythonpath:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join([spec.pythonpath, os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=self._log,
            preexec_fn=lambda: child_setup(core),
            cwd=str(BENCH.parent),
            env=env,
        )
        self.config: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/"

    def wait_ready(self, timeout: float = 20.0) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                line += chunk
                if b"\n" in line or not chunk:
                    break
            elif self.proc.poll() is not None:
                break
        text = line.decode(errors="replace").strip()
        if not text.startswith("READY"):
            raise RuntimeError(f"server did not start: {text!r} {self.log_tail()}")
        self.config = json.loads(text[len("READY") :])

    def log_tail(self, lines: int = 4) -> str:
        self._log.flush()
        try:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return ""
        return " | ".join(tail)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


class Profiler:
    """py-spy recording the server during the measured window (``--profile``)."""

    def __init__(self, pid: int, output: Path, duration: float, core: int | None) -> None:
        self.output = output
        self._args = [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(duration))),
            "--rate",
            "200",
            "--function",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(output),
        ]
        self._core = core
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self._args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: child_setup(self._core),
        )

    def finish(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ----------------------------------------------------------------------- run


def _git(*args: str) -> str:
    try:
        result = subprocess.run(["git", *args], cwd=BENCH.parent, capture_output=True, text=True, timeout=30)
    except OSError:
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def snapshot_geventws(into: Path) -> dict[str, Any]:
    """Copy geventws/ and put the copy first on the servers' PYTHONPATH.

    The whole run then measures one version of geventws even while the work
    tree is being edited (the servers start afresh for every cell).
    """
    source = BENCH.parent / "geventws"
    target = into / "geventws"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    digest = hashlib.sha256()
    for path in sorted(target.rglob("*.py")):
        digest.update(path.relative_to(target).as_posix().encode())
        digest.update(path.read_bytes())
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(into), os.environ.get("PYTHONPATH", "")]))
    return {
        "snapshot": str(into),
        "sha256": digest.hexdigest()[:16],
        "commit": _git("rev-parse", "--short", "HEAD"),
        "local_changes": bool(_git("status", "--porcelain", "--", "geventws")),
    }


def export_geventws(ref: str, into: Path) -> ServerSpec:
    """geventws as of git ``ref`` (its C extension built), as a server of its own: A/B runs in one matrix."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref], cwd=BENCH.parent, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=into, capture_output=True, check=False
    )
    commit = _git("rev-parse", "--short", ref) or ref
    return ServerSpec(f"geventws@{commit}", "geventws_server.py", note=f"geventws as of {ref}", pythonpath=str(into))


def probe_geventws_deflate() -> bool:
    code = "import geventws; print(hasattr(geventws, 'Rfc7692CompressionFactory'))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return result.stdout.strip() == "True"


def cell_timeout(cell: Cell, opts: argparse.Namespace) -> float:
    if cell.scenario in ("idle", "scale"):
        return 180.0
    if cell.scenario == "broadcast":
        return 90.0
    return 60.0 + opts.warmup + opts.duration


async def run_scenario(cell: Cell, server: ServerProcess, opts: argparse.Namespace, on_measure: Any) -> dict[str, Any]:
    p = cell.params
    if not opts.fresh:
        await loadgen.season(server.url)
    if cell.scenario in ("echo", "stream", "deflate"):
        return await loadgen.echo(
            server.url,
            server.pid,
            connections=p["connections"],
            size=p["size"],
            window=p.get("window", 1),
            deflate=cell.scenario == "deflate",
            duration=opts.duration,
            warmup=opts.warmup,
            on_measure=on_measure,
        )
    if cell.scenario == "broadcast":
        urls = server.config.get("urls") or [server.url]  # several processes: the listeners are spread over them
        return await loadgen.broadcast(urls, server.pid, clients=p["clients"], size=p["size"], rounds=p["rounds"])
    if cell.scenario == "scale":
        if server.spec.name in SCALE_SKIP:
            raise loadgen.ScenarioSkipped(SCALE_SKIP[server.spec.name])
        return await loadgen.scale(server.url, server.pid, clients=p["clients"], size=p["size"], rounds=p["rounds"])
    if cell.scenario == "idle":
        result = await loadgen.idle(server.url, server.pid, levels=p["levels"])
        flat: dict[str, Any] = {
            "alive": result["alive"],
            "open": result["open"],
            "base_rss_mib": result["base_rss_mib"],
        }
        flat["steps"] = result["steps"]
        reached = None
        for level, step in result["steps"].items():
            if step["failed"]:  # no numbers for a level not reached
                flat.setdefault("errors", []).append(
                    f"{level} idle: only {step['open']} open, {step['failed']} handshakes failed: "
                    + "; ".join(step["errors"])
                )
                continue
            reached = level
            flat[f"rss_kib@{level}"] = step["rss_per_conn_kib"]
            flat[f"hs_s@{level}"] = step["handshakes_s"]
        if reached is not None:
            flat["client_cpu"] = result["steps"][reached]["client_cpu"]
            flat["server_cpu"] = result["steps"][reached]["server_cpu"]
        if result["alive"] < result["open"]:
            flat.setdefault("errors", []).append(f"only {result['alive']}/{result['open']} idle connections answered")
        return flat
    raise ValueError(cell.scenario)


def run_one(
    runner: asyncio.Runner, cell: Cell, spec: ServerSpec, opts: argparse.Namespace, log_dir: Path
) -> dict[str, Any]:
    """One cell on one server: start it, measure, kill it.  Returns metrics or {"error"/"skipped": ...}."""
    server_core = None if opts.no_pin else SERVER_CORE
    client_core = None if opts.no_pin else CLIENT_CORE
    with ServerProcess(spec, cell.scenario == "deflate", server_core, log_dir) as server:
        try:
            server.wait_ready()
        except RuntimeError as error:
            return {"error": str(error)}
        profiler = None
        if opts.profile and cell.scenario in ("echo", "stream", "deflate"):
            RESULTS.mkdir(parents=True, exist_ok=True)
            output = RESULTS / f"profile-{spec.name}-{cell.id}.txt"
            profiler = Profiler(server.pid, output, opts.duration, client_core)
        try:
            metrics = runner.run(
                asyncio.wait_for(
                    run_scenario(cell, server, opts, profiler.start if profiler else None), cell_timeout(cell, opts)
                )
            )
        except loadgen.ScenarioSkipped as skip:
            return {"skipped": str(skip)}
        except asyncio.TimeoutError:
            return {"error": f"timed out after {cell_timeout(cell, opts):.0f} s {server.log_tail()}"}
        except Exception as error:
            return {"error": f"{type(error).__name__}: {error} {server.log_tail()}".strip()}
        finally:
            if profiler is not None:
                profiler.finish()
        if server.proc.poll() is not None:
            metrics["error"] = f"server exited with {server.proc.returncode} {server.log_tail()}"
        metrics["server_config"] = server.config
        if profiler is not None:
            metrics["profile"] = str(profiler.output)
        return metrics


def schedule(
    cells: list[Cell], servers: list[ServerSpec], repeats: int, idle_repeats: int, deflate_ok: dict[str, bool]
) -> list[Any]:
    """(repeat, cell, server) in run order: repeats go round the whole matrix; server order rotates per repeat."""
    order = []
    for rep in range(repeats):
        for cell in cells:
            if cell.scenario == "idle" and rep >= idle_repeats:
                continue
            rotated = servers[rep % len(servers) :] + servers[: rep % len(servers)]
            for spec in rotated:
                if cell.scenario == "deflate" and not deflate_ok.get(spec.name, spec.deflate):
                    continue
                order.append((rep, cell, spec))
    return order


def estimate(order: list[Any], opts: argparse.Namespace) -> float:
    per = {"echo": 0.9 + opts.warmup + opts.duration, "stream": 0.9 + opts.warmup + opts.duration}
    per["deflate"] = per["echo"]
    total = 0.0
    for _, cell, _ in order:
        if cell.scenario == "broadcast":
            total += 1.5 + cell.params["clients"] / 1000 * 2
        elif cell.scenario == "idle":
            total += 2 + max(cell.params["levels"]) / 2500
        elif cell.scenario == "scale":
            total += 4 + cell.params["clients"] / 2000
        else:
            total += per[cell.scenario]
    return total


# -------------------------------------------------------------------- report


def fmt(value: float | None) -> str:
    if value is None or value != value:
        return "—"
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.2f}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.1f}k"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def summarize(cells: list[Cell], servers: list[ServerSpec], samples: dict[str, dict[str, list[dict[str, Any]]]]) -> Any:
    """Rows of {cell, metric, per server: median, n, ratio, cpu} and the notes (errors, skips)."""
    rows = []
    notes: list[str] = []
    for cell in cells:
        runs = samples.get(cell.id, {})
        for metric in cell.metrics:
            row: dict[str, Any] = {
                "cell": cell.id,
                "title": cell.title,
                "metric": metric.key,
                "label": metric.label,
                "higher_is_better": metric.higher_is_better,
                "servers": {},
            }
            for spec in servers:
                values = [r[metric.key] for r in runs.get(spec.name, []) if metric.key in r]
                row["servers"][spec.name] = {
                    "median": statistics.median(values) if values else None,
                    "n": len(values),
                    "samples": values,
                }
            base = row["servers"].get(BASELINE, {}).get("median")
            for entry in row["servers"].values():
                entry["ratio"] = entry["median"] / base if base and entry["median"] is not None else None
            rows.append(row)
        for spec in servers:
            for run in runs.get(spec.name, []):
                for kind in ("error", "skipped"):
                    if kind in run:
                        note = f"{cell.id} / {spec.name}: {kind}: {run[kind]}"
                        if note not in notes:
                            notes.append(note)
                for extra in run.get("errors", []):
                    note = f"{cell.id} / {spec.name}: {extra}"
                    if note not in notes:
                        notes.append(note)
    return rows, notes


def cpu_summary(cells: list[Cell], servers: list[ServerSpec], samples: dict[str, Any]) -> list[dict[str, Any]]:
    """Per cell and server: median CPU % of one core of the load generator and of the server."""
    table = []
    for cell in cells:
        entry: dict[str, Any] = {"cell": cell.id, "servers": {}}
        for spec in servers:
            runs = [r for r in samples.get(cell.id, {}).get(spec.name, []) if "client_cpu" in r]
            if runs:
                entry["servers"][spec.name] = {
                    "client_cpu": statistics.median(r["client_cpu"] for r in runs),
                    "server_cpu": statistics.median(r["server_cpu"] for r in runs),
                }
        table.append(entry)
    return table


#: A cell where the load generator's median CPU reaches this (% of one core) is marked ``≥``.
LG_BUSY = 85.0
#: ... or where it exceeds the server's CPU while above this.
LG_BUSIER = 50.0


def generator_bound(cpu: dict[str, float]) -> bool:
    """Whether the load generator, not the server, may have set the pace of a cell."""
    client, server = cpu["client_cpu"], cpu["server_cpu"]
    return client >= LG_BUSY or (client >= LG_BUSIER and client > server)


def render(
    rows: list[dict[str, Any]], cpu: list[dict[str, Any]], servers: list[ServerSpec], notes: list[str], header: str
) -> str:
    names = [spec.name for spec in servers]
    lines = [
        header,
        "",
        "Each cell: median (ratio to websockets-asyncio). Higher is better for msg/s, MB/s and",
        "handshakes/s; lower is better for ms and KiB/conn.",
        "",
    ]
    busy = {(e["cell"], name) for e in cpu for name, v in e["servers"].items() if generator_bound(v)}
    lines.append("| cell | metric | " + " | ".join(names) + " |")
    lines.append("|---|---|" + "---|" * len(names))
    for row in rows:
        cols = []
        for name in names:
            entry = row["servers"][name]
            mark = "≥" if (row["cell"], name) in busy and row["higher_is_better"] else ""
            if entry["median"] is None:
                cols.append("—")
            elif entry["ratio"] is None:
                cols.append(mark + fmt(entry["median"]))
            else:
                cols.append(f"{mark}{fmt(entry['median'])} ({entry['ratio']:.2f}×)")
        lines.append(f"| {row['title']} | {row['label']} | " + " | ".join(cols) + " |")
    lines += ["", "Load generator CPU (% of one core) / server CPU, median per cell:", ""]
    lines.append("| cell | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    worst = (0.0, "", "")
    for entry in cpu:
        cols = []
        for name in names:
            values = entry["servers"].get(name)
            if values is None:
                cols.append("—")
                continue
            cols.append(f"{values['client_cpu']:.0f} / {values['server_cpu']:.0f}")
            if values["client_cpu"] > worst[0]:
                worst = (values["client_cpu"], entry["cell"], name)
        lines.append(f"| {entry['cell']} | " + " | ".join(cols) + " |")
    if worst[1]:
        lines += ["", f"Highest load-generator CPU: {worst[0]:.0f} % of a core ({worst[1]} against {worst[2]})."]
    if busy:
        lines += [
            "",
            f"≥: the load generator used at least {LG_BUSY:.0f} % of a core, or more CPU than the server above "
            f"{LG_BUSIER:.0f} %: it may be the bottleneck, the server can do at least this much.",
        ]
    if notes:
        lines += ["", "Errors and skipped cells:", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
        help="a ~3 minute subset, 1 repeat (also BENCH_QUICK=1)",
    )
    parser.add_argument("--scenarios", default="", help="comma list of echo,stream,broadcast,idle,scale,deflate")
    parser.add_argument("--servers", default="", help="comma list of server names (the baseline is always added)")
    parser.add_argument("--cells", default="", help="comma list of cell ids or globs, e.g. 'echo-c100-*,idle'")
    parser.add_argument("--repeats", type=int, default=None, help="rounds of the whole matrix (3; quick: 1)")
    parser.add_argument(
        "--idle-repeats",
        type=int,
        default=None,
        help="repeats of the idle cell, the longest one (2; at most --repeats)",
    )
    parser.add_argument("--duration", type=float, default=None, help="measured seconds per echo/stream cell")
    parser.add_argument("--warmup", type=float, default=None, help="unmeasured seconds before each echo/stream cell")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the server and the client to cores")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="measure each server straight after its start, without the one 1 MiB echo that seasons it "
        "(loadgen.season: websockets' asyncio server then pays an mmap/munmap per message)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy record the server in echo/stream/deflate cells to results/profile-*.txt",
    )
    parser.add_argument(
        "--live-geventws",
        action="store_true",
        help="import geventws from the work tree in every cell instead of a snapshot taken at the start",
    )
    parser.add_argument("--no-baseline", action="store_true", help="do not add websockets-asyncio automatically")
    parser.add_argument(
        "--versus",
        action="append",
        default=[],
        metavar="GITREF",
        help="also run geventws as of this git ref (e.g. main~3), as server geventws@<commit>: A/B in one run",
    )
    parser.add_argument("--list", action="store_true", help="print the cells and servers and exit")
    parser.add_argument("--out", default=str(RESULTS), help="folder for <timestamp>.json and .md")
    opts = parser.parse_args(argv)
    if opts.repeats is None:
        opts.repeats = 1 if opts.quick else 3
    if opts.idle_repeats is None:
        opts.idle_repeats = 2
    opts.idle_repeats = min(opts.idle_repeats, opts.repeats)
    if opts.duration is None:
        opts.duration = 1.0
    if opts.warmup is None:
        opts.warmup = 0.3
    return opts


def select_cells(opts: argparse.Namespace) -> list[Cell]:
    """The quick or full matrix; ``--cells`` picks from the full matrix whatever the mode."""
    cells = build_cells(opts.quick and not opts.cells)
    if opts.scenarios:
        wanted = {s.strip() for s in opts.scenarios.split(",") if s.strip()}
        unknown = wanted - {c.scenario for c in cells}
        if unknown:
            sys.exit(f"unknown scenarios: {', '.join(sorted(unknown))}")
        cells = [c for c in cells if c.scenario in wanted]
    if opts.cells:
        patterns = [p.strip() for p in opts.cells.split(",") if p.strip()]
        cells = [c for c in cells if any(fnmatch.fnmatch(c.id, p) for p in patterns)]
    return cells


def select_servers(opts: argparse.Namespace) -> list[ServerSpec]:
    if not opts.servers:
        return list(SERVERS)
    wanted = [s.strip() for s in opts.servers.split(",") if s.strip()]
    by_name = {spec.name: spec for spec in SERVERS + EXTRA_SERVERS}
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        sys.exit(f"unknown servers: {', '.join(unknown)} (known: {', '.join(by_name)})")
    if BASELINE not in wanted and not opts.no_baseline:
        wanted.insert(0, BASELINE)
    return [by_name[name] for name in wanted]


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    cells = select_cells(opts)
    servers = select_servers(opts)
    if opts.list:
        for cell in build_cells(opts.quick):
            print(f"{cell.id:22} {cell.scenario:10} {cell.title}")
        for spec in SERVERS:
            print(f"{spec.name:22} {spec.script} {' '.join(spec.args)}  ({spec.note})")
        return 0
    if not cells:
        sys.exit("no cell selected")
    nofile = raise_nofile()
    if not opts.no_pin:
        if os.cpu_count() and os.cpu_count() >= 2:  # type: ignore[operator]
            pin(CLIENT_CORE)
        else:
            opts.no_pin = True
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {}
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="geventws-bench-") as work:
        source = {"snapshot": None}
        if not opts.live_geventws:
            source = snapshot_geventws(Path(work) / "snapshot")
        for index, ref in enumerate(opts.versus):
            servers.append(export_geventws(ref, Path(work) / f"versus-{index}"))
        log_dir = Path(work) / "logs"
        log_dir.mkdir()
        deflate_ok = {spec.name: spec.deflate for spec in servers}
        if any(c.scenario == "deflate" for c in cells):
            has_factory = probe_geventws_deflate()
            for spec in servers:
                if spec.script == "geventws_server.py":
                    deflate_ok[spec.name] = has_factory
        order = schedule(cells, servers, opts.repeats, opts.idle_repeats, deflate_ok)
        started = time.monotonic()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        pinning = "off" if opts.no_pin else f"server core {SERVER_CORE}, client core {CLIENT_CORE}"
        print(
            f"geventws bench {stamp}: {len(cells)} cells × {len(servers)} servers × {opts.repeats} repeats = "
            f"{len(order)} runs, about {estimate(order, opts) / 60:.1f} min; duration {opts.duration} s, "
            f"warmup {opts.warmup} s; pinning {pinning}; {'fresh servers' if opts.fresh else 'servers seasoned'}; "
            f"RLIMIT_NOFILE {nofile}; geventws {describe_source(source)}; load average now {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        skipped_servers = [
            f"deflate cells / {spec.name}: skipped: "
            + ("geventws has no Rfc7692CompressionFactory" if spec.script == "geventws_server.py" else spec.note)
            for spec in servers
            if not deflate_ok[spec.name] and any(c.scenario == "deflate" for c in cells)
        ]
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            try:
                for index, (rep, cell, spec) in enumerate(order, 1):
                    load1 = os.getloadavg()[0]
                    result = run_one(runner, cell, spec, opts, log_dir)
                    result["repeat"] = rep
                    result["load1"] = load1
                    samples.setdefault(cell.id, {}).setdefault(spec.name, []).append(result)
                    print(
                        f"[{index}/{len(order)} {time.monotonic() - started:5.0f}s] {cell.id:18} {spec.name:18} "
                        + describe(cell, result),
                        flush=True,
                    )
            except KeyboardInterrupt:
                interrupted = True
                print("interrupted: writing the partial results", flush=True)
    elapsed = time.monotonic() - started
    rows, notes = summarize(cells, servers, samples)
    notes = skipped_servers + notes
    cpu = cpu_summary(cells, servers, samples)
    header = (
        f"# geventws benchmark {stamp}\n\n{len(order)} runs in {elapsed / 60:.1f} min"
        f"{' (interrupted)' if interrupted else ''}; {opts.repeats} repeat(s), medians; "
        f"{'quick' if opts.quick else 'full'} matrix (idle cell: {opts.idle_repeats} repeat(s)); "
        f"duration {opts.duration} s + warmup {opts.warmup} s per echo cell; load generator picows on uvloop; "
        f"pinning {pinning}; {season_note(opts)}; Python {sys.version.split()[0]}; {machine()}; "
        f"geventws {describe_source(source)}; {load_note(samples)}."
    )
    report = render(rows, cpu, servers, notes, header)
    print()
    print(report)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "timestamp": stamp,
        "elapsed_s": elapsed,
        "interrupted": interrupted,
        "options": {k: v for k, v in vars(opts).items()},
        "geventws_source": source,
        "servers": [vars(spec) | {"args": list(spec.args)} for spec in servers],
        "cells": [
            {
                "id": c.id,
                "scenario": c.scenario,
                "title": c.title,
                "params": c.params,
                "metrics": [vars(m) for m in c.metrics],
            }
            for c in cells
        ],
        "rows": rows,
        "cpu": cpu,
        "notes": notes,
        "runs": samples,
    }
    (out / f"{stamp}.json").write_text(json.dumps(document, indent=1, default=str))
    (out / f"{stamp}.md").write_text(report)
    print(f"wrote {out / (stamp + '.json')} and {out / (stamp + '.md')}")
    try:
        document = json.loads((out / f"{stamp}.json").read_text())  # as chart.py reads it
        chart.draw(document, out / f"{stamp}.png")
        (out / f"{stamp}-table.txt").write_text(chart.table(document))
    except ImportError as error:  # matplotlib is in bench/requirements.txt; without it, no chart
        print(f"no chart: {error}")
    else:
        print(chart.table(document))
        print(f"wrote the chart {out / (stamp + '.png')} and its table {out / (stamp + '-table.txt')}")
        print(f"into the docs and README: {sys.executable} bench/chart.py {out / (stamp + '.json')} --docs")
    return 130 if interrupted else 0


def season_note(opts: argparse.Namespace) -> str:
    if opts.fresh:
        return "servers measured fresh (--fresh: no seasoning echo)"
    return f"each server seasoned with one {loadgen.SEASON_SIZE // MIB} MiB echo after its start"


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores{' ' + model if model else ''}"


def load_note(samples: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    """The machine's 1-minute load average over the run: other processes compete for the same cores."""
    loads = sorted(r["load1"] for runs in samples.values() for rs in runs.values() for r in rs if "load1" in r)
    if not loads:
        return "load average unknown"
    return f"1-min load average {loads[0]:.1f}-{loads[-1]:.1f} (median {statistics.median(loads):.1f})"


def describe_source(source: dict[str, Any]) -> str:
    if not source.get("snapshot"):
        return "from the live work tree (--live-geventws)"
    changes = " + uncommitted changes" if source["local_changes"] else ""
    return f"snapshot of {source['commit'] or '?'}{changes} (sha256 {source['sha256']})"


def describe(cell: Cell, result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"skipped: {result['skipped']}"
    if "error" in result and not any(m.key in result for m in cell.metrics):
        return f"ERROR: {result['error']}"
    parts = [f"{m.label} {fmt(result.get(m.key))}" for m in cell.metrics if m.key in result]
    if "client_cpu" in result:
        parts.append(f"cpu lg {result['client_cpu']:.0f}% srv {result['server_cpu']:.0f}%")
    if "error" in result:
        parts.append(f"ERROR: {result['error']}")
    return ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
