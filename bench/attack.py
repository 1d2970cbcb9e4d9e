"""Hostile input against the share link: its latency while attackers post WeCom callbacks.

    .venv/bin/python bench/attack.py [--duration 10] [--attackers 4] [--rate 50] [--json]

Seeds a temporary data directory as ``bench/run.py`` does (one merchant, a few products),
starts ``python -m gateway serve`` on SQLite, and configures the merchant's WeCom entry
through the API, so a callback posted to ``/wecom/callback/<merchant>`` reaches the XML
parser. Then five phases of ``--duration`` seconds each:

1. quiet: shoppers only;
2. entity bombs: ``--attackers`` clients post XML entity bombs (billion laughs and friends);
3. bad bodies: the same clients post oversize and malformed callback bodies;
4. large XML: they post well-formed XML bodies as large as the gateway takes (64 KiB);
5. big workbooks: one staff member uploads a 1,001-row, 200-column workbook to the
   product import, again and again (not hostile, but the heaviest input a request may
   bring: each takes seconds of pure-Python parsing).

Shoppers open a share link with the Taobao app's User-Agent (answered 302) on a fixed
schedule, ``--rate`` a second, whatever happens to the ones before them: a shopper whose
answer is late counts from the moment they were due, not from when the client got round
to sending (no coordinated omission). Each shopper opens a connection of their own, as a
phone would.

Every attack request (the workbooks too: their columns are not the API's) must be refused
with a 4xx and every shopper must get the 302: if
not, the script says so loudly and exits with status 1. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import math
import multiprocessing
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from run import (
    HOST,
    MERCHANT,
    UA,
    BenchError,
    Server,
    bench_env,
    check_redirect,
    cpu_seconds,
    fmt_ms,
    free_port,
    log,
    seed,
)

from gateway.bulk import XLSX_TYPE
from gateway.settings import ConfigError
from gateway.wecom.callback import MAX_CALLBACK_BODY as MAX_BODY

PRODUCTS = 10
#: Seconds the attackers run before the shoppers start, and after they stop.
LEAD, TAIL = 0.5, 0.3
#: A shopper or attack request that takes longer than this has failed.
TIMEOUT = 10.0

# The merchant's WeCom entry: made-up but well-formed credentials. Nobody in this benchmark
# knows a valid signature for them, just like the attackers.
CORP_ID = "ww0123456789abcdef"
ENTRY = {"kind": "acquisition_link", "url": "https://work.weixin.qq.com/ca/cawcde5a6b7c8d9e0f",
         "corp_id": CORP_ID, "secret": "bench-app-secret-0123456789",
         "callback_token": "BenchToken42",
         "encoding_aes_key": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"}


# --- what the attackers send ----------------------------------------------------------------
def laughs(base: str, fan: int, depth: int) -> bytes:
    """Billion laughs: entity ``e{depth}`` is ``fan`` copies of the one below, down to
    ``base``; a few hundred bytes that unfold to ``fan ** depth`` copies of ``base``."""
    entities = f'<!ENTITY e0 "{base}">' + "".join(
        f'<!ENTITY e{i + 1} "{f"&e{i};" * fan}">' for i in range(depth))
    return (f'<?xml version="1.0"?><!DOCTYPE xml [{entities}]>'
            f"<xml><ToUserName>{CORP_ID}</ToUserName><Encrypt>&e{depth};</Encrypt></xml>"
            ).encode()


#: Entity expansion, each under a kilobyte (the same as tests/test_callback_hardening.py).
#: Unhardened, the three billion laughs cost ~0.2 to ~0.8 s of CPU each.
BOMBS: dict[str, bytes] = {
    "billion_laughs": laughs("a", 10, 9),
    "billion_laughs_deep": laughs("a", 2, 30),
    "billion_laughs_elements": laughs("<a/>", 10, 8),
    "quadratic": ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY q "' + "q" * 400 + '">]>'
                  "<xml><Encrypt>" + "&q;" * 150 + "</Encrypt></xml>").encode(),
    "external": (b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY % x SYSTEM '
                 b'"file:///etc/passwd">%x;]><xml><Encrypt>x</Encrypt></xml>'),
}


def _padded(head: str, filler: str, tail: str, size: int) -> bytes:
    """``head``, then ``filler`` repeated, then ``tail``: ``size`` bytes at most."""
    room = size - len(head) - len(tail)
    return (head + filler * (room // len(filler)) + tail).encode()


#: Bodies over the cap (413), or not a WeCom message at all (400).
BAD_BODIES: dict[str, bytes] = {
    "too_large": _padded("<xml>", " ", "</xml>", MAX_BODY + 1),  # declared: refused unread
    "too_large_chunked": _padded("<xml>", " ", "</xml>", MAX_BODY + 1),  # sent chunked
    "not_utf8": b"<xml><Encrypt>\xff\xfe\xfd</Encrypt></xml>",
    "not_xml": b"<xml><Encrypt>abc</Encrypt",
    "garbage": random.Random(1).randbytes(4096),
}
_DEPTH = (MAX_BODY - 20) // len("<a></a>")
#: Well-formed XML as large as the cap allows: no DTD, so the parser takes it whole (64 KiB
#: of elements to parse) before the signature refuses it (403).
LARGE_XML: dict[str, bytes] = {
    "deep_nesting": ("<xml>" + "<a>" * _DEPTH + "</a>" * _DEPTH + "</xml>").encode(),
    "many_elements": _padded("<xml>", "<a>x</a>", "</xml>", MAX_BODY),
}
ALL_BODIES = {**BOMBS, **BAD_BODIES, **LARGE_XML}
#: The gateway's refusals of a callback before it reads the body: the query's shape, its
#: timestamp, a merchant with no WeCom callback configured. An attack refused so tests nothing.
REFUSED_EARLY = {"bad_request", "stale_timestamp", "callback_not_configured"}
#: The body kinds sent without a Content-Length, in chunks (the gateway reads at most
#: MAX_BODY + 1 bytes of them before it answers 413).
CHUNKED = {"too_large_chunked"}


def hostile_query() -> dict[str, str]:
    """A fresh query with a made-up signature: what anyone on the internet can send."""
    return {"msg_signature": secrets.token_hex(20), "timestamp": str(int(time.time())),
            "nonce": secrets.token_hex(8)}


async def _chunks(body: bytes, size: int = 16 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


#: The big workbook's kind: posted to the product import with a staff token.
WORKBOOK = "big_workbook"


@functools.cache
def big_workbook() -> bytes:
    """1,001 rows of 200 columns of Chinese text (the import's limits), ~750 KB: a title,
    then columns the import does not know, so it is read whole and then refused (400)."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["title", *(f"note{i}" for i in range(199))])
    for n in range(1001):
        sheet.append([f"明前龙井 {n}", *(f"备注 {n}-{i}" for i in range(199))])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


async def post_hostile(http: aiohttp.ClientSession, base: str, token: str,
                       kind: str) -> tuple[str, str]:
    """One attack request of ``kind``: its status (or the client error, if none came) and
    the gateway's error code. A callback to the merchant's WeCom URL, or the workbook to
    the product import."""
    data: bytes | AsyncIterator[bytes]
    if kind == WORKBOOK:
        url, params, data = f"{base}/api/products/import", None, big_workbook()
        headers = {"Content-Type": XLSX_TYPE, "Authorization": f"Bearer {token}"}
    else:
        body = ALL_BODIES[kind]
        url, params = f"{base}/wecom/callback/{MERCHANT.id}", hostile_query()
        data = _chunks(body) if kind in CHUNKED else body
        headers = {"Content-Type": "text/xml"}
    try:
        async with http.post(url, params=params, data=data, headers=headers,
                             timeout=aiohttp.ClientTimeout(TIMEOUT)) as resp:
            raw = await resp.read()
            try:
                code = str(json.loads(raw)["error"]["code"])
            except (ValueError, KeyError, TypeError):
                code = ""
            return str(resp.status), code
    except (aiohttp.ClientError, TimeoutError) as exc:
        return f"no answer ({type(exc).__name__})", ""


# --- the attackers: a process of their own --------------------------------------------------
def attack(base: str, token: str, kinds: list[str], attackers: int,
           stop_at: float) -> dict[str, dict[str, int]]:
    """Run in a separate process, so the attackers' client work does not slow the
    shoppers' client: ``attackers`` clients, each with a connection of its own, post the
    bodies of ``kinds`` in turn, each sending its next as soon as the last is answered,
    until the wall clock reaches ``stop_at``. Returns {kind: {status: count}}."""
    tally: dict[str, Counter[str]] = {kind: Counter() for kind in kinds}

    async def attacker(index: int) -> None:
        async with aiohttp.ClientSession() as http:
            n = index  # attackers start at different kinds
            while time.time() < stop_at:
                kind = kinds[n % len(kinds)]
                n += 1
                status, _ = await post_hostile(http, base, token, kind)
                tally[kind][status] += 1

    async def main() -> None:
        await asyncio.gather(*(attacker(i) for i in range(attackers)))

    asyncio.run(main())
    return {kind: dict(counts) for kind, counts in tally.items()}


def ready() -> bool:
    """Submitted once to the attack process so it has started before the first phase."""
    return True


# --- the shoppers ---------------------------------------------------------------------------
@dataclass
class Shoppers:
    """The shoppers of one phase: each one's latency (from when they were due) and the
    failures (not a 302, or no answer)."""

    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)


