"""CPU per click of the click writer's storage work: ``Store.record`` alone, no HTTP.

bench/run.py measures the whole gateway; this isolates what the writer process does per
batch (insert the raw rows, set their counts and visitors aside, and fold those into the
rollups and sketches every ``storage.sketch_fold_visitors``), so a change to that
path can be compared side by side without the noise of a load test:

    .venv/bin/python bench/record.py                         # SQLite, 5,000 a batch
    .venv/bin/python bench/record.py --batch 20000 --products 100
    .venv/bin/python bench/record.py --postgres postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/record.py --stages                # SQLite: CPU of each step
    .venv/bin/python bench/record.py --set storage.sketch_fold_visitors=200000

Clicks look like bench/run.py's: one merchant, products picked at random, every click a
new visitor, all on one day. The first ``--warm`` batches fill the tables unscored (a
store's cost grows with what it holds); the next ``--batches`` are timed. Both should
hold whole folds of visitors (the defaults, 10 batches of 5,000, hold one of
50,000; at 20,000 a batch a fold comes every 60,000), or the timed clicks pay for more or
fewer folds than their own: the script says when they don't. It prints the
process CPU per click (the writer thread included; on PostgreSQL the server's own CPU is
not in it) and the wall time per click.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from gateway.settings import SETTINGS, load_settings
from gateway.store import Click, Merchant, open_store

MERCHANT = Merchant("bench", "Bench", ("shop.example.com",))


def batch(size: int, products: int, rng: random.Random, now: float) -> list[Click]:
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    return [Click(uuid.uuid4().hex, MERCHANT.id, rng.randrange(1, products + 1), now, day,
                  "taobao", "ua", uuid.uuid4().hex, uuid.uuid4().hex[:16], mobile=True, os="ios",
                  channel=None if rng.random() < 0.9 else "live", outcome="redirect")
            for _ in range(size)]


async def server_pids(store: object) -> list[int]:
    """The PostgreSQL backends of the store's pool (none on SQLite), to read their CPU."""
    pool = getattr(store, "_pool", None)
    if pool is None:
        return []
    async with pool.acquire() as conn:
        return [await conn.fetchval("SELECT pg_backend_pid()")]


def server_cpu(pids: list[int]) -> float:
    """CPU seconds those processes have used (Linux /proc; the server must be local)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


#: The steps of SQLiteStore._record that --stages times (names in gateway.store.sqlite).
STAGES = ("_insert_new", "rollup_deltas", "_set_counts_aside", "_set_visitors_aside",
          "_fold_counts", "_fold_visitors")


def time_stages() -> dict[str, float]:
    """Wrap each of STAGES, as gateway.store.sqlite calls it, to add up its thread CPU
    seconds (the writer thread's own, whatever else runs); the sums by step."""
    from gateway.store import sqlite

    spent = dict.fromkeys(STAGES, 0.0)

    def timed(name: str, step: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            began = time.thread_time()
            try:
                return step(*args, **kwargs)
            finally:
                spent[name] += time.thread_time() - began
        return run

    for name in STAGES:
        setattr(sqlite, name, timed(name, getattr(sqlite, name)))
    return spent


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--warm", type=int, default=10, help="unscored batches first")
    parser.add_argument("--batches", type=int, default=10, help="timed batches")
    parser.add_argument("--postgres", metavar="URL", help="PostgreSQL server (a fresh schema)")
    parser.add_argument("--stages", action="store_true",
                        help="SQLite: also the CPU of each step of a batch's transaction")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a storage setting, e.g. storage.sketch_fold_visitors=200000 "
                             "(repeatable)")
    args = parser.parse_args()
    spent = time_stages() if args.stages and not args.postgres else None
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        # A long call limit: under valgrind (instruction counts) a batch takes minutes.
        env = {"LINKLOOP_STORAGE_DATA_DIR": tmp, "LINKLOOP_STORAGE_TIMEOUT_SECONDS": "600"}
        known = {s.name: s for s in SETTINGS}
        for item in args.set:
            name, _, value = item.partition("=")
            if not name.startswith("storage.") or name not in known:
                parser.error(f"--set {item!r}: not a storage setting")
            env[known[name].env_var] = value
        schema = f"bench_record_{uuid.uuid4().hex[:8]}"
        if args.postgres:
            sep = "&" if "?" in args.postgres else "?"
            env["LINKLOOP_STORAGE_URL"] = f"{args.postgres}{sep}schema={schema}"
        settings = load_settings(environ=env)
        if "storage.sketch_fold_visitors" in {s.name for s in SETTINGS}:
            # A fold follows the batch that brings the pending visitors to the setting.
            fold = settings["storage.sketch_fold_visitors"]
            cycle = -(-fold // args.batch) * args.batch
            if any(n * args.batch % cycle for n in (args.warm, args.batches)):
                print(f"note: a fold comes every {cycle} clicks, and --warm or --batches "
                      "don't hold whole folds: the timed clicks pay for more or fewer "
                      "folds than their own")
        store = await open_store(settings)
        try:
            await store.create_merchant(MERCHANT)
            now = time.time()
            for _ in range(args.warm):
                await store.record(batch(args.batch, args.products, rng, now), [])
            batches = [batch(args.batch, args.products, rng, now) for _ in range(args.batches)]
            backends = await server_pids(store)
            server = server_cpu(backends)
            if spent is not None:
                spent.update(dict.fromkeys(spent, 0.0))  # the warm batches' aside
            cpu, wall = time.process_time(), time.perf_counter()
            for clicks in batches:
                await store.record(clicks, [])
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            server = server_cpu(backends) - server
        finally:
            await store.close()
            if args.postgres:
                conn = await asyncpg.connect(args.postgres)
                try:
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                finally:
                    await conn.close()
    counted = max(args.batch * args.batches, 1)
    engine = "postgres" if args.postgres else "sqlite"
    print(f"{engine}: {counted} clicks in batches of {args.batch} over {args.products} products: "
          f"{cpu / counted * 1e6:.1f} us CPU, {wall / counted * 1e6:.1f} us wall per click"
          + (f", server {server / counted * 1e6:.1f} us CPU" if args.postgres else ""))
    if spent is not None:
        for name, seconds in spent.items():
            print(f"  {name:18} {seconds / counted * 1e6:6.1f} us CPU per click")
        print("  (the rest: SQL lookups of stored ids and origins, COMMIT, the thread hand-off)")


if __name__ == "__main__":
    asyncio.run(main())
