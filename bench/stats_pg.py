"""Stats over 10 million clicks on PostgreSQL: how fast the reports answer.

Generates one merchant's year of traffic (10M raw clicks by default, 100 products, every
platform, 2% bots) plus a second merchant as noise, straight in SQL into a throwaway schema
(partitioned clicks, as the gateway makes them), builds the rollups exactly as the
recorder's transaction would (clicks, unique visitors per product/platform/day, bot clicks),
checks them against the raw rows, then times the same ``Store.stats`` call the API makes,
for the default 30-day range and a whole year, by platform, product and day.

    .venv/bin/python bench/stats_pg.py [--clicks 10000000] [--url postgresql://...]

Needs a PostgreSQL server (default: the machine's, postgresql://postgres@127.0.0.1:5432/test).
The schema is dropped at the end unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time
from datetime import date, timedelta

import asyncpg

from adapters import platform_ids
from gateway.store import Merchant
from gateway.store.postgres import PostgresStore, quote_ident

PRODUCTS = 100
DAYS = 365


async def generate(conn: asyncpg.Connection, clicks: int, today: date) -> None:
    first = today - timedelta(days=DAYS - 1)
    platforms = list(platform_ids())
    t0 = time.perf_counter()
    # Month partitions for the whole year, as a long-running gateway would have made.
    month = first.replace(day=1)
    while month <= today:
        await conn.execute("SELECT ensure_click_partition($1)", month)
        month = (month + timedelta(days=32)).replace(day=1)
    await conn.execute(
        """
        INSERT INTO clicks (id, merchant_id, product_id, ts, day, platform, source, channel,
                            visitor, ip_hash, bot, mobile, os)
        SELECT 'c' || g, 'big', 1 + (hashint4(g * 3) & 2147483647) % $2,
               extract(epoch FROM $3::date + ((hashint4(g * 5) & 2147483647) % $4)
                                  * interval '1 day'),
               to_char($3::date + ((hashint4(g * 5) & 2147483647) % $4) * interval '1 day',
                       'YYYY-MM-DD'),
               ($5::text[])[1 + (hashint4(g) & 2147483647) % array_length($5::text[], 1)],
               'ua', NULL, 'v' || ((hashint4(g * 7) & 2147483647) % 2000000), 'h',
               (hashint4(g * 13) & 2147483647) % 50 = 0, true, 'ios'
        FROM generate_series(1, $1) AS g
        """, clicks, PRODUCTS, first, DAYS, platforms)
    await conn.execute(
        """
        INSERT INTO clicks (id, merchant_id, product_id, ts, day, platform, source, visitor,
                            ip_hash, bot, mobile, os)
        SELECT 'o' || g, 'other', 1000 + g % 10, extract(epoch FROM now()),
               to_char(now(), 'YYYY-MM-DD'), 'web', 'ua', 'v' || g, 'h', false, false, 'ios'
        FROM generate_series(1, 10000) AS g
        """)
    print(f"  raw clicks written in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    # What the recorder's transaction does, in one statement: per product, platform and
    # day, clicks (not bots), first visits (not bots) and bot clicks; storefront opens,
    # entries and adds as plausible shares so the funnel columns are not all zero.
    await conn.execute(
        """
        INSERT INTO rollups (merchant_id, day, product_id, platform, clicks, unique_visitors,
                             bot_clicks, storefront_opens, entries, adds)
        SELECT merchant_id, day, product_id, platform,
               count(*) FILTER (WHERE NOT bot),
               count(DISTINCT visitor) FILTER (WHERE NOT bot),
               count(*) FILTER (WHERE bot),
               count(*) FILTER (WHERE NOT bot) / 3, count(*) FILTER (WHERE NOT bot) / 10,
               count(*) FILTER (WHERE NOT bot) / 40
        FROM clicks GROUP BY merchant_id, day, product_id, platform
        """)
    await conn.execute("ANALYZE")
    rows = await conn.fetchval("SELECT count(*) FROM rollups WHERE merchant_id = 'big'")
    print(f"  rollups built in {time.perf_counter() - t0:.1f} s ({rows:,} rollup rows)")


async def timed(store: PostgresStore, label: str, repeat: int, **query: object) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = await store.stats("big", **query)  # type: ignore[arg-type]
        times.append((time.perf_counter() - t0) * 1000)
    median = statistics.median(times)
    worst = max(times)
    print(f"  {label:<34} {median:8.1f} ms median {worst:8.1f} ms worst  ({len(rows)} rows)")
    return median


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--clicks", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    args = parser.parse_args()
    schema = f"linkloop_bench_{secrets.token_hex(4)}"
    today = date.today()
    store = await PostgresStore.open(args.url, schema=schema)
    conn = await asyncpg.connect(args.url, server_settings={"search_path": schema})
    try:
        await store.create_merchant(Merchant("big", "Big"))
        await store.create_merchant(Merchant("other", "Other"))
        for n in range(PRODUCTS):
            await store.create_product("big", code=f"bench{n:04d}", title=f"Product {n}",
                                       targets={"taobao": {"item_id": "600000000001"}},
                                       image_url=None, price=None)
        print(f"generating {args.clicks:,} clicks over {DAYS} days in schema {schema}")
        await generate(conn, args.clicks, today)
        total = sum(r.clicks + r.bot_clicks for r in await store.stats(
            "big", from_day=(today - timedelta(days=DAYS)).isoformat(),
            to_day=today.isoformat(), by="platform"))
        assert total == args.clicks, f"rollups hold {total} clicks, raw {args.clicks}"
        print(f"  check: the rollups sum to {total:,} clicks, as the raw table")
        month = dict(from_day=(today - timedelta(days=29)).isoformat(), to_day=today.isoformat())
        year = dict(from_day=(today - timedelta(days=DAYS - 1)).isoformat(),
                    to_day=today.isoformat())
        print("Store.stats (what GET /api/stats runs), warm:")
        results = {}
        for label, query in (("30 days by platform", {**month, "by": "platform"}),
                             ("30 days by product", {**month, "by": "product"}),
                             ("30 days by day", {**month, "by": "day"}),
                             ("30 days, one product, by platform",
                              {**month, "by": "platform", "product_id": 1}),
                             ("365 days by platform", {**year, "by": "platform"}),
                             ("365 days by product", {**year, "by": "product"}),
                             ("365 days by day", {**year, "by": "day"})):
            await store.stats("big", **query)  # type: ignore[arg-type]
            results[label] = await timed(store, label, args.repeat, **query)
        slowest = max(results, key=lambda k: results[k])
        print(f"slowest: {slowest}, {results[slowest]:.1f} ms median "
              f"({'under' if results[slowest] < 100 else 'OVER'} the 100 ms target)")
    finally:
        await conn.close()
        await store.close()
        if not args.keep:
            cleanup = await asyncpg.connect(args.url)
            await cleanup.execute(f"DROP SCHEMA {quote_ident(schema)} CASCADE")
            await cleanup.close()


if __name__ == "__main__":
    asyncio.run(main())
