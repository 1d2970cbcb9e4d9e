"""Two versions of the gateway side by side with bare aiohttp: did a change make it faster?

    git worktree add /tmp/before HEAD~1
    .venv/bin/python bench/ab.py /tmp/before . [--rounds 10] [--duration 8]
    .venv/bin/python bench/ab.py . .@recorder.writer_nice=15 --one-cpu   # a setting A/B

A tree may carry settings after ``@`` (``TREE@SECTION.KEY=VALUE,...``, as ``run.py --set``),
so one tree can be compared with itself under another setting.

Seeds one data directory the way ``bench/run.py`` does and gives each gateway its own copy,
starts bare aiohttp and one gateway per source tree (``python -m gateway serve`` run in that
tree), and loads them with the same wrk settings in rounds, in a new random order each
round. On this machine the speed drifts by a third within minutes, so only figures from the
same round are compared: for each tree after the first it prints the median of the rounds'
req/s ratios against the first tree, how many rounds it won, and the median ratio of the
event loop thread's CPU per request, and of the whole process's CPU per request (the click
writer's included: after each gateway run the script waits until its recorder has written
everything, as ``run.py`` does, so no run pays for another's clicks). With ``--one-cpu``
every server is pinned to one CPU and wrk to the others, with ``run.py``'s unscored 2 s
before each measured run. The rounds' figures go to stderr as they come.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from run import (
    HOST,
    LUA,
    ROUND_WARMUP,
    UA,
    BenchError,
    Server,
    WrkResult,
    bench_env,
    drain_recorder,
    ensure_wrk,
    free_port,
    log,
    run_wrk,
    seed,
    server_cpus,
)

BENCH = Path(__file__).resolve().parent


def _cpu(result: WrkResult) -> float:
    assert result.cpu_us_per_request is not None
    return result.cpu_us_per_request


def _loop_cpu(result: WrkResult) -> float:
    assert result.loop_user_us is not None and result.loop_kernel_us is not None
    return result.loop_user_us + result.loop_kernel_us


_SETTING = re.compile(r"[a-z_]+\.[a-z_]+=")  # how a setting after a tree's @ begins


def _tree(spec: str) -> tuple[Path, list[str]]:
    """``TREE[@SECTION.KEY=VALUE,...]``: a source tree and the settings it runs with.

    The settings follow the first ``@`` whose tail reads as settings (``SECTION.KEY=``), so
    a tree whose path holds an ``@`` still works, and so does a value that holds one
    (``storage.url=postgresql://user@host/db``); a value cannot hold a comma."""
    for at in re.finditer("@", spec):
        if _SETTING.match(spec, at.end()):
            settings = spec[at.end():]
            return Path(spec[:at.start()]), [item for item in settings.split(",") if item]
    return Path(spec), []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=_tree,
                        help="source trees (checkouts, worktrees), each optionally with "
                             "@SECTION.KEY=VALUE,... settings; the first is the reference")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=8, help="seconds per run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--one-cpu", action="store_true",
                        help="every server on one CPU, wrk on the others (as run.py's)")
    args = parser.parse_args(argv)
    pinned = server_cpus(args)
    wrk = ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="linkloop-ab-"))
    servers: list[Server] = []
    try:
        links = asyncio.run(seed(bench_env(tmp / "seed", []), args.products))
        (tmp / "links.json").write_text(json.dumps(links))
        (tmp / "codes.txt").write_text("".join(f"{code}\n" for code in links))
        script = tmp / "codes.lua"
        script.write_text(LUA % {"codes": tmp / "codes.txt", "ua": UA, "unique_ua": "false"})
        port = free_port()
        servers.append(Server("bare", [sys.executable, str(BENCH / "bare.py"), "--host", HOST,
                                       "--port", str(port), "--links", str(tmp / "links.json")],
                              bench_env(tmp / "seed", []), port, tmp / "bare.log",
                              preexec=pinned))
        for number, (tree, settings) in enumerate(args.trees):
            name = f"{number}:{tree.resolve().name}" + "".join(f"@{s}" for s in settings)
            data = tmp / f"data{number}"
            shutil.copytree(tmp / "seed", data)
            env = {**bench_env(data, settings), "PYTHONPATH": str(tree.resolve())}
            port = free_port()
            servers.append(Server(
                name, [sys.executable, "-m", "gateway", "serve", "--host", HOST, "--port",
                       str(port)], env, port, tmp / f"gateway{number}.log", cwd=tree.resolve(),
                preexec=pinned))
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        load = argparse.Namespace(threads=1, connections=args.connections, unique_ua=False,
                                  visitor_cookie=False, one_cpu=args.one_cpu)

        def run(server: Server, seconds: float) -> WrkResult:
            """A wrk run; a gateway's ends once its writer has stored the run's clicks."""
            settle = None if server is servers[0] else functools.partial(drain_recorder, server)
            return run_wrk(wrk, server.port, script, load, seconds, server.pid, settle=settle)

        for server in servers:  # warm-up: every link read, every answer memoised
            run(server, 3)
        rounds: dict[str, list[WrkResult]] = {server.name: [] for server in servers}
        for number in range(args.rounds):
            for server in random.sample(servers, len(servers)):
                if args.one_cpu:
                    run(server, ROUND_WARMUP)
                result = run(server, args.duration)
                rounds[server.name].append(result)
                log(f"round {number + 1} {server.name}: {result.rps:.0f} req/s, "
                    f"p99 {result.p99_ms:.2f} ms, loop CPU {_loop_cpu(result):.1f} us/request, "
                    f"CPU {result.cpu_us_per_request or 0:.1f} us/request")
        reference, *others = servers[1:]
        for server in servers[1:]:
            pairs = list(zip(rounds[server.name], rounds["bare"], strict=True))
            ratios = [g.rps / b.rps for g, b in pairs]
            p99 = [g.p99_ms / b.p99_ms for g, b in pairs]
            cpu = [_cpu(g) / _cpu(b) for g, b in pairs]
            print(f"{server.name}: {statistics.median(ratios):.3f}x bare "
                  f"(rounds {min(ratios):.2f}-{max(ratios):.2f}), p99 "
                  f"{statistics.median(p99):.2f}x, CPU per request {statistics.median(cpu):.2f}x")
        for server in others:
            pairs = list(zip(rounds[server.name], rounds[reference.name], strict=True))
            faster = [new.rps / old.rps for new, old in pairs]
            cpu = [_loop_cpu(new) / _loop_cpu(old) for new, old in pairs]
            total = [_cpu(new) / _cpu(old) for new, old in pairs]
            print(f"{server.name} against {reference.name}: "
                  f"req/s {statistics.median(faster):.3f}x, "
                  f"ahead in {sum(r > 1 for r in faster)} of {len(faster)} rounds; "
                  f"loop CPU per request {statistics.median(cpu):.3f}x, "
                  f"all CPU per request {statistics.median(total):.3f}x")
        return 0
    except BenchError as exc:
        log(str(exc))
        return 1
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
