"""What every benchmark shares: scratch databases, subprocesses, ports, /proc readings, figures."""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import httpx
import psycopg
from psycopg import sql

if TYPE_CHECKING:
    from rich.console import Console

    from bench.dataset import Dataset

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", ""})
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
QUIET_CORES = 0.3  # busier than this before a benchmark starts: someone else is working


class BenchError(RuntimeError):
    """A benchmark could not run (server did not start, load failed, ...)."""


# --- figures -------------------------------------------------------------------------------


@dataclass(slots=True)
class Figure:
    """One measured number, with what it is compared against and the target it must meet."""

    bench: str
    name: str
    value: float
    unit: str
    # "server/baseline" style comparison: the other measurement and value / other.
    versus: str | None = None
    versus_value: float | None = None
    target: str | None = None  # e.g. ">= 0.70", "< 25"; applies to `ratio` if compared, else value
    target_on: str = "value"  # "value" or "ratio"
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.versus_value is None or self.versus_value == 0:
            return None
        return self.value / self.versus_value

    def met(self) -> bool | None:
        if self.target is None:
            return None
        subject = self.ratio if self.target_on == "ratio" else self.value
        if subject is None:
            return None
        op, _, number = self.target.partition(" ")
        bound = float(number)
        return {
            "<": subject < bound,
            "<=": subject <= bound,
            ">": subject > bound,
            ">=": subject >= bound,
        }[op]

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["met"] = self.met()
        return data


@dataclass(slots=True)
class Section:
    """What one benchmark module returns: its figures and any raw details worth keeping."""

    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


# --- databases -----------------------------------------------------------------------------


def check_local(url: str) -> None:
    """Benchmarks only ever talk to this machine."""
    host = str(psycopg.conninfo.conninfo_to_dict(url).get("host") or "")
    if host.startswith("/"):
        return  # a Unix socket directory
    if any(h not in LOCAL_HOSTS for h in host.split(",")):
        raise BenchError(f"benchmarks only target 127.0.0.1, not {host!r}")


def with_dbname(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in info.items() if v is not None})


def url_for_uri(url: str) -> str:
    """The same connection as a postgresql:// URI (the form the CLI documents)."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    user = info.get("user") or "postgres"
    password = f":{info['password']}" if info.get("password") else ""
    host = info.get("host") or "127.0.0.1"
    port = info.get("port") or 5432
    return f"postgresql://{user}{password}@{host}:{port}/{info.get('dbname') or 'postgres'}"


class Databases:
    """Scratch databases named bench_*, each dropped when the run ends (or fails)."""

    def __init__(self, admin_url: str):
        check_local(admin_url)
        self.admin_url = admin_url
        self.created: list[str] = []

    def create(self, suffix: str) -> str:
        # BENCH_DB_TAG keeps the names of runs on a shared server apart (bench_<tag>_...).
        tag = os.environ.get("BENCH_DB_TAG", "")
        name = f"bench_{tag}_{suffix}" if tag else f"bench_{suffix}"
        if not re.fullmatch(r"bench_[a-z0-9_]+", name):
            raise BenchError(f"bad database name {name!r}")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if name not in self.created:
            self.created.append(name)
        return url_for_uri(with_dbname(self.admin_url, name))

    def drop(self, url: str) -> None:
        name = str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if name in self.created:
            self.created.remove(name)

    def drop_all(self) -> None:
        for name in list(self.created):
            self.drop(with_dbname(self.admin_url, name))

    def server_version(self) -> str:
        with psycopg.connect(self.admin_url) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


# --- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def healthmesh_argv(*args: str) -> list[str]:
    """The CLI, run by this interpreter (the project's virtualenv under `make bench`)."""
    return [sys.executable, "-m", "healthmesh", *args]


def switched_argv(switches: list[str], *args: str) -> list[str]:
    """``healthmesh serve`` with parts switched off, for benchmarks only (bench/switched.py)."""
    return [sys.executable, "-m", "bench.switched", *switches, "serve", *args]


def reused_url(ctx: Context) -> str:
    """The URL of ``--reuse-database``: a database an earlier run (or bench.multiply and
    ``healthmesh load``) made, measured as it is."""
    name = ctx.reuse_database or ""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in ("postgres", "template0", "template1"):
        raise BenchError(f"--reuse-database takes a scratch database name, not {name!r}")
    return url_for_uri(with_dbname(ctx.databases.admin_url, name))


@dataclass(slots=True)
class RunResult:
    returncode: int
    seconds: float
    peak_rss_kb: int  # ru_maxrss of the process itself (wait4), the kernel's own peak
    cpu_seconds: float  # of the process and the children it waited for
    output: str
    peak_tree_rss_kb: int = 0  # the largest sum of RSS over the process and its descendants


def run_measured(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 3600
) -> RunResult:
    """Run a command to its end; its wall time, peak RSS and CPU time from wait4()."""
    with open_log() as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, env=dict(env) if env else None
        )
        sampler = TreeRss(proc.pid)
        sampler.start()
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        sampler.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read().decode(errors="replace")
    return RunResult(
        returncode=proc.returncode,
        seconds=seconds,
        peak_rss_kb=int(usage.ru_maxrss),
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        output=output,
        peak_tree_rss_kb=max(sampler.peak_kb, int(usage.ru_maxrss)),
    )


