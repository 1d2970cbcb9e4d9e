"""The engine for several gateway instances: PostgreSQL through one asyncpg pool per process.

The same contract and semantics as the SQLite engine. Migrations run on open under a
session advisory lock, so gateways started together apply each version exactly once; the
raw ``clicks`` table is partitioned by month (see POSTGRES_MIGRATIONS for why by ``day``
and how that keeps click ids idempotent). Batches go in with ``unnest`` arrays, one
statement per table, and ``ON CONFLICT DO NOTHING RETURNING`` says which rows are new.

Every failure that means "the database is away right now" (refused or reset connections,
timeouts, a closing pool, a server shutting down, a deadlock victim) surfaces as
``StoreUnavailable``, so the recorder journals the batch and retries.

Every call has one deadline (``storage.timeout_seconds``) for getting a connection and
running its statements. A server that silently drops packets never answers, and neither
would a cancel request or a ROLLBACK sent to it, so at the deadline the connection is
terminated (its socket closed, no goodbye): whatever awaits it fails at once, and the pool
opens a fresh one for the next call. Migrations are exempt: they may rightly take long.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import astuple
from datetime import UTC, date, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import structlog

from ..secretbox import SecretBox
from .base import (
    COUNTERS,
    PRODUCT_CHANGES,
    Alert,
    Channel,
    ChannelExists,
    Click,
    CodeTaken,
    Contact,
    Credentials,
    Entry,
    EntryWay,
    Event,
    GroupBy,
    InboxItem,
    Merchant,
    MerchantExists,
    MintedLink,
    NewProduct,
    Product,
    ProductState,
    StatsRow,
    Store,
    StoreError,
    StoreUnavailable,
    User,
    UserExists,
)
from .forget import (
    VISITOR_CLICKS,
    cell_queries,
    cleaned_sketch,
    hash_bytes,
    needs_raw,
    visitor_cells,
    with_sketches,
)
from .migrations import POSTGRES_MIGRATIONS, SKETCH_BACKFILL
from .pending import (
    PENDING_COLUMNS,
    PENDING_COUNT_COLUMNS,
    FoldSchedule,
    aside_rows,
    folded_cells,
    pending_cells_query,
    with_pending,
)
from .retention import deltas_of, tally_forgotten
from .rollup import (
    BATCH_CLICK_COLUMNS,
    KEY_COLUMNS,
    ClickOrigin,
    RollupDelta,
    RollupKey,
    SketchKey,
    batch_click_row,
    batch_counts,
    delta_rows,
    fold_statement,
    reattributed_deltas,
    rollup_deltas,
    sketch_cells,
)
from .sealing import (
    open_credential_secret,
    open_entry_secrets,
    resealed_credentials,
    resealed_entries,
    seal_credential_secret,
    seal_entry_secrets,
)
from .sketch import add_hashes, merge_sketches
from .sql import (
    CLICK_COLUMNS,
    PRODUCT_COLUMNS,
    SketchPlan,
    click_row,
    load_report_code,
    login_attempt_query,
    login_attempt_wait,
    product_list_query,
    sketch_query,
    stats_query,
    stats_row,
    with_unique_visitors,
)

__all__ = ["PostgresStore", "split_schema"]

log = structlog.get_logger("linkloop.store")

R = TypeVar("R", Click, Event)

#: What "the database cannot be reached now" looks like; the caller may retry.
_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, unreachable; TimeoutError too (connect, pool acquire)
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08: the connection failed or is gone
    asyncpg.InterfaceError,  # the connection or the pool is closed or closing
    asyncpg.exceptions.InternalClientError,  # a connection caught mid-way by its loss
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, disk full
    asyncpg.exceptions.TransactionRollbackError,  # class 40: deadlock or serialization victim
)

# Every instance LISTENs here; a product change NOTIFYs its share code.
LINKS_CHANNEL = "linkloop_links"
_WATCH_EVERY = 5.0
_WAY_COLUMNS = "merchant_id, platform, config_id, qr_code, state, created_at"
_CREDENTIAL_COLUMNS = "merchant_id, platform, app_id, secret, updated_at"
_MINTED_COLUMNS = ("merchant_id, code, kind, fingerprint, value, image, expires_at, minted_at, "
                   "attempts, due_at, error")
_USER_COLUMNS = ("email, merchant_id, role, password_hash, created_at, failed_logins, "
                 "locked_until, last_login_at, sessions_after")

#: How often a running gateway makes sure next months' click partitions exist (seconds).
_PARTITION_CHECK_EVERY = 6 * 3600.0

_INSERT_CLICKS = (
    "INSERT INTO clicks (id, merchant_id, product_id, ts, day, platform, source, channel, "
    "visitor, ip_hash, bot, mobile, os, outcome) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::float8[], $5::text[], "
    "$6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bool[], $12::bool[], "
    "$13::text[], $14::text[]) "
    "ON CONFLICT (id, day) DO NOTHING RETURNING id"
)
_INSERT_EVENTS = (
    "INSERT INTO events (id, merchant_id, product_id, click_id, target, kind, platform, ts, day, "
    "attributed) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], "
    "$6::text[], $7::text[], $8::float8[], $9::text[], $10::bool[]) "
    "ON CONFLICT (id) DO NOTHING RETURNING id"
)
_CLICK_ORIGINS = (
    "SELECT merchant_id, id, product_id, platform, channel FROM clicks "
    "WHERE id = ANY($1::text[])"
)
_UNATTRIBUTED = (
    "UPDATE events SET attributed = TRUE WHERE NOT attributed AND click_id = ANY($2::text[]) "
    "AND (merchant_id, click_id) IN (SELECT * FROM unnest($1::text[], $2::text[])) "
    "RETURNING id, merchant_id, product_id, kind, platform, ts, day, click_id, target"
)
_SKETCH_KEY = "merchant_id, kind, period, product_id, platform, channel"
_SKETCH_ARRAYS = "$1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[]"
_READ_SKETCHES = (
    f"SELECT s.merchant_id, s.kind, s.period, s.product_id, s.platform, s.channel, s.sketch "
    f"FROM unnest({_SKETCH_ARRAYS}) AS k ({_SKETCH_KEY}) "
    f"JOIN visitor_sketches s USING ({_SKETCH_KEY})"
)
_WRITE_SKETCHES = (
    f"INSERT INTO visitor_sketches ({_SKETCH_KEY}, sketch) "
    f"SELECT * FROM unnest({_SKETCH_ARRAYS}, $7::bytea[]) "
    f"ON CONFLICT ({_SKETCH_KEY}) DO UPDATE SET sketch = excluded.sketch"
)


async def _add_to_sketches(conn: Any, cells: Mapping[SketchKey, Any],
                           merge: Callable[[bytes | None, Any], bytes] = add_hashes) -> None:
    """Add each cell's new visitor hashes to its stored sketch (made when missing); with
    ``merge=merge_sketches``, each cell's sketch.

    A read, a merge here and a write: so that two gateways adding to one merchant's cells
    at once never lose each other's visitors, each holds the merchant's sketch lock (a
    transaction advisory lock, taken in merchant order) from the read to its commit.
    Advisory locks span the whole database, so the key names the schema too: another
    deployment's (or test's) merchant of the same id, in another schema, is not this one.
    """
    if not cells:
        return
    for merchant_id in sorted({key[0] for key in cells}):
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('linkloop:sketches:' "
                           "|| current_schema() || ':' || $1))", merchant_id)
    keys = sorted(cells)
    stored = {tuple(r[:6]): r[6] for r in await conn.fetch(_READ_SKETCHES, *_columns(keys, 6))}
    await conn.execute(_WRITE_SKETCHES, *_columns(
        [(*key, merge(stored.get(key), cells[key])) for key in keys], 7))


_SET_ASIDE = (
    f"INSERT INTO pending_visitors ({PENDING_COLUMNS}) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], "
    "$6::bytea[])"
)


async def _set_visitors_aside(conn: Any, clicks: Sequence[Click]) -> int:
    """Append the human clicks' visitors to pending_visitors (gateway/store/pending.py), in
    the caller's transaction; how many rows that made."""
    rows = aside_rows(clicks)
    if rows:
        await conn.execute(_SET_ASIDE, *_columns(rows, 6))
    return len(rows)