async def shoppers(base: str, codes: list[str], rate: float, seconds: float) -> Shoppers:
    """``rate`` shoppers a second for ``seconds``, each sent on at its scheduled time."""
    result = Shoppers()
    connector = aiohttp.TCPConnector(force_close=True, limit=0)  # a connection each
    async with aiohttp.ClientSession(connector=connector) as http:

        async def shopper(due: float, code: str) -> None:
            try:
                async with http.get(f"{base}/p/{code}", headers={"User-Agent": UA},
                                    allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(TIMEOUT)) as resp:
                    await resp.read()
                    if resp.status != 302:
                        result.failures[f"answered {resp.status}"] += 1
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                result.failures[f"no answer ({type(exc).__name__})"] += 1
                return
            result.latencies.append(time.perf_counter() - due)

        started = time.perf_counter()
        sent = []
        for i in range(round(rate * seconds)):
            due = started + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            sent.append(asyncio.create_task(shopper(due, random.choice(codes))))
        await asyncio.gather(*sent)
    return result


# --- one phase ------------------------------------------------------------------------------
@dataclass
class Phase:
    name: str
    shoppers: int
    failed: int
    median_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    gateway_cpu_percent: float | None
    #: {kind: {status: count}} of the attack requests sent during the phase.
    attack: dict[str, dict[str, int]]
    #: The gateway's own reasons for refusing (its ``callback.refused`` log lines).
    refused_as: dict[str, int]
    #: What the shoppers who got no 302 got instead, and how many.
    failures: dict[str, int]
    median_ratio: float | None = None
    p99_ratio: float | None = None

    @property
    def attack_requests(self) -> int:
        return sum(n for statuses in self.attack.values() for n in statuses.values())

    @property
    def not_4xx(self) -> dict[str, int]:
        """Attack answers that were not a 4xx (or no answer at all), by kind and status."""
        return {f"{kind} {status}": n for kind, statuses in self.attack.items()
                for status, n in statuses.items()
                if not (status.isdigit() and 400 <= int(status) < 500)}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def refusals(log_path: Path, offset: int) -> Counter[str]:
    """The reasons of the gateway's ``callback.refused`` log lines from byte ``offset`` on."""
    with open(log_path, "rb") as fh:
        fh.seek(offset)
        text = fh.read()
    reasons: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith(b"{"):
            event = json.loads(line)
            if event.get("event") == "callback.refused":
                reasons[str(event.get("reason"))] += 1
    return reasons


