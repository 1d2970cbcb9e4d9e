"""Share-link redirect throughput: the real gateway against a bare aiohttp app, with wrk.

    .venv/bin/python bench/run.py [--threads 1] [--connections 32] [--duration 10]
                                  [--rounds 2] [--pick best|median|paired] [--json]

Seeds a temporary data directory with one merchant and N products (a Taobao target each)
through the store API, starts ``python -m gateway serve`` and ``bench/bare.py`` (each one
process on uvloop), checks both answer a Taobao-app User-Agent with a 302 to the Taobao
item, then loads them one after the other with the same wrk settings, spreading requests at
random over every code. Afterwards it checks every click the gateway answered reached
storage, prints both sides and the gateway/bare ratios, stops both servers with SIGTERM and
removes the data. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from gateway.ids import new_code
from gateway.settings import SETTINGS, ConfigError, load_settings
from gateway.store import CodeTaken, Merchant, open_store
from gateway.store.turns import WriteTurns

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
HOST = "127.0.0.1"
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 AliApp(TB/10.30.0)"
#: --landing: a shopper inside WeChat, which does not open Taobao: the landing page.
WECHAT_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
             "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) "
             "NetType/WIFI Language/zh_CN")
MERCHANT = Merchant("bench", "Bench 商户", ("shop.example.com",))
TAOBAO_URL = "https://item.taobao.com/item.htm?id={}"
FIRST_ITEM_ID = 600_000_000_000
# --visitor-cookie: every request comes from one returning visitor (the gateway's ``ll_v``).
VISITOR_COOKIE = "ll_v=BenchVisitor0001"

# CPU used by other processes (in % of one CPU) above which figures are flagged as noisy.
BUSY_OTHER_PERCENT = 15.0

# Targets (README), by mode: (least req/s ratio, most p99 ratio). Spare CPUs: the gateway
# >= 70% of bare, p99 < 2x. One CPU for the gateway and all it starts, and bare on the same
# CPU: >= 55%, p99 <= 3x. --landing: WeChat's landing page >= 80% of the gateway's own
# redirect (its p99 is shown, with no target).
TARGETS = {"spare": (0.70, 2.0), "one-cpu": (0.55, 3.0), "landing": (0.80, None)}
#: --one-cpu: the CPU the servers (and all they start) run on; wrk runs on the others.
SERVER_CPU = 0
#: --one-cpu: unscored load before every measured run, so each starts in a steady state.
ROUND_WARMUP = 2.0

LUA = """\
-- Written by bench/run.py: one random share code per request.
local codes = {}
for line in io.lines("%(codes)s") do codes[#codes + 1] = line end
local n = #codes
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + (thread_id or 0))
end

local unique_ua = %(unique_ua)s
local counter = 0

function request()
  if unique_ua then
    -- A User-Agent never seen before on every request: detection runs in full each time.
    counter = counter + 1
    local headers = {["User-Agent"] = "%(ua)s Build/" .. thread_id .. "." .. counter}
    return wrk.format(nil, "/p/" .. codes[math.random(n)], headers)
  end
  return wrk.format(nil, "/p/" .. codes[math.random(n)])