async def _fold_visitors(conn: Any) -> None:
    """Fold every pending visitor into the sketches, in the caller's transaction.

    The rows are taken and deleted in one statement: a fold running meanwhile in another
    gateway waits for these rows' locks and then finds them gone, so each row is folded
    once (twice would do no harm either: a fold is a set union). Rows committed after
    the DELETE began stay for the next fold. Reports see the DELETE and the sketches it
    fed together, at this transaction's commit.
    """
    rows = await conn.fetch(f"DELETE FROM pending_visitors RETURNING {PENDING_COLUMNS}")
    await _add_to_sketches(conn, folded_cells(tuple(r) for r in rows))


#: How long the writer's fold waits for a lock before it leaves the fold to the next batch.
_FOLD_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '10ms'"


#: The array type each batch column travels as (any other: bigint, as counters are).
_ARRAY_TYPES = {"merchant_id": "text", "day": "text", "platform": "text", "channel": "text",
                "bot": "int", "outcome": "text"}


def _set_counts_aside_statement() -> str:
    """A batch's per-day increments appended to pending_counts, in one statement: the
    batch's clicks and per-day deltas arrive as ``unnest`` column arrays, once, and are
    summed per ``rollups`` key (rollup.batch_counts)."""
    def arrays(columns: Sequence[str], first: int) -> str:
        types = [_ARRAY_TYPES.get(column, "bigint") for column in columns]
        return ", ".join(f"${n}::{t}[]" for n, t in enumerate(types, start=first))

    keys = ", ".join(KEY_COLUMNS["rollups"])
    delta_columns = KEY_COLUMNS["rollups"] + COUNTERS
    clicks = (f"unnest({arrays(BATCH_CLICK_COLUMNS, 1)}) "
              f"AS c({', '.join(BATCH_CLICK_COLUMNS)})")
    deltas = (f"unnest({arrays(delta_columns, len(BATCH_CLICK_COLUMNS) + 1)}) "
              f"AS d({', '.join(delta_columns)})")
    return (f"INSERT INTO pending_counts ({PENDING_COUNT_COLUMNS}) "
            f"SELECT {keys}, {', '.join(f'sum({c})' for c in COUNTERS)} "
            f"FROM ({batch_counts(clicks, deltas)}) b GROUP BY {keys}")


_SET_COUNTS_ASIDE = _set_counts_aside_statement()


async def _set_counts_aside(conn: Any, clicks: Sequence[tuple[Any, ...]],
                            deltas: Sequence[tuple[Any, ...]]) -> int:
    """Append a batch's per-day increments to pending_counts (gateway/store/pending.py), in
    the caller's transaction: ``clicks`` as ``batch_click_row``s, ``deltas`` as
    ``delta_rows``. How many rows that made."""
    if not clicks and not deltas:
        return 0
    return _rows(await conn.execute(
        _SET_COUNTS_ASIDE, *_columns(clicks, len(BATCH_CLICK_COLUMNS)),
        *_columns(deltas, len(KEY_COLUMNS["rollups"]) + len(COUNTERS))))


def _fold_counts_statement() -> str:
    """Every pending count taken out of pending_counts and added to each counter table
    (rollup.fold_statement), in one statement: a data-modifying CTE per table. Every
    writer runs this same statement, and each table's rows are written in key order, so
    concurrent gateways take the tables' row locks in one order."""
    folds = ", ".join(f"fold_{table} AS ({fold_statement(table, 'batch')})"
                      for table in KEY_COLUMNS)
    return (f"WITH batch AS MATERIALIZED (DELETE FROM pending_counts "
            f"RETURNING {PENDING_COUNT_COLUMNS}), {folds} SELECT count(*) FROM batch")


_FOLD_COUNTS = _fold_counts_statement()


async def _fold_counts(conn: Any) -> None:
    """Fold every pending count into the counter tables, in the caller's transaction. As
    for visitors, the rows are taken and deleted in one statement, so a fold running
    meanwhile in another gateway waits for them, then finds them gone."""
    await conn.execute(_FOLD_COUNTS)


async def _fold_pending(conn: Any) -> None:
    """Fold both pending tables, in the caller's transaction."""
    await _fold_visitors(conn)
    await _fold_counts(conn)


def quote_ident(name: str) -> str:
    """``name`` as a PostgreSQL identifier, quoted (schema names come from configuration)."""
    return '"' + name.replace('"', '""') + '"'