def run_phase(name: str, kinds: list[str], attackers: int, *, gateway: Server, base: str,
              token: str, codes: list[str], args: argparse.Namespace,
              pool: ProcessPoolExecutor) -> Phase:
    log_offset = gateway.log_path.stat().st_size
    cpu_before, wall_before = cpu_seconds(gateway.pid), time.monotonic()
    attacking = None
    if kinds:
        stop_at = time.time() + LEAD + args.duration + TAIL
        attacking = pool.submit(attack, base, token, kinds, attackers, stop_at)
        time.sleep(LEAD)  # the attack under way before the first shopper
    result = asyncio.run(shoppers(base, codes, args.rate, args.duration))
    tally = attacking.result() if attacking is not None else {}
    cpu_after, wall_after = cpu_seconds(gateway.pid), time.monotonic()
    reasons = refusals(gateway.log_path, log_offset)
    lat = [s * 1e3 for s in result.latencies]
    return Phase(
        name=name, shoppers=len(lat) + result.failures.total(),
        failed=result.failures.total(),
        median_ms=statistics.median(lat) if lat else None,
        p99_ms=percentile(lat, 0.99) if lat else None, max_ms=max(lat) if lat else None,
        gateway_cpu_percent=None if cpu_before is None or cpu_after is None
        else 100 * (cpu_after - cpu_before) / (wall_after - wall_before),
        attack=tally, refused_as=dict(reasons), failures=dict(result.failures))