@contextmanager
def open_log() -> Iterator[IO[bytes]]:
    import tempfile

    with tempfile.TemporaryFile() as f:
        yield f


class Service:
    """A server subprocess on 127.0.0.1, ready once ``ready_path`` answers 200."""

    def __init__(
        self,
        argv: Sequence[str],
        port: int,
        *,
        ready_path: str = "/health",
        env: Mapping[str, str] | None = None,
    ):
        self.argv = list(argv)
        self.port = port
        self.ready_path = ready_path
        self.env = dict(os.environ) | dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Service:
        import tempfile

        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=self.env
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.argv[:4]} exited at start:\n{self.log_tail()}")
            try:
                if httpx.get(self.base + self.ready_path, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise BenchError(f"{self.argv[:4]} did not answer within 60 s:\n{self.log_tail()}")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 3000) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-chars:]


# --- /proc ---------------------------------------------------------------------------------


def proc_status_kb(pid: int, key: str) -> int:
    """A kB figure from /proc/PID/status: VmHWM is the peak RSS so far, VmRSS the current."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    """The process and every process below it (children of any of their threads)."""
    found: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        found.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def tree_rss_kb(pid: int) -> int:
    """Current RSS of a process and its descendants, added up (shared pages count twice)."""
    total = 0
    for p in descendants(pid):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE_KB
        except (OSError, IndexError, ValueError):
            continue
    return total


class TreeRss:
    """Samples :func:`tree_rss_kb` every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, tree_rss_kb(self.pid))
            self._stop.wait(self.interval)

    def start(self) -> TreeRss:
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_kb


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _cpu_of(pids: list[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        try:
            found[pid] = proc_cpu_seconds(pid)
        except (OSError, ValueError, IndexError):
            continue
    return found


def postgres_pids(dbname: str | None = None) -> list[int]:
    """Local postgres processes /proc shows: with ``dbname``, that database's backends and the
    server's own background processes, not other databases' backends."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            if dbname is not None:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                backend = "(" in cmd or "[local]" in cmd  # "user db 127.0.0.1(port) state"
                if backend and f" {dbname} " not in cmd:
                    continue
            pids.append(int(entry.name))
        except OSError:
            continue
    return pids


class CpuMeter:
    """CPU seconds used between start and stop by a process tree, or by PostgreSQL (for one
    database: its backends and the server's background processes).

    Processes that end in between take their time with them; the figure is a lower bound.
    """

    def __init__(self, pid: int | None = None, *, database_url: str | None = None):
        self.pid = pid
        self.dbname = (
            str(psycopg.conninfo.conninfo_to_dict(database_url).get("dbname"))
            if database_url
            else None
        )
        self._before: dict[int, float] = {}

    def pids(self) -> list[int]:
        return postgres_pids(self.dbname) if self.pid is None else descendants(self.pid)

    def start(self) -> CpuMeter:
        self._before = _cpu_of(self.pids())
        return self

    def stop(self) -> float:
        after = _cpu_of(self.pids())
        return sum(max(0.0, t - self._before.get(pid, 0.0)) for pid, t in after.items())


# --- the machine ---------------------------------------------------------------------------


def machine_info(databases: Databases) -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    with suppress(OSError, IndexError, ValueError):
        mem_kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
    wrk = shutil.which("wrk")
    wrk_version = ""
    if wrk:
        probe = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        wrk_version = (
            (probe.stdout or probe.stderr).splitlines()[0] if probe.stdout or probe.stderr else ""
        )
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "postgresql": databases.server_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wrk": wrk_version,
    }


# --- a run ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Context:
    """What the runner hands every benchmark."""

    databases: Databases
    dataset: Dataset
    work: Path
    duration: float
    rounds: int
    warmup: float
    concurrency: int
    clients: int
    wrk_threads: int
    py_spy: str | None
    log: Console  # progress lines
    wait_quiet: float = 0.0  # seconds to wait for an idle machine before each benchmark
    auth_clients: int = 4  # concurrent clients of the token-issuance benchmarks
    auth_flows: int = 100  # token requests / authorization-code flows timed per kind
    # A database that holds the dataset loaded by `healthmesh load`, for read to reuse.
    loaded_url: str | None = None
    # search (bench/search.py): its own data set and database, see its docstring.
    reuse_database: str | None = None  # an existing bench_* database to measure as it is
    keep: bool = False  # leave the database search loaded in place
    search_resources: int = 1_000_000
    search_samples: int = 100  # parameter sets per query
    search_clients: int = 4  # concurrent clients in the throughput runs
    auth_tokens: bool = True  # auth: also time token issuance (after the search runs)
    seed: int = 1
    synthea_dir: Path | None = None


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy since boot, all cores (not idle or iowait)."""
    return _cpu_times()[0] / CLOCK_TICKS


class MachineMeter:
    """Cores the whole machine kept busy between start and stop, everyone's work included."""

    def start(self) -> MachineMeter:
        self._before = _cpu_times()
        return self

    def stop(self) -> float:
        busy0, total0 = self._before
        busy1, total1 = _cpu_times()
        return (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)


class OthersMeter:
    """Which processes outside the ones under test used the CPU between start and stop."""

    @staticmethod
    def _all() -> dict[int, float]:
        return _cpu_of([int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()])

    def start(self) -> OthersMeter:
        self._before = self._all()
        self._started = time.monotonic()
        return self

    def stop(self, mine: set[int], top: int = 3) -> list[tuple[str, float]]:
        """The ``top`` busiest processes not in ``mine``: (pid and command name, cores)."""
        seconds = max(1e-9, time.monotonic() - self._started)
        used = []
        for pid, t in self._all().items():
            if pid in mine or pid == os.getpid():
                continue
            delta = t - self._before.get(pid, 0.0)
            if delta > 0.02 * seconds:
                try:
                    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                    name = raw.replace(b"\0", b" ").decode(errors="replace").strip()[:80]
                except OSError:
                    name = "?"
                used.append((f"{pid} {name}", round(delta / seconds, 2)))
        return sorted(used, key=lambda x: -x[1])[:top]


def busy_cores(seconds: float = 1.0) -> float:
    """How many cores the whole machine kept busy over the next ``seconds``."""
    meter = MachineMeter().start()
    time.sleep(seconds)
    return meter.stop()


def quiet_check(ctx: Context) -> float:
    """Busy cores right now (after waiting up to ``ctx.wait_quiet`` s for them to settle),
    with a warning when others' work will skew the figures."""
    deadline = time.monotonic() + ctx.wait_quiet
    busy = round(busy_cores(), 2)
    while busy > QUIET_CORES and time.monotonic() < deadline:
        busy = round(busy_cores(2.0), 2)
    if busy > QUIET_CORES:
        ctx.log.print(
            f"  [yellow]warning: {busy:.1f} cores already busy before this benchmark;"
            " the figures will be lower and noisier than on an idle machine[/]"
        )
    return busy