def split_schema(url: str) -> tuple[str, str | None]:
    """Take LinkLoop's own ``schema=NAME`` query parameter out of a postgresql:// URL.

    ``postgresql://user@host/db?schema=linkloop`` keeps every table in schema ``linkloop``
    (created on first open). The parameter is removed before asyncpg sees the URL, since
    asyncpg would pass an unknown parameter on to the server as a setting.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    if not schemas:
        return url, None
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(query=rest)), schemas[-1] or None


def _product(row: Sequence[Any]) -> Product:
    return Product(
        id=row[0], merchant_id=row[1], code=row[2], title=row[3], targets=row[4],
        image_url=row[5], price=row[6], status=row[7], created_at=row[8], updated_at=row[9],
        valid_from=row[10], valid_until=row[11],
    )


def _merchant(row: Sequence[Any]) -> Merchant:
    return Merchant(row[0], row[1], tuple(row[2]), row[3])


def _unique(rows: Iterable[R]) -> list[R]:
    """The first row of each id: a batch never counts one id twice (as in SQLite)."""
    seen: set[str] = set()
    fresh = []
    for row in rows:
        if row.id not in seen:
            seen.add(row.id)
            fresh.append(row)
    return fresh


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows turned into ``width`` column arrays, for ``unnest``."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * width


#: The upper bound of a month partition, from ``pg_get_expr(relpartbound)``:
#: ``FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')``.
_PARTITION_UPPER = re.compile(r"TO \('([0-9]{4}-[0-9]{2}-[0-9]{2})'\)")


def _rows(status: str) -> int:
    """How many rows a command touched, from its status (``DELETE 42``)."""
    return int(status.rsplit(" ", 1)[-1])


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


async def _init_connection(conn: Any) -> None:
    """jsonb columns (targets, domains, entry settings) travel as Python objects."""
    await conn.set_type_codec(
        "jsonb", schema="pg_catalog", format="text",
        encoder=functools.partial(json.dumps, ensure_ascii=False), decoder=json.loads,
    )


async def _forget_in_sketches(conn: Any, visitor: str, scope: str, args: tuple[Any, ...],
                              ) -> list[tuple[str, str]]:
    """Take the visitor out of the sketch cells of their clicks (gateway/store/forget.py),
    before their clicks are deleted; (merchant, what became of the cell) per cell."""
    rows = await conn.fetch(f"{VISITOR_CLICKS.format('$1')} {scope}", visitor, *args)
    # Exact cells holding the hash, those of pruned days too (a scan: a rare request).
    exact = await conn.fetch(
        "SELECT merchant_id, kind, period, product_id, platform, channel FROM visitor_sketches "
        "WHERE substring(sketch FROM 1 FOR 1) = '\\x01'::bytea "
        f"AND position($1::bytea IN sketch) > 0 {scope}", hash_bytes(visitor), *args)
    outcomes: list[tuple[str, str]] = []
    where = ("merchant_id = $1 AND kind = $2 AND period = $3 AND product_id = $4 "
             "AND platform = $5 AND channel = $6")
    for key in dict.fromkeys([*visitor_cells(tuple(r) for r in rows),
                              *(tuple(r) for r in exact)]):
        found = await conn.fetchval(
            f"SELECT sketch FROM visitor_sketches WHERE {where} FOR UPDATE", *key)
        if found is None:
            continue
        raw, rolled = None, None
        if needs_raw(found):
            raw_sql, rolled_sql, cell_args = cell_queries(key, lambda n: f"${n}")
            raw = [(r[0], r[1]) for r in await conn.fetch(raw_sql, *cell_args)]
            rolled = await conn.fetchval(rolled_sql, *cell_args)
        outcome, sketch = cleaned_sketch(bytes(found), visitor, raw, rolled)
        if sketch is not None:
            await conn.execute(f"UPDATE visitor_sketches SET sketch = $7 WHERE {where}",
                               *key, sketch)
        outcomes.append((key[0], outcome))
    return outcomes


class PostgresStore(Store):
    def __init__(self, pool: Any, *, schema: str | None, timeout: float,
                 months_ahead: int, secrets: SecretBox | None = None,
                 call_limit: float | None = None, fold_visitors: int = 50_000) -> None:
        self._pool = pool
        #: When this store folds every pending row (its own count of them).
        self._fold_schedule = FoldSchedule(fold_visitors)
        self.secrets = secrets or SecretBox.ephemeral_box()
        self.schema = schema
        self.timeout = timeout
        self.call_limit = call_limit or timeout
        self.months_ahead = months_ahead
        self._next_partition_check = 0.0

    # --- lifecycle ---------------------------------------------------------------------------
    @classmethod
    async def open(
        cls, url: str, *, schema: str | None = None, min_size: int = 1, max_size: int = 10,
        timeout_seconds: float = 10.0, months_ahead: int = 3, secrets: SecretBox | None = None,
        call_limit: float | None = None, fold_visitors: int = 50_000,
    ) -> PostgresStore:
        """Connect a pool, apply pending migrations and make the coming months' partitions.

        ``schema``: keep every table in this schema (created if missing; it becomes the
        connections' search_path), e.g. one schema per test or per deployment.
        ``timeout_seconds``: longest one call may take, connecting included (not
        migrations).
        ``months_ahead``: click partitions made beyond the current month.
        ``secrets``: the box sealing stored secrets (default: a key that dies with this
        store, for tests and tools that never store secrets to keep).
        ``call_limit``: a longer limit for a whole call, while the server must still answer
        each statement (a lock wait included) within ``timeout_seconds``: the click
        writer's, whose own turns on a busy CPU are slow while the server is fine.
        ``fold_visitors``: see ``record``.
        """
        settings = {"search_path": quote_ident(schema)} if schema else {}
        per_statement = {"command_timeout": timeout_seconds} if call_limit else {}
        try:
            pool = await asyncpg.create_pool(
                url, min_size=min_size, max_size=max_size, timeout=timeout_seconds,
                init=_init_connection, server_settings=settings, **per_statement)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(_describe(exc)) from exc
        store = cls(pool, schema=schema, timeout=timeout_seconds, call_limit=call_limit,
                    months_ahead=months_ahead, secrets=secrets, fold_visitors=fold_visitors)
        try:
            await store._migrate()
            await store.ensure_partitions()
            async with store._conn() as conn:
                # Rows left pending (by an earlier run, or by another gateway) count
                # towards this store's first fold, so a restart leaves none waiting for a
                # whole fold's worth of new ones.
                store._fold_schedule.pending = await conn.fetchval(
                    "SELECT greatest((SELECT count(*) FROM pending_visitors), "
                    "(SELECT count(*) FROM pending_counts))")
        except BaseException:
            pool.terminate()
            raise
        return store

    async def _migrate(self) -> None:
        # No deadline: a migration may rebuild a big table, or wait its turn behind another
        # gateway's (the advisory lock below).
        async with self._conn(deadline=False) as conn:
            namespace = self.schema or await conn.fetchval("SELECT current_schema()")
            # Gateways opening together queue here; each applies what is still missing.
            key = f"linkloop:migrate:{namespace}"
            await conn.execute("SELECT pg_advisory_lock(hashtext($1))", key)
            try:
                await self._apply_migrations(conn)
                if not self.secrets.ephemeral:
                    # Secrets stored by a version before sealing are sealed now, once.
                    await self._reseal(conn, only_plain=True)
            finally:
                # If the connection broke, the server let go of the lock with the session.
                with contextlib.suppress(*_UNAVAILABLE):
                    await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", key)

    async def _apply_migrations(self, conn: Any) -> None:
        if self.schema and not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", self.schema):
            await conn.execute(f"CREATE SCHEMA {quote_ident(self.schema)}")
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                           "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
        done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, script in POSTGRES_MIGRATIONS:
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(script)
                if version == SKETCH_BACKFILL["postgres"]:
                    await self._backfill_sketches(conn)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    version, time.time())

    @staticmethod
    async def _backfill_sketches(conn: Any) -> None:
        """Visitor sketches of every click stored before they existed, a page at a time."""
        after = ""
        while True:
            rows = await conn.fetch(f"SELECT {CLICK_COLUMNS} FROM clicks WHERE id > $1 "
                                    "ORDER BY id LIMIT 5000", after)
            if not rows:
                return
            await _add_to_sketches(conn, sketch_cells(click_row(r) for r in rows))
            after = rows[-1][0]

    async def ensure_partitions(
        self, months_ahead: int | None = None, *, today: date | None = None,
    ) -> list[str]:
        """Make sure clicks has its partitions from last month to ``months_ahead`` ahead.

        Returns the names of the partitions it made. Safe to call at any time and from
        several gateways at once (the SQL function serialises creators); a month made
        after clicks already fell into ``clicks_default`` takes those rows with it. Last
        month is included for late journal replays and report time zones west of UTC.
        """
        ahead = self.months_ahead if months_ahead is None else months_ahead
        this_month = _month_start(today or datetime.now(UTC).date())
        months = [_add_months(this_month, k) for k in range(-1, ahead + 1)]
        made: list[str] = []
        async with self._conn() as conn, conn.transaction():
            for month in months:
                name = await conn.fetchval("SELECT ensure_click_partition($1)", month)
                if name:
                    made.append(name)
        self._next_partition_check = time.monotonic() + _PARTITION_CHECK_EVERY
        return made

    async def click_partitions(self) -> list[tuple[str, str]]:
        """(name, bounds) of each partition of clicks, by name."""
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'clicks'::regclass ORDER BY c.relname")
        return [(r[0], r[1]) for r in rows]

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), timeout=self.timeout)
        except _UNAVAILABLE:  # TimeoutError is an OSError
            self._pool.terminate()

    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.fetchval("SELECT 1")

    # --- plumbing ----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _conn(self, *, deadline: bool = True) -> AsyncIterator[Any]:
        """A pooled connection, for at most ``self.call_limit`` seconds from now (getting
        it, using it and handing it back); connection trouble or the deadline, here or in
        the body, is StoreUnavailable."""
        cutoff: _Cutoff | None = None
        loop = asyncio.get_running_loop()
        ends = loop.time() + self.call_limit
        try:
            conn = await self._pool.acquire(timeout=self.timeout)
            try:
                if deadline:
                    cutoff = _Cutoff(conn, ends - loop.time())
                yield conn
            finally:
                try:
                    # A connection that can't be reset is terminated by the pool: the
                    # body's outcome stands (a commit is a commit), whatever happens here.
                    with contextlib.suppress(*_UNAVAILABLE):
                        await self._pool.release(conn, timeout=self.timeout)
                finally:
                    if cutoff is not None:
                        cutoff.cancel()
        except _UNAVAILABLE as exc:
            if cutoff is not None and cutoff.fired:
                raise StoreUnavailable(
                    f"PostgreSQL did not answer within {self.timeout:g} s") from exc
            raise StoreUnavailable(_describe(exc)) from exc

    # --- merchants ---------------------------------------------------------------------------
    async def create_merchant(self, merchant: Merchant) -> Merchant:
        created = Merchant(merchant.id, merchant.name, merchant.domains,
                           merchant.created_at or time.time())
        async with self._conn() as conn:
            try:
                await conn.execute(
                    "INSERT INTO merchants (id, name, domains, created_at) VALUES ($1, $2, $3, $4)",
                    created.id, created.name, list(created.domains), created.created_at)
            except asyncpg.UniqueViolationError:
                raise MerchantExists(merchant.id) from None
        return created

    async def get_merchant(self, merchant_id: str) -> Merchant | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT id, name, domains, created_at FROM merchants WHERE id = $1", merchant_id)
        return _merchant(row) if row else None

    async def list_merchants(self) -> Sequence[Merchant]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT id, name, domains, created_at FROM merchants ORDER BY id")
        return [_merchant(r) for r in rows]

    async def update_merchant(self, merchant_id: str, *, name: str | None = None,
                              domains: Sequence[str] | None = None) -> Merchant | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "UPDATE merchants SET name = COALESCE($2, name), "
                "domains = COALESCE($3, domains) WHERE id = $1 "
                "RETURNING id, name, domains, created_at",
                merchant_id, name, list(domains) if domains is not None else None)
        return _merchant(row) if row else None

    # --- products ----------------------------------------------------------------------------
    async def create_product(
        self, merchant_id: str, *, code: str, title: str,
        targets: Mapping[str, Mapping[str, str]], image_url: str | None, price: str | None,
        valid_from: float | None = None, valid_until: float | None = None,
    ) -> Product:
        made = await self.create_products(merchant_id, [NewProduct(
            code, title, targets, image_url, price, valid_from, valid_until)])
        return made[0]

    async def create_products(self, merchant_id: str,
                              products: Sequence[NewProduct]) -> list[Product]:
        now = time.time()
        made = []
        async with self._conn() as conn, conn.transaction():
            for new in products:
                try:
                    product_id: int = await conn.fetchval(
                        "INSERT INTO products (merchant_id, code, title, targets, image_url, "
                        "price, status, created_at, updated_at, valid_from, valid_until) "
                        "VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $9, $10) "
                        "RETURNING id",
                        merchant_id, new.code, new.title, new.targets, new.image_url,
                        new.price, now, now, new.valid_from, new.valid_until)
                except asyncpg.UniqueViolationError as exc:
                    if exc.constraint_name == "products_code_key":
                        raise CodeTaken(new.code) from None
                    raise
                # Other instances may have cached this code as missing (sent on commit).
                await conn.execute("SELECT pg_notify($1, $2)", LINKS_CHANNEL, new.code)
                made.append(Product(
                    id=product_id, merchant_id=merchant_id, code=new.code, title=new.title,
                    targets=new.targets, image_url=new.image_url, price=new.price,
                    created_at=now, updated_at=now, valid_from=new.valid_from,
                    valid_until=new.valid_until))
        return made

    async def get_product(self, merchant_id: str, product_id: int) -> Product | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {PRODUCT_COLUMNS} FROM products WHERE merchant_id = $1 AND id = $2",
                merchant_id, product_id)
        return _product(row) if row else None

    async def list_products(
        self, merchant_id: str, *, limit: int, after_id: int = 0, search: str | None = None,
        state: ProductState | None = None, now: float = 0.0,
    ) -> Sequence[Product]:
        query, params = product_list_query(merchant_id, limit=limit, after_id=after_id,
                                           search=search, state=state, now=now, mark="${n}",
                                           like="ILIKE")
        async with self._conn() as conn:
            rows = await conn.fetch(query, *params)
        return [_product(r) for r in rows]

    async def update_product(
        self, merchant_id: str, product_id: int, changes: Mapping[str, Any],
    ) -> Product | None:
        assert set(changes) <= PRODUCT_CHANGES, (
            f"unexpected product changes: {set(changes) - PRODUCT_CHANGES}")
        values = {**changes, "updated_at": time.time()}
        assignments = ", ".join(f"{k} = ${n}" for n, k in enumerate(values, start=3))
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"UPDATE products SET {assignments} WHERE merchant_id = $1 AND id = $2 "
                f"RETURNING {PRODUCT_COLUMNS}",
                merchant_id, product_id, *values.values())
            if row is not None:  # every instance drops its cached copy within a moment
                await conn.execute("SELECT pg_notify($1, $2)", LINKS_CHANNEL, row["code"])
        return _product(row) if row else None

    async def watch_links(self, forget: Callable[[str | None], None]) -> None:
        """LISTEN for changed links on a connection of our own; reconnect when it drops.

        ``forget(None)`` once listening again (changes may have been missed meanwhile),
        never while the database is away: there is nothing to learn then, and the link
        cache keeps serving what it has.
        """
        delay = 0.5

        def heard(_conn: Any, _pid: int, _channel: str, code: str) -> None:
            forget(code)

        while True:
            try:
                async with self._conn(deadline=False) as conn:  # held as long as it works
                    with _Cutoff(conn, self.timeout):
                        await conn.add_listener(LINKS_CHANNEL, heard)
                    forget(None)  # whatever changed while nobody was listening
                    delay = 0.5
                    try:
                        while True:  # a ping notices a connection that died quietly
                            await asyncio.sleep(_WATCH_EVERY)
                            with _Cutoff(conn, self.timeout):
                                await conn.fetchval("SELECT 1")
                    finally:
                        with contextlib.suppress(*_UNAVAILABLE), _Cutoff(conn, self.timeout):
                            await conn.remove_listener(LINKS_CHANNEL, heard)
            except StoreUnavailable as exc:  # _conn turns the body's failures into this
                log.warning("store.link_listener_lost", error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def recent_links(self, limit: int) -> Sequence[Product]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {PRODUCT_COLUMNS} FROM products ORDER BY updated_at DESC LIMIT $1",
                limit)
        return [_product(r) for r in rows]

    async def link(self, code: str) -> Product | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {PRODUCT_COLUMNS} FROM products WHERE code = $1", code)
        return _product(row) if row else None

    async def links(self, codes: Sequence[str]) -> dict[str, Product]:
        if not codes:
            return {}
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {PRODUCT_COLUMNS} FROM products WHERE code = ANY($1::text[])",
                list(codes))
        return {row[2]: _product(row) for row in rows}

    # --- channels ----------------------------------------------------------------------------
    async def create_channel(self, channel: Channel) -> Channel:
        made = Channel(channel.merchant_id, channel.name, channel.label,
                       channel.created_at or time.time())
        async with self._conn() as conn:
            try:
                await conn.execute(
                    "INSERT INTO channels (merchant_id, name, label, created_at) "
                    "VALUES ($1, $2, $3, $4)",
                    made.merchant_id, made.name, made.label, made.created_at)
            except asyncpg.ForeignKeyViolationError:
                raise StoreError(f"no merchant {made.merchant_id!r}") from None
            except asyncpg.UniqueViolationError:
                raise ChannelExists(made.name) from None
        return made

    async def list_channels(self, merchant_id: str) -> Sequence[Channel]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT merchant_id, name, label, created_at FROM channels "
                "WHERE merchant_id = $1 ORDER BY name", merchant_id)
        return [Channel(*r) for r in rows]

    async def delete_channel(self, merchant_id: str, name: str) -> bool:
        async with self._conn() as conn:
            done = await conn.execute(
                "DELETE FROM channels WHERE merchant_id = $1 AND name = $2", merchant_id, name)
        return bool(done != "DELETE 0")

    # --- clicks, events, rollups -------------------------------------------------------------
    async def record(self, clicks: Sequence[Click], events: Sequence[Event]) -> None:
        """Store a batch in one transaction. Its visitors and per-day counts are set aside
        (pending_visitors, pending_counts); once this store has set aside ``fold_visitors``
        rows in either since its last fold (or its opening: with those pending then), or a
        minute after its last fold (``FOLD_AFTER_SECONDS``), it folds every pending row,
        other gateways' too, into the sketches and counter tables in a transaction of its
        own.

        Each gateway counts only its own rows (a shared count would be one more row every
        batch of every gateway updates): with several writers, folds come more often and
        each takes what all of them set aside since the last one."""
        if not clicks and not events:
            return
        if time.monotonic() >= self._next_partition_check:
            await self._keep_partitions()
        async with self._conn() as conn, conn.transaction():
            aside = await self._record(conn, clicks, events)
        self._fold_schedule.pending += aside
        if self._fold_schedule.due():
            await self._fold_pending()

    async def _fold_pending(self) -> None:
        """Every pending row folded, in a transaction of its own."""
        self._fold_schedule.folding()
        try:
            async with self._conn() as conn, conn.transaction():
                # Pending rows or sketches locked by another transaction (another gateway's
                # fold, a forget folding first, an import) are being folded or written by
                # it: waiting would hold up the writer, and then find most rows gone. This
                # fold gives up at once instead, and the next batch tries again.
                await conn.execute(_FOLD_LOCK_TIMEOUT)
                await _fold_pending(conn)
        except asyncpg.exceptions.LockNotAvailableError:
            log.info("store.fold_deferred", pending=self._fold_schedule.pending)
            return
        except (StoreUnavailable, asyncpg.PostgresError) as exc:
            # The batch is stored, and reports count what it set aside where it is: the
            # next batch folds it.
            log.warning("store.fold_failed", pending=self._fold_schedule.pending,
                        error=str(exc))
            return
        self._fold_schedule.pending = 0

    async def _keep_partitions(self) -> None:
        """Partitions for the coming months, made from the write path of a long-lived gateway.

        A failure other than the database being away must not stop clicks being written:
        they land in clicks_default until a later attempt makes their month.
        """
        try:
            await self.ensure_partitions()
        except asyncpg.PostgresError as exc:
            self._next_partition_check = time.monotonic() + 300.0
            log.warning("store.partitions_failed", error=str(exc))

    @staticmethod
    async def _record(conn: Any, clicks: Sequence[Click], events: Sequence[Event]) -> int:
        """Store the rows in the caller's transaction; how many rows it set aside (of the
        table it set more aside in)."""
        # Rows in a fixed order (as every gateway sorts the same way) so that two instances
        # writing overlapping batches take their row locks in one order and never deadlock.
        fresh_clicks = sorted(_unique(clicks), key=lambda c: (c.day, c.id))
        fresh_events = sorted(_unique(events), key=lambda e: e.id)

        # Skip rows a previous, unclear attempt already stored: replay never double-counts.
        new_clicks: list[Click] = []
        if fresh_clicks:
            rows = await conn.fetch(_INSERT_CLICKS, *_columns(
                [(c.id, c.merchant_id, c.product_id, c.ts, c.day, c.platform, c.source,
                  c.channel, c.visitor, c.ip_hash, c.bot, c.mobile, c.os, c.outcome)
                 for c in fresh_clicks], 14))
            stored = {r[0] for r in rows}
            new_clicks = [c for c in fresh_clicks if c.id in stored]
        # Each event counts under its click: the clicks of this batch are already in, so one
        # lookup finds old and new ones alike. An event whose click is not stored yet is
        # kept as unattributed until it is.
        origins: dict[tuple[str, str], ClickOrigin] = {}
        click_ids = sorted({e.click_id for e in fresh_events if e.click_id})
        if click_ids:
            for row in await conn.fetch(_CLICK_ORIGINS, click_ids):
                origins[(row[0], row[1])] = ClickOrigin(row[2], row[3], row[4] or "")
        new_events: list[Event] = []
        if fresh_events:
            rows = await conn.fetch(_INSERT_EVENTS, *_columns(
                [(e.id, e.merchant_id, e.product_id, e.click_id, e.target, e.kind, e.platform,
                  e.ts, e.day, not e.click_id or (e.merchant_id, e.click_id) in origins)
                 for e in fresh_events], 10))
            stored = {r[0] for r in rows}
            new_events = [e for e in fresh_events if e.id in stored]
        # The clicks are turned into counts in SQL; the events (few, each needing its
        # click's origin) are summed here first.
        deltas = rollup_deltas((), new_events, origins)
        for key, delta in reattributed_deltas(
                await PostgresStore._reattribute(conn, new_clicks)).items():
            deltas.setdefault(key, RollupDelta()).add(delta)
        counted = await _set_counts_aside(conn, [batch_click_row(c) for c in new_clicks],
                                          delta_rows(deltas))
        return max(counted, await _set_visitors_aside(conn, new_clicks))

    @staticmethod
    async def _reattribute(conn: Any, new_clicks: Sequence[Click],
                           ) -> list[tuple[Event, ClickOrigin]]:
        """Events stored before these clicks (a replay out of order), now theirs."""
        if not new_clicks:
            return []
        by_id = {(c.merchant_id, c.id): c for c in new_clicks}
        keys = sorted(by_id)
        moved = []
        for row in await conn.fetch(_UNATTRIBUTED, [k[0] for k in keys], [k[1] for k in keys]):
            click = by_id[(row[1], row[7])]  # the same merchant's click, never another's
            moved.append((Event(*row), ClickOrigin(click.product_id, click.platform,
                                                   click.channel or "")))
        return moved

    async def click_origin(self, merchant_id: str, click_id: str) -> tuple[int, str] | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT product_id, platform FROM clicks WHERE merchant_id = $1 AND id = $2 "
                "LIMIT 1", merchant_id, click_id)
        return (row[0], row[1]) if row else None

    # --- minted links -------------------------------------------------------------------------
    async def put_minted(self, minted: MintedLink) -> None:
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _MINTED_COLUMNS.split(", ")[3:])
        async with self._conn() as conn, conn.transaction():
            # Only for a share code of the merchant's own (codes are one namespace).
            if await conn.fetchval("SELECT 1 FROM products WHERE merchant_id = $1 AND code = $2",
                                   minted.merchant_id, minted.code) is None:
                return
            await conn.execute(
                f"INSERT INTO minted_links ({_MINTED_COLUMNS}) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
                f"ON CONFLICT (code, kind) DO UPDATE SET {updates}", *astuple(minted))
            # Every instance drops the code's cached link, minted links and all.
            await conn.execute("SELECT pg_notify($1, $2)", LINKS_CHANNEL, minted.code)

    async def minted(self, merchant_id: str, code: str) -> Sequence[MintedLink]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_MINTED_COLUMNS} FROM minted_links WHERE merchant_id = $1 "
                "AND code = $2 ORDER BY kind", merchant_id, code)
        return [MintedLink(*r) for r in rows]

    async def minted_values(self, codes: Sequence[str], now: float,
                            ) -> dict[str, dict[str, str]]:
        if not codes:
            return {}
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT code, kind, value FROM minted_links WHERE code = ANY($1::text[]) "
                "AND value IS NOT NULL AND (expires_at = 0 OR expires_at > $2)",
                list(codes), now)
        found: dict[str, dict[str, str]] = {}
        for code, kind, value in rows:
            found.setdefault(code, {})[kind] = value
        return found

    async def minted_image(self, code: str) -> tuple[str, bytes] | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT value, image FROM minted_links WHERE code = $1 AND kind = 'wxacode' "
                "AND value IS NOT NULL AND image IS NOT NULL", code)
        return (row[0], bytes(row[1])) if row else None

    async def claim_due_mints(self, now: float, lease_until: float, limit: int,
                              ) -> Sequence[MintedLink]:
        columns = ", ".join("NULL" if c == "image" else f"m.{c}"
                            for c in _MINTED_COLUMNS.split(", "))
        async with self._conn() as conn:
            # SKIP LOCKED: two gateways claiming at once take different rows.
            rows = await conn.fetch(
                f"UPDATE minted_links m SET due_at = $2 FROM (SELECT code, kind FROM "
                "minted_links WHERE due_at <= $1 ORDER BY due_at LIMIT $3 "
                "FOR UPDATE SKIP LOCKED) due WHERE m.code = due.code AND m.kind = due.kind "
                f"RETURNING {columns}", now, lease_until, limit)
        return [MintedLink(*r) for r in rows]

    async def forget_minted(self, merchant_id: str, code: str) -> None:
        async with self._conn() as conn:
            await conn.execute("DELETE FROM minted_links WHERE merchant_id = $1 AND code = $2",
                               merchant_id, code)
            await conn.execute("SELECT pg_notify($1, $2)", LINKS_CHANNEL, code)

    # --- the WeCom entry point ---------------------------------------------------------------
    async def put_entry(self, entry: Entry) -> Entry:
        stored = Entry(entry.merchant_id, entry.kind, entry.config, entry.secrets, time.time())
        sealed = seal_entry_secrets(self.secrets, stored.merchant_id, stored.secrets)
        async with self._conn() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO entries (merchant_id, kind, config, secrets, updated_at) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (merchant_id) DO UPDATE SET "
                "kind = excluded.kind, config = excluded.config, secrets = excluded.secrets, "
                "updated_at = excluded.updated_at",
                stored.merchant_id, stored.kind, stored.config, sealed, stored.updated_at)
            await conn.execute("DELETE FROM entry_ways WHERE merchant_id = $1",
                               stored.merchant_id)
        return stored

    async def get_entry(self, merchant_id: str) -> Entry | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT merchant_id, kind, config, secrets, updated_at FROM entries "
                "WHERE merchant_id = $1", merchant_id)
        if row is None:
            return None
        return Entry(row[0], row[1], row[2], open_entry_secrets(self.secrets, row[0], row[3]),
                     row[4])

    async def get_entry_way(self, merchant_id: str, platform: str) -> EntryWay | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {_WAY_COLUMNS} FROM entry_ways WHERE merchant_id = $1 AND platform = $2",
                merchant_id, platform)
        return EntryWay(*row) if row else None

    async def put_entry_way(self, way: EntryWay) -> EntryWay:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"INSERT INTO entry_ways ({_WAY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) "
                f"ON CONFLICT (merchant_id, platform) DO NOTHING RETURNING {_WAY_COLUMNS}",
                way.merchant_id, way.platform, way.config_id, way.qr_code, way.state,
                way.created_at or time.time())
            if row is None:  # one already exists (perhaps made by another gateway): keep it
                row = await conn.fetchrow(
                    f"SELECT {_WAY_COLUMNS} FROM entry_ways "
                    "WHERE merchant_id = $1 AND platform = $2", way.merchant_id, way.platform)
        return EntryWay(*row)

    async def accept_callback(self, merchant_id: str, nonce: str, message: str) -> bool:
        async with self._conn() as conn:
            item_id = await conn.fetchval(
                "INSERT INTO wecom_inbox (merchant_id, nonce, received_at, message) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (merchant_id, nonce) DO NOTHING "
                "RETURNING id", merchant_id, nonce, time.time(), message)
        return item_id is not None

    async def pending_callbacks(self, limit: int) -> Sequence[InboxItem]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT id, merchant_id, message, received_at FROM wecom_inbox "
                "WHERE NOT done ORDER BY id LIMIT $1", limit)
        return [InboxItem(*r) for r in rows]

    async def finish_callback(self, item_id: int) -> None:
        async with self._conn() as conn:
            await conn.execute("UPDATE wecom_inbox SET done = TRUE WHERE id = $1", item_id)

    async def schema_version(self) -> int:
        async with self._conn() as conn:
            return int(await conn.fetchval(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"))

    async def export_clicks(self, merchant_id: str, *, after: str, limit: int,
                            ) -> Sequence[Click]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {CLICK_COLUMNS} FROM clicks "
                "WHERE merchant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                merchant_id, after, limit)
        return [click_row(r) for r in rows]

    async def export_events(self, merchant_id: str, *, after: str, limit: int,
                            ) -> Sequence[Event]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT id, merchant_id, product_id, kind, platform, ts, day, click_id, target "
                "FROM events WHERE merchant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                merchant_id, after, limit)
        return [Event(id=r[0], merchant_id=r[1], product_id=r[2], kind=r[3], platform=r[4],
                      ts=r[5], day=r[6], click_id=r[7], target=r[8]) for r in rows]

    async def list_entry_ways(self, merchant_id: str) -> Sequence[EntryWay]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_WAY_COLUMNS} FROM entry_ways WHERE merchant_id = $1 ORDER BY platform",
                merchant_id)
        return [EntryWay(*r) for r in rows]

    async def put_credentials(self, credentials: Credentials) -> Credentials:
        stored = Credentials(credentials.merchant_id, credentials.platform, credentials.app_id,
                             credentials.secret, time.time())
        sealed = seal_credential_secret(self.secrets, stored.merchant_id, stored.platform,
                                        stored.secret)
        async with self._conn() as conn:
            await conn.execute(
                f"INSERT INTO app_credentials ({_CREDENTIAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5) "
                "ON CONFLICT (merchant_id, platform) DO UPDATE SET app_id = EXCLUDED.app_id, "
                "secret = EXCLUDED.secret, updated_at = EXCLUDED.updated_at",
                stored.merchant_id, stored.platform, stored.app_id, sealed, stored.updated_at)
        return stored

    async def get_credentials(self, merchant_id: str, platform: str) -> Credentials | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {_CREDENTIAL_COLUMNS} FROM app_credentials "
                "WHERE merchant_id = $1 AND platform = $2", merchant_id, platform)
        return self._credentials(row) if row else None

    async def list_credentials(self, merchant_id: str) -> Sequence[Credentials]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_CREDENTIAL_COLUMNS} FROM app_credentials WHERE merchant_id = $1 "
                "ORDER BY platform", merchant_id)
        return [self._credentials(r) for r in rows]

    def _credentials(self, row: Sequence[Any]) -> Credentials:
        return Credentials(row[0], row[1], row[2],
                           open_credential_secret(self.secrets, row[0], row[1], row[3]), row[4])

    # --- retention and privacy ---------------------------------------------------------------
    async def prune_raw(self, *, before_day: str, before_ts: float) -> dict[str, Any]:
        """Month partitions of clicks wholly before ``before_day`` are dropped whole (no
        row by row delete, no bloat left); the rest goes by DELETE. One gateway at a time
        (an advisory lock: the others skip); no deadline, since a first prune of a big
        database takes a while."""
        counts: dict[str, Any] = {"clicks": 0, "events": 0, "visitors": 0, "callbacks": 0,
                                  "partitions_dropped": []}
        async with self._conn(deadline=False) as conn:
            key = f"linkloop:prune:{self.schema or await conn.fetchval('SELECT current_schema()')}"
            if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", key):
                counts["skipped"] = "another gateway is pruning"
                return counts
            try:
                for name, bounds in await self._partitions(conn):
                    upper = _PARTITION_UPPER.search(bounds)
                    if upper is None or upper.group(1) > before_day:
                        continue
                    # Brief, but it locks clicks: give way to the writers rather than queue
                    # them; whatever stays is deleted below and the partition goes next time.
                    try:
                        async with conn.transaction():
                            await conn.execute("SET LOCAL lock_timeout = '2s'")
                            await conn.execute(f"DROP TABLE {quote_ident(name)}")
                        counts["partitions_dropped"].append(name)
                    except asyncpg.exceptions.LockNotAvailableError:
                        log.warning("prune.partition_busy", partition=name)
                for table, statement in (
                        ("clicks", "DELETE FROM clicks WHERE day < $1"),
                        ("events", "DELETE FROM events WHERE day < $1")):
                    counts[table] = _rows(await conn.execute(statement, before_day))
                # The primary key starts (merchant, day): each merchant's old days are a range.
                for (merchant,) in await conn.fetch("SELECT id FROM merchants"):
                    counts["visitors"] += _rows(await conn.execute(
                        "DELETE FROM daily_visitors WHERE merchant_id = $1 AND day < $2",
                        merchant, before_day))
                counts["callbacks"] = _rows(await conn.execute(
                    "DELETE FROM wecom_inbox WHERE done AND received_at < $1", before_ts))
            finally:
                with contextlib.suppress(*_UNAVAILABLE):
                    await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", key)
        return counts

    async def _partitions(self, conn: Any) -> list[tuple[str, str]]:
        rows = await conn.fetch(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'clicks'::regclass ORDER BY c.relname")
        return [(r[0], r[1]) for r in rows]

    async def forget_visitor(self, visitor: str, merchant_id: str | None,
                             ) -> dict[str, dict[str, int]]:
        scope, args = ("AND merchant_id = $2", (merchant_id,)) if merchant_id else ("", ())
        async with self._conn(deadline=False) as conn, conn.transaction():
            # What is still set aside is folded first: then the sketches are all there is
            # to clean, and the rollups hold every click the cleaning compares them with.
            await _fold_pending(conn)
            sketches = await _forget_in_sketches(conn, visitor, scope, args)
            # A scan of every partition (no index by visitor): rare, and worth no index.
            clicks = await conn.fetch(
                f"DELETE FROM clicks WHERE visitor = $1 {scope} RETURNING merchant_id, id",
                visitor, *args)
            # A click of theirs another gateway recorded after the fold above is deleted
            # just now, but its visitor was set aside with it: out too, or the next fold
            # would count them again.
            await conn.execute(f"DELETE FROM pending_visitors WHERE visitor = $1 {scope}",
                               hash_bytes(visitor), *args)
            # Their clicks' events, of the same merchant only: another merchant's event
            # naming one of these clicks (a state crossed between merchants) is theirs.
            events = await conn.fetch(
                f"DELETE FROM events WHERE click_id = ANY($1::text[]) {scope} "
                "RETURNING merchant_id", [c[1] for c in clicks], *args)
            visits = await conn.fetch(
                f"WITH gone AS (DELETE FROM daily_visitors WHERE visitor = $1 {scope} "
                "RETURNING merchant_id) SELECT merchant_id, count(*) FROM gone "
                "GROUP BY merchant_id", visitor, *args)
        return with_sketches(tally_forgotten((c[0] for c in clicks), (e[0] for e in events),
                                             [(v[0], v[1]) for v in visits]), sketches)

    async def export_rollups(self, merchant_id: str, *, before_day: str,
                             ) -> tuple[list[tuple[RollupKey, tuple[int, ...]]],
                                        list[tuple[SketchKey, bytes]]]:
        async with self._conn(deadline=False) as conn:
            # What is set aside is folded first: the export carries the tables only.
            async with conn.transaction():
                await _fold_pending(conn)
            rows = await conn.fetch(
                f"SELECT product_id, day, platform, channel, {', '.join(COUNTERS)} "
                "FROM rollups WHERE merchant_id = $1 AND day < $2 "
                "ORDER BY day, product_id, platform, channel", merchant_id, before_day)
            # A month's period ('2026-06') sorts before its days: the month of the cutoff
            # comes along whole (a merge is a union, so its kept days can't count twice).
            sketches = await conn.fetch(
                "SELECT kind, period, product_id, platform, channel, sketch "
                "FROM visitor_sketches WHERE merchant_id = $1 AND period < $2 "
                "ORDER BY kind, period, product_id, platform, channel",
                merchant_id, before_day)
        return ([((merchant_id, r[0], r[1], r[2], r[3]), tuple(r[4:])) for r in rows],
                [((merchant_id, r[0], r[1], r[2], r[3], r[4]), bytes(r[5])) for r in sketches])

    async def add_rollups(self, rows: Sequence[tuple[RollupKey, tuple[int, ...]]],
                          sketches: Sequence[tuple[SketchKey, bytes]] = ()) -> None:
        deltas = deltas_of(rows)
        async with self._conn(deadline=False) as conn, conn.transaction():
            # The sketches first, as a fold merges them before it takes the counts set
            # aside: in the other order, an import holding those counts would wait for a
            # merchant's sketch lock that a fold (an export's, a forget's) holds while it
            # waits for those counts, a deadlock.
            await _add_to_sketches(conn, dict(sketches), merge=merge_sketches)
            # Through pending_counts, as a batch's are, and folded at once: every pending
            # row, another gateway's too (a fold adds them up, whoever folds them).
            await _set_counts_aside(conn, (), delta_rows(deltas))
            await _fold_counts(conn)

    # --- secrets at rest -----------------------------------------------------------------------
    async def reseal_secrets(self, *, only_plain: bool = False) -> dict[str, int]:
        async with self._conn(deadline=False) as conn:
            return await self._reseal(conn, only_plain=only_plain)

    async def _reseal(self, conn: Any, *, only_plain: bool) -> dict[str, int]:
        """Seal every stored secret under the current key (``only_plain``: only those
        stored unsealed), in one transaction; rows are locked as read, so a secret set
        meanwhile through another gateway waits and is not overwritten with its old value.
        The two small tables are then rewritten whole (VACUUM FULL), so the row versions
        the update left behind (plain, or under a retired key) are gone from their files."""
        async with conn.transaction():
            entries = resealed_entries(self.secrets, [tuple(r) for r in await conn.fetch(
                "SELECT merchant_id, secrets FROM entries FOR UPDATE")], only_plain=only_plain)
            await conn.executemany(
                "UPDATE entries SET secrets = $1 WHERE merchant_id = $2",
                entries)
            credentials = resealed_credentials(self.secrets, [tuple(r) for r in await conn.fetch(
                "SELECT merchant_id, platform, secret FROM app_credentials FOR UPDATE")],
                only_plain=only_plain)
            await conn.executemany("UPDATE app_credentials SET secret = $1 "
                                   "WHERE merchant_id = $2 AND platform = $3", credentials)
        if entries or credentials:
            await conn.execute("VACUUM FULL entries, app_credentials")
        return {"entries": len(entries), "app_credentials": len(credentials)}

    async def add_group_member(self, merchant_id: str, chat_id: str, member: str) -> bool:
        async with self._conn() as conn:
            added = await conn.fetchval(
                "INSERT INTO wecom_group_members (merchant_id, chat_id, member) "
                "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING TRUE",
                merchant_id, chat_id, member)
        return added is not None

    async def put_contact(self, contact: Contact) -> Contact:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO wecom_contacts (merchant_id, user_id, external_userid, platform, "
                "product_id, click_id, added_at) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT DO NOTHING",
                contact.merchant_id, contact.user_id, contact.external_userid,
                contact.platform, contact.product_id, contact.click_id,
                contact.added_at or time.time())
            found = await self._contact(conn, contact.merchant_id, contact.user_id,
                                        contact.external_userid)
        assert found is not None
        return found

    async def get_contact(self, merchant_id: str, user_id: str,
                          external_userid: str) -> Contact | None:
        async with self._conn() as conn:
            return await self._contact(conn, merchant_id, user_id, external_userid)

    @staticmethod
    async def _contact(conn: Any, merchant_id: str, user_id: str,
                       external_userid: str) -> Contact | None:
        row = await conn.fetchrow(
            "SELECT merchant_id, user_id, external_userid, platform, product_id, click_id, "
            "added_at FROM wecom_contacts WHERE merchant_id = $1 AND user_id = $2 "
            "AND external_userid = $3", merchant_id, user_id, external_userid)
        return Contact(*row) if row else None

    async def add_alert(self, merchant_id: str, kind: str, detail: Mapping[str, Any], *,
                        key: str, created_at: float) -> bool:
        async with self._conn() as conn:
            added = await conn.fetchval(
                "INSERT INTO alerts (merchant_id, kind, detail, dedupe, created_at) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING TRUE",
                merchant_id, kind, json.dumps(detail, ensure_ascii=False), key, created_at)
        return added is not None

    async def list_alerts(self, merchant_id: str, *, since: float, limit: int,
                          ) -> Sequence[Alert]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT id, merchant_id, kind, detail, created_at FROM alerts "
                "WHERE merchant_id = $1 AND created_at >= $2 "
                "ORDER BY created_at DESC, id DESC LIMIT $3", merchant_id, since, limit)
        return [Alert(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    # --- reports -----------------------------------------------------------------------------
    async def stats(
        self, merchant_id: str, *, from_day: str, to_day: str, by: GroupBy,
        product_id: int | None = None, platform: str | None = None,
        channel: str | None = None,
    ) -> list[StatsRow]:
        query, params = stats_query(merchant_id, from_day=from_day, to_day=to_day, by=by,
                                    product_id=product_id, platform=platform, mark="${n}",
                                    channel=channel)
        load_report_code()
        plan = SketchPlan.of(from_day=from_day, to_day=to_day, by=by, product_id=product_id,
                             platform=platform, channel=channel)
        cells, cell_params = sketch_query(plan, merchant_id, mark="${n}")
        pending, pending_params = pending_cells_query(plan, merchant_id, mark="${n}",
                                                      engine="postgres")
        # One snapshot: a fold moving visitors into the sketches meanwhile is seen whole or
        # not at all.
        async with (self._conn() as conn,
                    conn.transaction(isolation="repeatable_read", readonly=True)):
            rows = await conn.fetch(query, *params)
            sketches = await conn.fetch(cells, *cell_params)
            aside = await conn.fetch(pending, *pending_params)
        # Merging the sketches is a few numpy calls per group: a report by product over
        # thousands of products would hold the event loop, and every share link, for a
        # good part of a second. (SQLite's reports run on a thread of their own already.)
        return await asyncio.to_thread(with_unique_visitors, by,
                                       [stats_row(by, r) for r in rows],
                                       with_pending(sketches, aside))

    # --- staff logins ------------------------------------------------------------------------
    async def create_user(self, user: User) -> User:
        created = User(user.email, user.merchant_id, user.role, user.password_hash,
                       user.created_at or time.time())
        async with self._conn() as conn:
            try:
                await conn.execute(
                    "INSERT INTO users (email, merchant_id, role, password_hash, created_at) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    created.email, created.merchant_id, created.role, created.password_hash,
                    created.created_at)
            except asyncpg.UniqueViolationError:
                raise UserExists(user.email) from None
            except asyncpg.ForeignKeyViolationError:
                raise StoreError(f"no merchant {user.merchant_id!r}") from None
        return created

    async def list_users(self, merchant_id: str) -> Sequence[User]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_USER_COLUMNS} FROM users WHERE merchant_id = $1 ORDER BY email",
                merchant_id)
        return [User(*r) for r in rows]

    async def get_user(self, email: str) -> User | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE email = $1",
                                      email)
        return User(*row) if row else None

    async def record_login_failure(
        self, email: str, *, now: float, max_failures: int, lock_seconds: float,
    ) -> User | None:
        # One statement: concurrent wrong guesses on several gateways each count.
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "UPDATE users SET "
                "failed_logins = CASE WHEN failed_logins + 1 >= $1 THEN 0 "
                "ELSE failed_logins + 1 END, "
                "locked_until = CASE WHEN failed_logins + 1 >= $1 THEN $2 ELSE locked_until END "
                f"WHERE email = $3 RETURNING {_USER_COLUMNS}",
                max_failures, now + lock_seconds, email)
        return User(*row) if row else None

    async def record_login_success(self, email: str, *, now: float) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE users SET failed_logins = 0, last_login_at = $1 WHERE email = $2",
                now, email)

    async def end_sessions(self, email: str, *, now: float) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE users SET sessions_after = GREATEST(sessions_after, $1) "
                "WHERE email = $2", now, email)

    async def set_password(self, email: str, password_hash: str, *, now: float) -> User | None:
        async with self._conn() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT {_USER_COLUMNS} FROM users WHERE email = $1 FOR UPDATE", email)
            await conn.execute(
                "UPDATE users SET password_hash = $2, failed_logins = 0, locked_until = 0, "
                "sessions_after = GREATEST(sessions_after, $3) WHERE email = $1",
                email, password_hash, now)
        return User(*row) if row else None

    async def unlock_user(self, email: str) -> User | None:
        async with self._conn() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT {_USER_COLUMNS} FROM users WHERE email = $1 FOR UPDATE", email)
            await conn.execute(
                "UPDATE users SET failed_logins = 0, locked_until = 0 WHERE email = $1", email)
        return User(*row) if row else None

    async def take_login_attempt(
        self, address: str, *, now: float, window_seconds: float, max_attempts: int,
    ) -> float:
        query, params = login_attempt_query(address, now=now, window_seconds=window_seconds,
                                            max_attempts=max_attempts, mark="${n}")
        async with self._conn() as conn:
            await conn.execute("DELETE FROM login_throttle WHERE window_start <= $1",
                               now - window_seconds)
            if await conn.fetchrow(query, *params):
                return 0.0
            start = await conn.fetchval(
                "SELECT window_start FROM login_throttle WHERE address = $1", address)
        return login_attempt_wait(start, now=now, window_seconds=window_seconds)

    async def give_back_login_attempt(self, address: str) -> None:
        async with self._conn() as conn:
            await conn.execute("UPDATE login_throttle SET attempts = attempts - 1 "
                               "WHERE address = $1 AND attempts > 0", address)


class _Cutoff:
    """Terminates a connection that is still in use ``seconds`` from now.

    Closing the socket is the one way out that needs no answer from the server: every
    await on the connection then fails at once (with InterfaceError), and the pool replaces
    it. The body's own awaits are left to fail: no task is cancelled.
    """

    def __init__(self, conn: Any, seconds: float) -> None:
        self.fired = False
        self._conn = conn
        self._handle = asyncio.get_running_loop().call_later(seconds, self._fire)

    def _fire(self) -> None:
        self.fired = True
        self._conn.terminate()

    def cancel(self) -> None:
        self._handle.cancel()

    def __enter__(self) -> _Cutoff:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def _describe(exc: BaseException) -> str:
    return f"PostgreSQL unavailable: {str(exc) or type(exc).__name__}"