# --- set-up ---------------------------------------------------------------------------------
def merchant_token(env: dict[str, str]) -> str:
    """A merchant token for the bench's merchant, minted by the CLI."""
    minted = subprocess.run(
        [sys.executable, "-m", "gateway", "token", "--merchant", MERCHANT.id, "--role",
         "merchant", "--ttl", "1h"], env=env, capture_output=True, text=True, timeout=60,
        check=False)
    if minted.returncode != 0:
        raise BenchError(f"linkloop token failed: {minted.stderr.strip()}")
    return minted.stdout.strip()


async def configure_and_check(base: str, token: str) -> dict[str, tuple[str, str]]:
    """PUT the merchant's WeCom entry, then post each hostile body once: the status and
    error code each gets."""
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{base}/api/entry", json=ENTRY,
                            headers={"Authorization": f"Bearer {token}"}) as resp:
            if resp.status != 200:
                raise BenchError(f"PUT /api/entry answered {resp.status}: {await resp.text()}")
        return {kind: await post_hostile(http, base, token, kind)
                for kind in [*ALL_BODIES, WORKBOOK]}


# --- report ---------------------------------------------------------------------------------
def ms(value: float | None) -> str:
    return "-" if value is None else fmt_ms(value)


def ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def statuses(phase: Phase) -> str:
    total: Counter[str] = Counter()
    for counts in phase.attack.values():
        total.update(counts)
    return ", ".join(f"{status} x{n}" for status, n in sorted(total.items())) or "-"


