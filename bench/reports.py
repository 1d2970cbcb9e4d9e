"""How long a merchant's report takes while the click writer has clicks set aside.

The writer folds what it set aside into the sketches and counter tables every
``storage.sketch_fold_visitors`` rows (gateway/store/pending.py); until then every report
reads the visitors from ``pending_visitors`` and merges them itself, and adds the counts
from ``pending_counts`` (which grows beside it, about a row a click here: every click is
its product's only one in its batch's day). The ``pending`` column counts
``pending_visitors``. This measures that price on SQLite:

    .venv/bin/python bench/reports.py                       # 0, 50,000, 100,000, 200,000 pending
    .venv/bin/python bench/reports.py --pending 0 50000 --products 100

Clicks look like ``bench/record.py``'s (one merchant, products at random, every click a new
visitor, one day). ``--history`` clicks are recorded and folded first (the stored sketches
a report reads anyway); then clicks are recorded with no fold until each ``--pending`` count
is reached, and at each the four reports a dashboard shows for the last 30 days (by
product, by day, by platform, the total) are timed: the best of 3, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import tempfile
import time
from pathlib import Path

from record import MERCHANT, batch

from gateway.settings import load_settings
from gateway.store import Store, open_store
from gateway.store.base import GroupBy

GROUPINGS: tuple[GroupBy, ...] = ("product", "day", "platform", "total")


async def report_ms(store: Store, from_day: str, to_day: str) -> dict[str, float]:
    """The best of 3 of each grouping's report, in milliseconds."""
    found = {}
    for by in GROUPINGS:
        best = float("inf")
        for _ in range(3):
            began = time.perf_counter()
            await store.stats(MERCHANT.id, from_day=from_day, to_day=to_day, by=by)
            best = min(best, time.perf_counter() - began)
        found[by] = best * 1000
    return found


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=10_000)
    parser.add_argument("--history", type=int, default=300_000,
                        help="clicks recorded and folded first")
    parser.add_argument("--pending", type=int, nargs="+", default=[0, 50_000, 100_000, 200_000])
    args = parser.parse_args()
    rng = random.Random(1)
    now = time.time()
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    from_day = time.strftime("%Y-%m-%d", time.gmtime(now - 29 * 86400))
    with tempfile.TemporaryDirectory(prefix="linkloop-reports-") as data:

        def settings(fold: int) -> dict[str, str]:
            return {"LINKLOOP_STORAGE_DATA_DIR": data,
                    "LINKLOOP_STORAGE_SKETCH_FOLD_VISITORS": str(fold)}

        store = await open_store(load_settings(environ=settings(50_000)))
        try:
            await store.create_merchant(MERCHANT)
            for _ in range(args.history // 5_000):
                await store.record(batch(5_000, args.products, rng, now), [])
        finally:
            await store.close()
        # Now nothing folds (but the minute's fold, which this outruns).
        store = await open_store(load_settings(environ=settings(10**12)))
        database = sqlite3.connect(Path(data) / "linkloop.db")
        try:
            print(f"{args.products} products, {args.history} clicks folded before; "
                  "report over 30 days, best of 3, ms")
            print(f"{'pending':>9} " + " ".join(f"{by:>9}" for by in GROUPINGS))
            for goal in sorted(args.pending):
                while True:
                    pending: int = database.execute(
                        "SELECT count(*) FROM pending_visitors").fetchone()[0]
                    if pending >= goal:
                        break
                    await store.record(batch(5_000, args.products, rng, now), [])
                times = await report_ms(store, from_day, day)
                print(f"{pending:>9} " + " ".join(f"{times[by]:>9.1f}" for by in GROUPINGS))
        finally:
            database.close()
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