end
"""


class BenchError(Exception):
    """The benchmark could not run or its checks failed; the message says why."""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- wrk ------------------------------------------------------------------------------------
def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk is not on PATH: apt-get install -y wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "wrk"]
    if subprocess.run(install, env=env, stdout=sys.stderr, check=False).returncode != 0:
        log("install failed: apt-get update, then again")
        subprocess.run(["apt-get", "update"], env=env, stdout=sys.stderr, check=True)
        subprocess.run(install, env=env, stdout=sys.stderr, check=True)
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk is still not on PATH after apt-get install -y wrk")
    return found


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_LATENCY = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX_3XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


@dataclass
class WrkResult:
    rps: float
    requests: int
    seconds: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    socket_errors: int = 0
    non_2xx_3xx: int = 0
    #: CPU the server process used during the run (all its threads), when /proc tells.
    cpu_percent: float | None = None
    cpu_us_per_request: float | None = None
    #: The server's main thread alone (its event loop), per request: user and kernel time.
    #: The kernel part is mostly the loopback send, which also wakes wrk: it grows when wrk
    #: has gone to sleep between answers, i.e. when the server is the slower side.
    loop_user_us: float | None = None
    loop_kernel_us: float | None = None
    #: CPU that neither the server nor wrk used meanwhile (other processes, steal), in % of
    #: one CPU: above a few percent, something else shared the machine.
    other_cpu_percent: float | None = None
    raw: str = field(default="", repr=False)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["raw"]
        return out


def parse_wrk(text: str) -> WrkResult:
    """The figures of one ``wrk --latency`` run; latencies in milliseconds."""
    rps, requests = _RPS.search(text), _REQUESTS.search(text)
    latency = {int(m[1]): float(m[2]) * _UNIT_MS[m[3]] for m in _LATENCY.finditer(text)}
    if rps is None or requests is None or not {50, 75, 90, 99} <= latency.keys():
        raise BenchError(f"cannot read wrk's output:\n{text}")
    errors = _SOCKET_ERRORS.search(text)
    non = _NON_2XX_3XX.search(text)
    return WrkResult(
        rps=float(rps[1]), requests=int(requests[1]),
        seconds=float(requests[2]) * _UNIT_MS[requests[3]] / 1e3,
        p50_ms=latency[50], p75_ms=latency[75], p90_ms=latency[90], p99_ms=latency[99],
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        non_2xx_3xx=int(non[1]) if non else 0, raw=text)


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in task.read_text().split():
                found += [int(child), *_descendants(int(child))]
    return found


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds so far of a process, its threads and its live children
    (the gateway's click writer is one) (Linux), else None."""
    total = 0.0
    for each in (pid, *_descendants(pid)):
        try:
            text = Path(f"/proc/{each}/stat").read_text()
        except OSError:
            if each == pid:
                return None
            continue  # a child that just exited
        fields = text.rsplit(")", 1)[1].split()  # fields[0] is the state, field 3 of stat(5)
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def loop_cpu_seconds(pid: int) -> tuple[float, float] | None:
    """User and system CPU seconds so far of a process's main thread (Linux), else None."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy (steal included), all CPUs; or None."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal (guest time is inside user already).
    # Interrupt time is left out: the loopback traffic of the run itself lands there.
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = ticks
    return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(wrk: str, port: int, script: Path, args: argparse.Namespace,
            duration: float, pid: int | None = None, *, ua: str = UA,
            settle: Any = None) -> WrkResult:
    """One wrk run. ``settle`` (the gateway's): called before the CPU is read afterwards,
    so work the run left behind (the writer storing its clicks) is counted in CPU/req."""
    headers = [] if args.unique_ua else [f"User-Agent: {ua}"]
    if args.visitor_cookie:
        headers.append(f"Cookie: {VISITOR_COOKIE}")
    cmd = [wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{duration:g}s", "--latency",
           "-s", str(script), *(a for h in headers for a in ("-H", h)),
           f"http://{HOST}:{port}/p/"]
    cpu_before = cpu_seconds(pid) if pid else None
    loop_before = loop_cpu_seconds(pid) if pid else None
    busy_before, wrk_before = machine_busy_seconds(), children_cpu_seconds()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60,
                          check=False, preexec_fn=client_cpus(args))
    if settle is not None:
        settle()
    cpu_after = cpu_seconds(pid) if pid else None
    loop_after = loop_cpu_seconds(pid) if pid else None
    busy_after, wrk_after = machine_busy_seconds(), children_cpu_seconds()
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    result = parse_wrk(done.stdout)
    if not result.requests:  # every ratio would divide by it
        raise BenchError(f"no request was answered on port {port} in {duration:g} s: "
                         "did the server stop?")
    if cpu_before is not None and cpu_after is not None:
        used = cpu_after - cpu_before
        result.cpu_percent = 100 * used / result.seconds
        result.cpu_us_per_request = 1e6 * used / result.requests
        if loop_before is not None and loop_after is not None:
            result.loop_user_us = 1e6 * (loop_after[0] - loop_before[0]) / result.requests
            result.loop_kernel_us = 1e6 * (loop_after[1] - loop_before[1]) / result.requests
        if busy_before is not None and busy_after is not None:
            other = (busy_after - busy_before) - used - (wrk_after - wrk_before)
            result.other_cpu_percent = max(0.0, 100 * other / result.seconds)
    return result


def server_cpus(args: argparse.Namespace) -> Any:
    """--one-cpu: a server and everything it starts (the writer) run on SERVER_CPU only."""
    if not args.one_cpu:
        return None
    return lambda: os.sched_setaffinity(0, {SERVER_CPU})


def client_cpus(args: argparse.Namespace) -> Any:
    """--one-cpu: wrk runs on every CPU but the servers'."""
    if not args.one_cpu:
        return None
    return lambda: os.sched_setaffinity(0, os.sched_getaffinity(0) - {SERVER_CPU})


# --- data -----------------------------------------------------------------------------------
def bench_env(data_dir: Path, overrides: list[str]) -> dict[str, str]:
    """Our environment without any LINKLOOP_* of the caller's, plus the bench's settings
    and the ``--set section.key=value`` overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINKLOOP_")}
    env["LINKLOOP_STORAGE_DATA_DIR"] = str(data_dir)
    env["LINKLOOP_LOG_LEVEL"] = "warning"
    known = {s.name: s for s in SETTINGS}
    for item in overrides:
        name, _, value = item.partition("=")
        if name not in known or name == "storage.data_dir":
            raise BenchError(f"--set {item!r}: not a setting the bench may change")
        env[known[name].env_var] = value
    return env


async def seed(env: dict[str, str], count: int, chunk: int = 500) -> dict[str, str]:
    """One merchant and ``count`` products with a Taobao target; returns code -> Location."""
    store = await open_store(load_settings(environ=env))
    try:
        await store.create_merchant(MERCHANT)
        links: dict[str, str] = {}

        async def create(item_id: str) -> None:
            while True:
                code = new_code()
                try:
                    await store.create_product(
                        MERCHANT.id, code=code, title=f"Bench item {item_id}",
                        targets={"taobao": {"item_id": item_id}}, image_url=None,
                        price="9.90")
                except CodeTaken:
                    continue
                links[code] = TAOBAO_URL.format(item_id)
                return

        for start in range(0, count, chunk):
            await asyncio.gather(*(create(str(FIRST_ITEM_ID + i))
                                   for i in range(start, min(start + chunk, count))))
        return links
    finally:
        await store.close()


async def recorded_clicks(env: dict[str, str]) -> int:
    """Clicks in the merchant's rollups (a range wide enough for any time zone)."""
    store = await open_store(load_settings(environ=env))
    try:
        today = date.today()
        rows = await store.stats(MERCHANT.id, from_day=(today - timedelta(days=2)).isoformat(),
                                 to_day=(today + timedelta(days=2)).isoformat(), by="platform")
        return sum(row.clicks for row in rows)
    finally:
        await store.close()


# --- servers --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(port: int, path: str, headers: dict[str, str] | None = None,
             timeout: float = 5.0) -> tuple[int, str | None, bytes]:
    """Status, Location and body of one GET (redirects are not followed)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Location"), resp.read()
    finally:
        conn.close()


class Server:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int,
                 log_path: Path, cwd: Path = ROOT, preexec: Any = None) -> None:
        self.name, self.argv, self.env, self.port, self.log_path = (
            name, argv, env, port, log_path)
        self.preexec = preexec  # --one-cpu: pins the process (and its children) to a CPU
        self.cwd = cwd  # where ``python -m gateway`` finds the gateway's source
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=out,
                                         stderr=subprocess.STDOUT, preexec_fn=self.preexec)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode} on start:\n"
                                 f"{self.log_tail()}")
            try:
                if http_get(self.port, "/healthz", timeout=1.0)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise BenchError(f"{self.name} not ready after {timeout:g}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait; SIGKILL only if it will not go. Returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{self.name} ignored SIGTERM for {timeout:g}s: killing it")
            self.proc.kill()
            self.proc.wait()
            raise BenchError(f"{self.name} did not stop on SIGTERM") from None


def check_redirect(server: Server, code: str, expected: str) -> None:
    status, location, body = http_get(server.port, f"/p/{code}", {"User-Agent": UA})
    if status != 302 or location != expected:
        raise BenchError(
            f"{server.name}: GET /p/{code} with a Taobao-app User-Agent answered {status} "
            f"Location={location!r}, expected 302 Location={expected!r}\n"
            f"{body[:500].decode(errors='replace')}")


def check_landing(server: Server, code: str) -> None:
    status, _, body = http_get(server.port, f"/p/{code}", {"User-Agent": WECHAT_UA})
    if status != 200 or b'id="stores"' not in body:
        raise BenchError(f"{server.name}: GET /p/{code} from WeChat answered {status}, "
                         f"expected the landing page\n{body[:500].decode(errors='replace')}")


class LockProbe:
    """On SQLite, how long a write by the gateway itself (a console save, a WeCom callback
    stored) would wait for the database's write lock while the click writer holds it: every
    ``every`` seconds a connection of our own takes its turn as such a write does
    (gateway/store/turns.py), takes the lock (``BEGIN IMMEDIATE``) and lets it go at once,
    timing the wait. The click writer's transaction is the only long holder, so the longest
    wait is its longest hold. Waits past ``storage.timeout_seconds`` (5 s) are gateway
    calls that would have failed as storage unavailable."""

    def __init__(self, path: Path, every: float = 0.25) -> None:
        self.path, self.every = path, every
        self.waits: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lock-probe", daemon=True)

    def __enter__(self) -> LockProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=600, isolation_level=None)
        turns = WriteTurns(self.path)
        try:
            while not self._stop.wait(self.every):
                started = time.perf_counter()
                with turns.waiting(600):
                    conn.execute("BEGIN IMMEDIATE")
                    self.waits.append(time.perf_counter() - started)
                    conn.execute("ROLLBACK")
        finally:
            turns.close()
            conn.close()

    def as_json(self, limit: float) -> dict[str, Any]:
        waits = sorted(self.waits)
        return {"probes": len(waits), "longest_s": waits[-1] if waits else None,
                "p99_s": waits[max(0, int(len(waits) * 0.99) - 1)] if waits else None,
                "over_1s": sum(w > 1 for w in waits),
                "over_timeout": sum(w > limit for w in waits), "timeout_s": limit}


def drain_recorder(gateway: Server, timeout: float = 600.0) -> dict[str, Any]:
    """Wait until the gateway's recorder holds nothing pending; its /readyz counters. A
    writer behind the requests on one CPU catches up after the run: the time it took is
    logged (and counted in the run's CPU)."""
    started = time.monotonic()
    deadline = started + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            status, _, raw = http_get(gateway.port, "/readyz")
            body = json.loads(raw)
            if status == 200 and body.get("pending") == 0:
                waited = time.monotonic() - started
                if waited > 2:
                    log(f"the writer caught up {waited:.0f}s after the run")
                return body
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    log(f"gateway recorder still pending after {timeout:g}s: {body}")
    return body


# --- /metrics against the counts ---------------------------------------------------------------
def scrape_metrics(gateway: Server, env: dict[str, str]) -> dict[str, float]:
    """The gateway's click counters from GET /metrics, read with an admin token minted by
    ``linkloop token`` (the CLI's public way) against the bench's settings."""
    from prometheus_client.parser import text_string_to_metric_families

    minted = subprocess.run(
        [sys.executable, "-m", "gateway", "token", "--merchant", MERCHANT.id, "--role", "admin",
         "--ttl", "1h"], env=env, capture_output=True, text=True, timeout=60, check=False)
    if minted.returncode != 0:
        raise BenchError(f"linkloop token failed: {minted.stderr.strip()}")
    status, _, raw = http_get(gateway.port, "/metrics",
                              {"Authorization": f"Bearer {minted.stdout.strip()}"})
    if status != 200:
        raise BenchError(f"GET /metrics answered {status}: {raw[:300]!r}")
    wanted = {("linkloop_clicks_total", (("outcome", o),)): o
              for o in ("taken", "written", "journaled", "dropped")}
    wanted[("linkloop_http_requests_total", (("route", "/p/{code}"), ("status", "302")))] = \
        "redirects"
    # --landing: WeChat's clicks are answered with a page (200), not a redirect.
    wanted[("linkloop_http_requests_total", (("route", "/p/{code}"), ("status", "200")))] = \
        "pages"
    wanted[("linkloop_share_link_seconds_count", ())] = "timed"
    found = dict.fromkeys(wanted.values(), 0.0)
    for family in text_string_to_metric_families(raw.decode()):
        for sample in family.samples:
            name = wanted.get((sample.name, tuple(sorted(sample.labels.items()))))
            if name is not None:
                found[name] = sample.value
    return found


def compare_metrics(scraped: dict[str, float], clicks: dict[str, Any]) -> dict[str, Any]:
    """/metrics (scraped once the recorder was drained) against the clicks in storage and
    the responses wrk counted: every click taken, written and redirected, none journaled or
    dropped, every share-link request answered (a redirect or, with --landing, a page) and
    timed."""
    recorded, answered = clicks["recorded"], clicks["answered"]
    high = answered + clicks["in_flight_allowed"]
    checks = {
        "taken == recorded": scraped["taken"] == recorded,
        "written == recorded": scraped["written"] == recorded,
        "journaled == 0": scraped["journaled"] == 0,
        "dropped == 0": scraped["dropped"] == 0,
        "redirects + pages == recorded": scraped["redirects"] + scraped["pages"] == recorded,
        "timed == recorded": scraped["timed"] == recorded,
        "answered <= redirects + pages <= answered + in flight":
            answered <= scraped["redirects"] + scraped["pages"] <= high,
    }
    figures = {k: int(v) for k, v in scraped.items()}
    failed = [k for k, ok in checks.items() if not ok]
    line = (f"metrics: /metrics taken {figures['taken']}, written {figures['written']}, "
            f"journaled {figures['journaled']}, dropped {figures['dropped']}, redirects "
            f"{figures['redirects']}, pages {figures['pages']}, timed {figures['timed']} / "
            f"{recorded} recorded, "
            f"{answered} answered: " + ("MISMATCH (" + "; ".join(failed) + ")" if failed
                                        else "ok"))
    return {**figures, "recorded": recorded, "answered": answered, "failed": failed,
            "ok": not failed, "line": line}


# --- profiling ------------------------------------------------------------------------------
def profile_gateway(wrk: str, gateway: Server, script: Path, args: argparse.Namespace,
                    out: Path) -> WrkResult:
    """One extra, unscored gateway run under ``py-spy record``."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
    fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(out.suffix, "raw")
    seconds = max(1, int(args.duration))
    # --subprocesses: the click writer too (a child process), its stacks under its own pid.
    cmd = [py_spy, "record", "--pid", str(gateway.pid), "--subprocesses", "-d", str(seconds),
           "-o", str(out), "-f", fmt]
    log(f"profiling the gateway and its click writer for {seconds}s into {out} ({fmt})")
    with subprocess.Popen(cmd, stdout=sys.stderr, stderr=sys.stderr) as spy:
        time.sleep(0.5)
        result = run_wrk(wrk, gateway.port, script, args, seconds, gateway.pid)
        spy.wait(seconds + 60)
    if spy.returncode != 0:
        log(f"py-spy exited with {spy.returncode}")
    return result


# --- report ---------------------------------------------------------------------------------
def pick(results: list[WrkResult], how: str) -> WrkResult:
    """The run reported for a side: the fastest, or the median one by req/s (``paired``
    shows the median one too; only its ratios differ, see ``round_ratios``)."""
    if how == "best":
        return max(results, key=lambda r: r.rps)
    median = statistics.median_low([r.rps for r in results])
    return next(r for r in results if r.rps == median)


def round_ratios(bare: list[WrkResult], gateway: list[WrkResult]) -> dict[str, list[float]]:
    """gateway/bare per round: both sides of a round run back to back, so a machine whose
    speed drifts over the minutes of a run (seen here: bare alone from 16k to 10k req/s in
    one run) moves both sides of a round alike, where it would skew medians taken per side.
    """
    return {"rps": [g.rps / b.rps for b, g in zip(bare, gateway, strict=True)],
            "p99": [g.p99_ms / b.p99_ms for b, g in zip(bare, gateway, strict=True)]}


def fmt_ms(value: float) -> str:
    return f"{value * 1e3:.0f}us" if value < 1 else f"{value:.2f}ms"


def table(report: dict[str, Any]) -> str:
    cfg, ratio = report["config"], report["ratios"]
    ref, measured = cfg["sides"]
    bare, gw = report[ref]["picked"], report[measured]["picked"]
    lines = [
        f"wrk -t{cfg['threads']} -c{cfg['connections']} -d{cfg['duration']:g}s --latency, "
        f"{cfg['products']} codes at random, {cfg['rounds']} round(s), "
        + ("median run per side, ratios paired by round" if cfg["pick"] == "paired"
           else f"{cfg['pick']} run per side")
        + f", gateway on {cfg['engine']}"
        + {"spare": "", "one-cpu": f", servers on CPU {SERVER_CPU} only, wrk on the others",
           "landing": ", landing page (WeChat) against the redirect (Taobao app)"}[cfg["mode"]]
        + (", one returning visitor" if cfg["visitor_cookie"] else ", a new visitor each")
        + (", a new User-Agent each (detection uncached)" if cfg["unique_ua"] else "")
        + "".join(f", {item}" for item in cfg["settings"]),
        "",
        f"{'':<14}{'req/s':>10}{'p50':>10}{'p99':>10}{'CPU':>7}{'CPU/req':>10}"
        "   rounds (req/s)",
    ]
    for name, side in ((ref, bare), (measured, gw)):
        rounds = ", ".join(f"{r['rps']:.0f}" for r in report[name]["rounds"])
        cpu = "-" if side["cpu_percent"] is None else f"{side['cpu_percent']:.0f}%"
        per = "-" if side["cpu_us_per_request"] is None else f"{side['cpu_us_per_request']:.0f}us"
        lines.append(f"{name:<14}{side['rps']:>10.0f}{fmt_ms(side['p50_ms']):>10}"
                     f"{fmt_ms(side['p99_ms']):>10}{cpu:>7}{per:>10}   {rounds}")
    cpu_ratio = ("" if ratio.get("cpu_per_request") is None
                 else f"{'':>7}{ratio['cpu_per_request']:>9.2f}x")
    lines.append(f"{measured + '/' + ref:<14}{ratio['rps']:>9.2f}x{'':>10}{ratio['p99']:>9.2f}x"
                 + cpu_ratio
                 + ("   median of the rounds' ratios" if cfg["pick"] == "paired" else ""))
    per_round = report["round_ratios"]
    lines.append(f"{'each round':<14}" + ", ".join(
        f"{r:.2f}x / {p:.2f}x" for r, p in zip(per_round["rps"], per_round["p99"], strict=True))
        + "   (req/s ratio / p99 ratio)")
    if all(side[k] is not None for side in (bare, gw) for k in ("loop_user_us", "loop_kernel_us")):
        lines.append("event loop thread, CPU per request (user + kernel): " + "; ".join(
            f"{name} {side['loop_user_us']:.1f} + {side['loop_kernel_us']:.1f}us"
            for name, side in ((ref, bare), (measured, gw))))
    targets = report["targets"]
    lines += ["", f"targets ({cfg['mode']}): throughput >= {targets['rps_ratio_min']:.0%} of "
              f"{ref}: {'met' if targets['rps_met'] else 'MISSED'}"
              + ("" if targets["p99_ratio_max"] is None else
                 f";  p99 <= {targets['p99_ratio_max']:g}x {ref}: "
                 f"{'met' if targets['p99_met'] else 'MISSED'}")]
    clicks = report["clicks"]
    lines.append(
        f"clicks: {clicks['recorded']} recorded / {clicks['answered']} answered by the gateway "
        f"({clicks['wrk_requests']} wrk + {clicks['direct']} direct); lost {clicks['lost']}, "
        f"{clicks['in_flight']} answered after wrk stopped counting "
        f"(allowed <= {clicks['in_flight_allowed']}): {'ok' if clicks['ok'] else 'FAILED'}")
    lines.append(report["metrics"]["line"])
    waits = report["lock_waits"]
    if waits and waits["probes"]:
        lines.append(
            f"SQLite write lock, a gateway write's wait ({waits['probes']} probes during the "
            f"rounds): longest {waits['longest_s']:.2f}s, p99 {waits['p99_s']:.2f}s, "
            f"{waits['over_1s']} over 1 s, {waits['over_timeout']} over the "
            f"{waits['timeout_s']:g} s storage timeout")
    others = {name: [r["other_cpu_percent"] for r in report[name]["rounds"]]
              for name in (ref, measured)}
    if all(v is not None for values in others.values() for v in values):
        lines.append("other processes' CPU during the rounds (% of one CPU): " + "; ".join(
            f"{name} " + ", ".join(f"{v:.0f}" for v in values)
            for name, values in others.items()))
        if any(v > BUSY_OTHER_PERCENT for values in others.values() for v in values):
            lines.append("warning: something else used the CPUs during the runs: the "
                         "figures are noisy; run again on a quiet machine")
    for name in (ref, measured):
        bad = [r for r in report[name]["rounds"] if r["socket_errors"] or r["non_2xx_3xx"]]
        for r in bad:
            lines.append(f"warning: {name} run with {r['socket_errors']} socket errors, "
                         f"{r['non_2xx_3xx']} non-2xx/3xx responses")
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Load the gateway's share-link redirect and a bare aiohttp app with wrk.")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    parser.add_argument("--connections", type=int, default=32,
                        help="wrk connections (default 32)")
    parser.add_argument("--duration", type=float, default=10,
                        help="seconds per measured run (default 10)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="measured runs per side, alternating (default 2)")
    parser.add_argument("--warmup", type=float, default=3,
                        help="seconds of unscored load per side first (default 3)")
    parser.add_argument("--products", type=int, default=10_000,
                        help="products (share codes) seeded (default 10000)")
    parser.add_argument("--pick", choices=("best", "median", "paired"), default="best",
                        help="which round each side reports: highest req/s (default) or the "
                             "median one by req/s; paired: the median rounds are shown and "
                             "the ratios are the median of each round's gateway/bare")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="after the rounds, run py-spy record on the gateway under one "
                             "more (unscored) load run: .svg flamegraph, .json speedscope, "
                             "anything else raw collapsed stacks")
    parser.add_argument("--visitor-cookie", action="store_true",
                        help="send one returning visitor's ll_v cookie with every request "
                             "(default: none, every click is a new visitor)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a gateway setting for this run, e.g. "
                             "cache.link_ttl_seconds=3600 (repeatable)")
    parser.add_argument("--unique-ua", action="store_true",
                        help="a never-seen User-Agent on every request (the Taobao one plus a "
                             "build number), so detection runs in full instead of from cache")
    parser.add_argument("--postgres", metavar="URL",
                        help="run the gateway on PostgreSQL at URL, in a fresh schema that is "
                             "dropped afterwards (e.g. postgresql://postgres@127.0.0.1/test)")
    parser.add_argument("--one-cpu", action="store_true",
                        help=f"pin each server and all it starts to CPU {SERVER_CPU} (a "
                             "1-vCPU deployment) and wrk to the others; "
                             f"{ROUND_WARMUP:g} s of unscored load before every run")
    parser.add_argument("--landing", action="store_true",
                        help="load the gateway's WeChat landing page (a WeChat User-Agent on "
                             "a Taobao product) against its own redirect, instead of bare")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    for name in ("threads", "connections", "rounds", "products"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    if args.duration < 1:
        parser.error("--duration must be at least 1 second")
    if args.one_cpu and len(os.sched_getaffinity(0)) < 2:
        parser.error("--one-cpu needs two CPUs: one for the servers, one for wrk")
    return args


def busy_now(seconds: float = 1.0) -> float | None:
    """CPUs' worth of work the machine is doing right now (over ``seconds``), or None."""
    before = machine_busy_seconds()
    time.sleep(seconds)
    after = machine_busy_seconds()
    return None if before is None or after is None else (after - before) / seconds


def bench(args: argparse.Namespace) -> dict[str, Any]:
    wrk = ensure_wrk()
    busy_before = busy_now()
    if busy_before is not None and 100 * busy_before > BUSY_OTHER_PERCENT:
        log(f"warning: the machine is already busy ({100 * busy_before:.0f}% of one CPU in "
            "use before we start): figures will be noisy")
    tmp = Path(tempfile.mkdtemp(prefix="linkloop-bench-"))
    schema = f"linkloop_bench_{os.getpid()}"
    servers: list[Server] = []
    try:
        data_dir = tmp / "data"
        overrides = list(args.set)
        if args.postgres:
            overrides.append(f"storage.url={args.postgres}"
                             f"{'&' if '?' in args.postgres else '?'}schema={schema}")
        env = bench_env(data_dir, overrides)
        started = time.monotonic()
        links = asyncio.run(seed(env, args.products))
        log(f"seeded {len(links)} products in {time.monotonic() - started:.1f}s ({data_dir})")

        links_file, codes_file, script = tmp / "links.json", tmp / "codes.txt", tmp / "codes.lua"
        links_file.write_text(json.dumps(links))
        codes_file.write_text("".join(f"{code}\n" for code in links))
        script.write_text(LUA % {"codes": codes_file, "ua": UA,
                                 "unique_ua": "true" if args.unique_ua else "false"})

        gw_port, bare_port = free_port(), free_port()
        pin = server_cpus(args)
        gateway = Server("gateway", [sys.executable, "-m", "gateway", "serve", "--host", HOST,
                                     "--port", str(gw_port)], env, gw_port, tmp / "gateway.log",
                         preexec=pin)
        servers.append(gateway)
        # The two sides: (name, server, User-Agent). The first is the reference.
        if args.landing:  # the gateway's landing page against its own redirect
            sides = [("redirect", gateway, UA), ("landing", gateway, WECHAT_UA)]
        else:
            bare = Server("bare", [sys.executable, str(BENCH / "bare.py"), "--host", HOST,
                                   "--port", str(bare_port), "--links", str(links_file)],
                          env, bare_port, tmp / "bare.log", preexec=pin)
            servers.insert(0, bare)
            sides = [("bare", bare, UA), ("gateway", gateway, UA)]
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        log(", ".join(f"{s.name} pid {s.pid} on :{s.port}" for s in servers)
            + (f", pinned to CPU {SERVER_CPU}" if args.one_cpu else ""))

        code, expected = next(iter(links.items()))
        for server in servers:
            check_redirect(server, code, expected)
        direct = 1  # the gateway's check above is a click too
        if args.landing:
            check_landing(gateway, code)
            direct += 1
        log(f"GET /p/{code} answers 302 -> {expected}"
            + (", and the landing page from WeChat" if args.landing else ""))

        gateway_requests = 0
        wrk_runs = 0

        def load(side: tuple[str, Server, str], duration: float) -> WrkResult:
            nonlocal gateway_requests, wrk_runs
            _, server, ua = side
            # The gateway's last writes must not overlap the next run: wait for them, and
            # count their CPU in this run's.
            settle = (lambda: drain_recorder(gateway)) if server is gateway else None
            result = run_wrk(wrk, server.port, script, args, duration, server.pid, ua=ua,
                             settle=settle)
            if server is gateway:
                gateway_requests += result.requests
                wrk_runs += 1
            time.sleep(0.5)
            return result

        if args.warmup > 0:
            for side in sides:
                result = load(side, args.warmup)
                log(f"warm-up {side[0]}: {result.rps:.0f} req/s")

        rounds: dict[str, list[WrkResult]] = {name: [] for name, _, _ in sides}
        database = None if args.postgres else data_dir / "linkloop.db"
        with LockProbe(database) if database else contextlib.nullcontext() as probe:
            for n in range(args.rounds):
                order = sides if n % 2 == 0 else sides[::-1]
                for side in order:
                    if args.one_cpu:
                        load(side, ROUND_WARMUP)
                    result = load(side, args.duration)
                    rounds[side[0]].append(result)
                    log(f"round {n + 1}/{args.rounds} {side[0]}: {result.rps:.0f} req/s, "
                        f"p50 {fmt_ms(result.p50_ms)}, p99 {fmt_ms(result.p99_ms)}")

        if args.profile is not None:
            result = profile_gateway(wrk, gateway, script, args, args.profile.resolve())
            gateway_requests += result.requests
            wrk_runs += 1
            log(f"profiled run: {result.rps:.0f} req/s (not scored)")

        counters = drain_recorder(gateway)
        scraped = scrape_metrics(gateway, env)
        for server in servers:
            status = server.stop()
            if status not in (0, None):
                log(f"{server.name} exited with {status}:\n{server.log_tail()}")
        recorded = asyncio.run(recorded_clicks(env))
        journal = data_dir / "journal"
        journaled = [p.name for p in journal.glob("*.jsonl") if p.stat().st_size] \
            if journal.exists() else []

        answered = gateway_requests + direct
        # wrk counts only responses it read before its clock ran out: requests in flight then
        # are answered (and counted) by the gateway too, at most one per connection per run.
        allowed = wrk_runs * args.connections
        clicks = {
            "recorded": recorded, "answered": answered, "wrk_requests": gateway_requests,
            "direct": direct, "lost": max(0, answered - recorded),
            "in_flight": max(0, recorded - answered), "in_flight_allowed": allowed,
            "journal_files": journaled, "recorder": counters,
        }
        clicks["ok"] = answered <= recorded <= answered + allowed and not journaled
        metrics = compare_metrics(scraped, clicks)

        ref, measured = (name for name, _, _ in sides)
        picked = {name: pick(results, args.pick) for name, results in rounds.items()}
        per_round = round_ratios(rounds[ref], rounds[measured])
        if args.pick == "paired":
            ratios = {key: statistics.median(values) for key, values in per_round.items()}
        else:
            ratios = {"rps": picked[measured].rps / picked[ref].rps,
                      "p99": picked[measured].p99_ms / picked[ref].p99_ms}
        ratios["cpu_per_request"] = (
            picked[measured].cpu_us_per_request / picked[ref].cpu_us_per_request
            if picked[measured].cpu_us_per_request and picked[ref].cpu_us_per_request
            else None)
        mode = "landing" if args.landing else "one-cpu" if args.one_cpu else "spare"
        rps_min, p99_max = TARGETS[mode]
        return {
            "config": {"threads": args.threads, "connections": args.connections,
                       "duration": args.duration, "rounds": args.rounds,
                       "warmup": args.warmup, "products": len(links), "pick": args.pick,
                       "user_agent": UA, "visitor_cookie": args.visitor_cookie,
                       "engine": "postgresql" if args.postgres else "sqlite",
                       "unique_ua": args.unique_ua, "mode": mode,
                       "sides": [ref, measured],
                       "settings": args.set, "cpus": os.cpu_count(),
                       "busy_cpu_percent_before": None if busy_before is None
                       else 100 * busy_before},
            **{name: {"picked": picked[name].as_json(),
                      "rounds": [r.as_json() for r in rounds[name]]} for name in rounds},
            "ratios": ratios,
            "round_ratios": per_round,
            "targets": {"rps_ratio_min": rps_min, "p99_ratio_max": p99_max,
                        "rps_met": ratios["rps"] >= rps_min,
                        "p99_met": None if p99_max is None else ratios["p99"] <= p99_max},
            "clicks": clicks,
            "metrics": metrics,
            "lock_waits": probe.as_json(load_settings(environ=env)["storage.timeout_seconds"])
            if probe else None,
        }
    finally:
        for server in servers:
            try:
                server.stop()
            except BenchError as exc:
                log(str(exc))
        shutil.rmtree(tmp, ignore_errors=True)
        if args.postgres:
            asyncio.run(drop_schema(args.postgres, schema))


async def drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = bench(args)
    except (BenchError, ConfigError, subprocess.SubprocessError, OSError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else table(report))
    if not report["clicks"]["ok"]:
        print("bench: the gateway lost clicks (see above)", file=sys.stderr)
        return 1
    if not report["metrics"]["ok"]:
        print("bench: /metrics disagrees with the clicks counted (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