def table(report: dict[str, Any], phases: list[Phase]) -> str:
    cfg = report["config"]
    lines = [
        f"share link under hostile WeCom callbacks: {cfg['rate']:g} shoppers/s on a fixed "
        f"schedule (a new connection each), {cfg['attackers']} attackers, "
        f"{cfg['duration']:g} s a phase, gateway on SQLite, {cfg['cpus']} CPUs",
        "",
        f"{'phase':<14}{'shoppers':>9}{'median':>11}{'p99':>11}{'max':>11}"
        f"{'median/quiet':>14}{'p99/quiet':>11}{'gw CPU':>8}{'attacks':>9}   statuses",
    ]
    for p in phases:
        cpu = "-" if p.gateway_cpu_percent is None else f"{p.gateway_cpu_percent:.0f}%"
        lines.append(
            f"{p.name:<14}{p.shoppers:>9}{ms(p.median_ms):>11}{ms(p.p99_ms):>11}"
            f"{ms(p.max_ms):>11}{ratio(p.median_ratio):>14}{ratio(p.p99_ratio):>11}"
            f"{cpu:>8}{p.attack_requests:>9}   {statuses(p)}")
    for p in phases:
        if p.attack:
            lines.append(f"  {p.name}: " + "; ".join(
                f"{kind} " + ", ".join(f"{s} x{n}" for s, n in sorted(counts.items()))
                for kind, counts in p.attack.items()))
            lines.append(f"  {p.name}, refused by the gateway as: " + ", ".join(
                f"{reason} x{n}" for reason, n in sorted(p.refused_as.items())))
    lines.append("")
    if report["ok"]:
        lines.append("ok: every attack request was refused with a 4xx and every shopper got "
                     "the 302")
    else:
        lines += ["!" * 78, "FAILED:", *(f"  {problem}" for problem in report["problems"]),
                  "!" * 78]
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Share-link latency with no attack, then while attackers post entity "
                    "bombs, then oversize and malformed bodies, then 64 KiB of well-formed "
                    "XML, to the WeCom callback.")
    parser.add_argument("--duration", type=float, default=10,
                        help="seconds of shoppers per phase (default 10)")
    parser.add_argument("--attackers", type=int, default=4,
                        help="concurrent attackers, each with a connection of its own "
                             "(default 4)")
    parser.add_argument("--rate", type=float, default=50,
                        help="shoppers a second, on a fixed schedule (default 50)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.duration < 1:
        parser.error("--duration must be at least 1 second")
    if args.attackers < 1:
        parser.error("--attackers must be at least 1")
    if args.rate <= 0 or args.rate * args.duration < 1:
        parser.error("--rate must give at least one shopper a phase")
    return args


def bench(args: argparse.Namespace) -> tuple[dict[str, Any], list[Phase]]:
    tmp = Path(tempfile.mkdtemp(prefix="linkloop-attack-"))
    gateway: Server | None = None
    # spawn: a fresh interpreter, not a fork of this one and its event loop's state.
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    try:
        env = bench_env(tmp / "data", [])
        links = asyncio.run(seed(env, PRODUCTS))
        codes = list(links)
        port = free_port()
        gateway = Server("gateway", [sys.executable, "-m", "gateway", "serve", "--host", HOST,
                                     "--port", str(port)], env, port, tmp / "gateway.log")
        gateway.start()
        gateway.wait_ready()
        base = f"http://{HOST}:{port}"
        for code in codes:
            check_redirect(gateway, code, links[code])  # and the link cache warm
        token = merchant_token(env)
        first = asyncio.run(configure_and_check(base, token))
        log("each hostile body once: " + ", ".join(
            f"{kind} {status} {code}" for kind, (status, code) in first.items()))
        early = [f"{kind} {code}" for kind, (_, code) in first.items() if code in REFUSED_EARLY]
        if early:
            raise BenchError(f"callbacks refused before their body was read ({', '.join(early)})"
                             ": the attack would not reach the parser")
        pool.submit(ready).result()  # the attack process started and imported

        # The phases: a name, the kinds of body the attackers send (none: no attack) and
        # how many send them (one staff member uploads workbooks, one at a time).
        plan: list[tuple[str, list[str], int]] = [
            ("quiet", [], 0), ("entity bombs", list(BOMBS), args.attackers),
            ("bad bodies", list(BAD_BODIES), args.attackers),
            ("large XML", list(LARGE_XML), args.attackers), ("big workbooks", [WORKBOOK], 1)]
        phases = []
        for name, kinds, attackers in plan:
            phase = run_phase(name, kinds, attackers, gateway=gateway, base=base, token=token,
                              codes=codes, args=args, pool=pool)
            log(f"{name}: {phase.shoppers} shoppers, median {ms(phase.median_ms)}, p99 "
                f"{ms(phase.p99_ms)}, {phase.attack_requests} attack requests")
            phases.append(phase)
        quiet = phases[0]
        for phase in phases:
            if phase.median_ms is not None and quiet.median_ms:
                phase.median_ratio = phase.median_ms / quiet.median_ms
            if phase.p99_ms is not None and quiet.p99_ms:
                phase.p99_ratio = phase.p99_ms / quiet.p99_ms

        problems = []
        for phase in phases:
            if phase.failed:
                problems.append(f"{phase.name}: {phase.failed} of {phase.shoppers} shoppers "
                                "got no 302: " + ", ".join(
                                    f"{what} x{n}" for what, n in phase.failures.items()))
            for what, n in phase.not_4xx.items():
                problems.append(f"{phase.name}: {n} attack requests {what}: not a 4xx")
            if phase.attack and not phase.attack_requests:
                problems.append(f"{phase.name}: no attack request was answered")
        status = gateway.stop()
        if status not in (0, None):
            problems.append(f"the gateway exited with {status}:\n{gateway.log_tail()}")
        report = {
            "config": {"duration": args.duration, "attackers": args.attackers,
                       "rate": args.rate, "products": len(codes), "user_agent": UA,
                       "engine": "sqlite", "cpus": multiprocessing.cpu_count()},
            "phases": [{**asdict(p), "attack_requests": p.attack_requests} for p in phases],
            "problems": problems,
            "ok": not problems,
        }
        return report, phases
    finally:
        pool.shutdown(cancel_futures=True)
        if gateway is not None:
            try:
                gateway.stop()
            except BenchError as exc:
                log(str(exc))
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report, phases = bench(args)
    except (BenchError, ConfigError, subprocess.SubprocessError, OSError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else table(report, phases))
    if not report["ok"]:
        print("bench: FAILED: an attack request was not refused with a 4xx, or a shopper "
              "did not get the share link's 302 (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
