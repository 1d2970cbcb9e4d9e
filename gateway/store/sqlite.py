"""The embedded engine: one SQLite file in WAL mode, worked on two dedicated threads.

Every statement runs off the event loop: writes on one thread (SQLite has one writer
anyway), reads on another so that a cache-miss lookup on the hot path never queues behind a
batch of clicks. Each transaction is a plain function run whole on its thread, so it costs
one hop from the loop, not one per statement.

The click writer shares the one write lock with the gateway's own writes (console saves,
WeCom callbacks), so it lets them go first (turns.py), and once a transaction of its has
held the lock past half the busy timeout (a saturated CPU), it writes its batches in
smaller transactions until the pace is back.

Every call waits at most ``timeout`` seconds (``storage.timeout_seconds``), for a lock held
by another process as for a disk that stopped answering: then it fails as
StoreUnavailable. A thread can't be stopped, so one stuck on a disk finishes its statement
on its own; the calls queued behind it fail at their own deadlines meanwhile. Opening the
file (migrations) has no deadline, nor have the rare calls over a whole history (a
visitor forgotten, a merchant's rollups exported or imported, secrets resealed), as on
PostgreSQL: the writes among them still fail when the lock stays taken ``busy_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, replace
from pathlib import Path
from typing import Any, TypeVar

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
from .migrations import SKETCH_BACKFILL, SQLITE_MIGRATIONS
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
    KEY_COLUMNS,
    ClickOrigin,
    RollupDelta,
    RollupKey,
    SketchKey,
    delta_rows,
    fold_statement,
    reattributed_deltas,
    rollup_deltas,
    sketch_cells,
)
from .sealing import (
    needs_reseal,
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
from .turns import WriteTurns

__all__ = ["SQLiteStore"]

log = structlog.get_logger("linkloop.store")

T = TypeVar("T")
R = TypeVar("R", Click, Event)

_CREDENTIAL_COLUMNS = "merchant_id, platform, app_id, secret, updated_at"
_MINTED_COLUMNS = ("merchant_id, code, kind, fingerprint, value, image, expires_at, minted_at, "
                   "attempts, due_at, error")
_USER_COLUMNS = ("email, merchant_id, role, password_hash, created_at, failed_logins, "
                 "locked_until, last_login_at, sessions_after")
#: Rows per multi-row statement. Every such statement has exactly this many rows (a short
#: last chunk is padded, or written row by row), so its text repeats and the sqlite3
#: module's statement cache prepares it once: parsing a new statement of thousands of
#: parameters for every batch took more time than running it. 50 rows are still few
#: steps per batch, and every step hands the GIL back (when the writer is a thread).
_ROWS = 50
#: Rows deleted per write transaction when pruning: short enough that the click writer
#: barely waits for the lock.
_PRUNE_PAGE = 2000
#: How often each process reads the log of changed links (SQLite can't notify).
_LINK_POLL_SECONDS = 0.5
#: The longest a batch of clicks should hold the write lock at a stretch, as a share of
#: the busy timeout: a console save or a WeCom callback that begins waiting while the
#: click writer holds it gets it with half its time left. A batch is cut in several
#: transactions only once one has held it longer: on one saturated CPU, where the writer
#: gets a tenth of it and 20,000 clicks took 8 s. Not always, and not shorter: every
#: transaction reads and writes the sketches and rollup rows of the products it touches,
#: so a batch cut in parts of 8,000 cost 1.7 times the CPU per click (bench/record.py,
#: 10,000 products).
_LONGEST_HOLD = 0.5
#: The fewest clicks a transaction of a batch takes, however slow. A smaller one's time
#: is mostly a transaction's own cost, and says nothing of the pace.
_FEWEST_ROWS = 500




def _product(row: Sequence[Any]) -> Product:
    return Product(
        id=row[0], merchant_id=row[1], code=row[2], title=row[3], targets=json.loads(row[4]),
        image_url=row[5], price=row[6], status=row[7], created_at=row[8], updated_at=row[9],
        valid_from=row[10], valid_until=row[11],
    )


def _merchant(row: Sequence[Any]) -> Merchant:
    return Merchant(row[0], row[1], tuple(json.loads(row[2])), row[3])


def _insert_new(conn: sqlite3.Connection, table: str, columns: tuple[str, ...],
                rows: Sequence[R], values: Callable[[R], tuple[Any, ...]]) -> list[R]:
    """Insert rows whose id the table lacks; return those rows (the first of a repeated id).

    Asks which ids exist (normally none) and inserts the rest, with no RETURNING: every
    row a statement hands back is another sqlite3_step.
    """
    by_id: dict[str, R] = {}
    for row in rows:
        by_id.setdefault(row.id, row)
    for (found,) in _select_in(conn, f"SELECT id FROM {table} WHERE id IN", list(by_id)):
        by_id.pop(found, None)
    fresh = list(by_id.values())
    _insert_many(conn, f"INSERT INTO {table} ({', '.join(columns)}) VALUES", len(columns),
                 [values(row) for row in fresh])
    return fresh


def _part_rows(limit: int | None, rows: int, held: float, longest: float) -> int | None:
    """The rows a batch's transaction may take (None: a whole batch), after one of
    ``rows`` rows held the lock ``held`` seconds while at most ``limit`` were allowed:
    cut to what fits in ``longest`` at that pace once one held it longer; grown to that
    pace again only by a full part that held it less than half as long (a smaller part's
    time is more a transaction's own cost, and would tell a slower pace than the true)."""
    if rows < _FEWEST_ROWS:
        return limit
    fits = int(rows * longest / max(held, 1e-6))
    if held > longest:
        return max(_FEWEST_ROWS, fits)
    if limit is not None and rows >= limit and held < longest / 2:
        return max(limit, fits)
    return limit


@contextlib.contextmanager
def _rolled_back_on_error(conn: sqlite3.Connection) -> Iterator[None]:
    """Whatever fails (a statement, COMMIT itself, a look at the turns), the connection is
    left outside any transaction, never holding the write lock."""
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already
            conn.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def _read_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """Several reads from one snapshot of the database (WAL: taken at the first read).
    Ended with ROLLBACK (nothing was written), which can't fail for want of a lock, so
    the connection is never left inside a transaction."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _padded(items: Sequence[T]) -> list[list[T]]:
    """``items`` in chunks of exactly ``_ROWS``, the last one padded with its last item:
    for lookups, where a repeated value changes nothing."""
    chunks = [list(items[i:i + _ROWS]) for i in range(0, len(items), _ROWS)]
    if chunks:
        chunks[-1] += [chunks[-1][-1]] * (_ROWS - len(chunks[-1]))
    return chunks


def forget_in_sketches(conn: sqlite3.Connection, visitor: str, scope: str,
                       args: tuple[Any, ...]) -> list[tuple[str, str]]:
    """Take the visitor out of the sketch cells of their clicks (gateway/store/forget.py),
    before their clicks are deleted; (merchant, what became of the cell) per cell."""
    rows = conn.execute(f"{VISITOR_CLICKS.format('?')} {scope}", (visitor, *args)).fetchall()
    # Exact cells holding the hash, those of pruned days too (a scan: a rare request).
    exact = conn.execute(
        "SELECT merchant_id, kind, period, product_id, platform, channel FROM "
        f"visitor_sketches WHERE substr(sketch, 1, 1) = x'01' AND instr(sketch, ?) > 0 "
        f"{scope}", (hash_bytes(visitor), *args)).fetchall()
    outcomes: list[tuple[str, str]] = []
    where = "merchant_id = ? AND kind = ? AND period = ? AND product_id = ? " \
            "AND platform = ? AND channel = ?"
    for key in dict.fromkeys([*visitor_cells(rows), *(tuple(r) for r in exact)]):
        found = conn.execute(f"SELECT sketch FROM visitor_sketches WHERE {where}",
                             key).fetchone()
        if found is None:
            continue
        raw, rolled = None, None
        if needs_raw(found[0]):
            raw_sql, rolled_sql, cell_args = cell_queries(key, lambda _n: "?")
            raw = conn.execute(raw_sql, cell_args).fetchall()
            rolled = conn.execute(rolled_sql, cell_args).fetchone()[0]
        outcome, sketch = cleaned_sketch(found[0], visitor, raw, rolled)
        if sketch is not None:
            conn.execute(f"UPDATE visitor_sketches SET sketch = ? WHERE {where}",
                         (sketch, *key))
        outcomes.append((key[0], outcome))
    return outcomes


def _select_in(conn: sqlite3.Connection, head: str, values: Sequence[Any]) -> list[Any]:
    """Rows of ``head (?, ?, ...)`` over all ``values``, ``_ROWS`` at a time."""
    sql = f"{head} ({', '.join('?' * _ROWS)})"
    return [row for chunk in _padded(values) for row in conn.execute(sql, chunk)]


def _insert_many(conn: sqlite3.Connection, head: str, width: int,
                 rows: Sequence[tuple[Any, ...]], tail: str = "") -> None:
    """``head VALUES (...), (...) tail`` for all rows: ``_ROWS`` rows per statement, and
    the rows left over one by one (an insert can't be padded)."""
    one = "(" + ", ".join("?" * width) + ")"
    whole = len(rows) - len(rows) % _ROWS
    if whole:
        conn.executemany(f"{head} {', '.join([one] * _ROWS)} {tail}",
                         (list(itertools.chain.from_iterable(rows[i:i + _ROWS]))
                          for i in range(0, whole, _ROWS)))
    if whole < len(rows):
        conn.executemany(f"{head} {one} {tail}", rows[whole:])


_SKETCH_KEY = ("merchant_id", "kind", "period", "product_id", "platform", "channel")


def _add_to_sketches(conn: sqlite3.Connection, cells: Mapping[SketchKey, Any],
                     merge: Callable[[bytes | None, Any], bytes] = add_hashes) -> None:
    """Add each cell's new visitor hashes to its stored sketch (made when missing); with
    ``merge=merge_sketches``, each cell's sketch."""
    if not cells:
        return
    stored: dict[SketchKey, bytes] = {}
    # A join, not a row-value IN: SQLite looks each VALUES row up by the primary key.
    lookup = (f"SELECT {', '.join('s.' + c for c in _SKETCH_KEY)}, s.sketch FROM "
              f"(VALUES {', '.join(['(?, ?, ?, ?, ?, ?)'] * _ROWS)}) AS v "
              "JOIN visitor_sketches AS s ON s.merchant_id = v.column1 AND s.kind = v.column2 "
              "AND s.period = v.column3 AND s.product_id = v.column4 "
              "AND s.platform = v.column5 AND s.channel = v.column6")
    for chunk in _padded(list(cells)):
        for row in conn.execute(lookup, [v for key in chunk for v in key]):
            stored[tuple(row[:6])] = row[6]
    _insert_many(
        conn, f"INSERT INTO visitor_sketches ({', '.join(_SKETCH_KEY)}, sketch) VALUES", 7,
        [(*key, merge(stored.get(key), hashes)) for key, hashes in cells.items()],
        f"ON CONFLICT ({', '.join(_SKETCH_KEY)}) DO UPDATE SET sketch = excluded.sketch")


def _set_visitors_aside(conn: sqlite3.Connection, clicks: Sequence[Click]) -> None:
    """Append the human clicks' visitors to pending_visitors (gateway/store/pending.py)."""
    _insert_many(conn, f"INSERT INTO pending_visitors ({PENDING_COLUMNS}) VALUES", 6,
                 aside_rows(clicks))


def _set_counts_aside(conn: sqlite3.Connection, deltas: Mapping[RollupKey, RollupDelta],
                      ) -> None:
    """Append per-day increments to pending_counts (gateway/store/pending.py)."""
    _insert_many(conn, f"INSERT INTO pending_counts ({PENDING_COUNT_COLUMNS}) VALUES",
                 len(KEY_COLUMNS["rollups"]) + len(COUNTERS), delta_rows(deltas))


#: Each pending table's rows, from its rowids: rows are appended and folded oldest first,
#: so they are one unbroken run, and each end is one look-up (a lone min() or max() is;
#: both in one query are a scan).
_PENDING_RUN = ("coalesce((SELECT max(rowid) FROM {0}) - (SELECT min(rowid) FROM {0}) + 1, "
                "0)")
_PENDING_ROWS = ("SELECT max(" + ", ".join(_PENDING_RUN.format(table) for table in (
    "pending_visitors", "pending_counts")) + ")")


def _pending_rows(conn: sqlite3.Connection) -> int:
    """Rows pending in the fuller of the two tables (``FoldSchedule`` counts those)."""
    count: int = conn.execute(_PENDING_ROWS).fetchone()[0]
    return count


def _oldest(table: str, limit: int | None) -> tuple[str, tuple[int, ...]]:
    """The WHERE clause and its arguments of ``table``'s oldest ``limit`` rows (None: all)."""
    if limit is None:
        return "", ()
    return f"WHERE rowid < (SELECT min(rowid) FROM {table}) + ?", (limit,)


def _fold_visitors(conn: sqlite3.Connection, limit: int | None) -> int:
    """Fold the oldest ``limit`` pending visitors (None: all) into the sketches, in the
    caller's transaction; how many it folded."""
    where, args = _oldest("pending_visitors", limit)
    rows = conn.execute(f"SELECT {PENDING_COLUMNS} FROM pending_visitors {where}",
                        args).fetchall()
    _add_to_sketches(conn, folded_cells(rows))
    conn.execute(f"DELETE FROM pending_visitors {where}", args)
    return len(rows)


def _fold_counts(conn: sqlite3.Connection, limit: int | None) -> int:
    """Fold the oldest ``limit`` pending counts (None: all) into every counter table, in the
    caller's transaction; how many rows it folded."""
    where, args = _oldest("pending_counts", limit)
    for table in KEY_COLUMNS:
        conn.execute(fold_statement(table, f"(SELECT * FROM pending_counts {where})"), args)
    folded: int = conn.execute(f"DELETE FROM pending_counts {where}", args).rowcount
    return folded


def _fold_pending(conn: sqlite3.Connection, limit: int | None = None) -> int:
    """Fold the oldest ``limit`` rows (None: all) of each pending table, in the caller's
    transaction; the most it folded of one."""
    return max(_fold_visitors(conn, limit), _fold_counts(conn, limit))


class SQLiteStore(Store):
    def __init__(self, path: Path, busy_timeout: float = 10.0,
                 timeout: float | None = None, secrets: SecretBox | None = None,
                 fold_visitors: int = 50_000) -> None:
        self.path = path
        #: When the click writer folds the visitors set aside into the sketches.
        self._fold_schedule = FoldSchedule(fold_visitors)
        #: Visitors per transaction of a fold (None: all at once), as ``_batch_rows``.
        self._fold_rows: int | None = None
        self.secrets = secrets or SecretBox.ephemeral_box()
        self.busy_timeout = busy_timeout
        self.timeout = busy_timeout if timeout is None else timeout
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        # Reports on a thread and connection of their own: a share link whose code missed
        # the cache, or /readyz, never waits behind a report merging thousands of cells.
        self._reporter = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reports")
        self._write_conn: sqlite3.Connection | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._report_conn: sqlite3.Connection | None = None
        self._turns: WriteTurns | None = None
        #: Clicks per transaction of a batch (None: a batch in one), from the last one's pace.
        self._batch_rows: int | None = None
        self._links_seen = 0

    # --- lifecycle ---------------------------------------------------------------------------
    @classmethod
    async def open(cls, path: Path, busy_timeout: float = 10.0,
                   timeout_seconds: float | None = None,
                   secrets: SecretBox | None = None,
                   fold_visitors: int = 50_000) -> SQLiteStore:
        """Open (creating and migrating) the file; ``busy_timeout``: seconds a statement
        waits on a lock; ``timeout_seconds``: seconds a call waits in all (default:
        busy_timeout); ``secrets``: the box sealing stored secrets (default: a key that
        dies with this store, for tests and tools that never store secrets to keep);
        ``fold_visitors``: see ``record``."""
        store = cls(path, busy_timeout, timeout_seconds, secrets, fold_visitors)
        try:
            await store._run(store._writer, store._open_writer, deadline=False)
            if not store.secrets.ephemeral:
                # Secrets stored by a version before sealing are sealed now, once.
                await store._run(store._writer,
                                 functools.partial(store._reseal, only_plain=True),
                                 deadline=False)
            await store._run(store._reader, store._open_reader, deadline=False)
            await store._run(store._reporter, store._open_reporter, deadline=False)
            # Where the log of changed links ends now: watch_links starts here, so a change
            # made while the gateway warmed its link cache is not missed.
            store._links_seen = await store._read(lambda: store._rconn.execute(
                "SELECT coalesce(max(seq), 0) FROM link_changes").fetchone()[0])
        except BaseException:
            await store.close()  # no connection, file or thread left behind
            raise
        return store

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=self.busy_timeout)
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _open_writer(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        # Checkpoint every ~40 MB of WAL rather than 4 MB: hot pages (today's rollups) are
        # copied back once per checkpoint, however often they changed in between.
        conn.execute("PRAGMA wal_autocheckpoint = 10000")
        conn.execute("PRAGMA cache_size = -65536")
        self._write_conn = conn
        self._turns = WriteTurns(self.path)
        self._migrate(conn)

    def _open_reader(self) -> None:
        self._read_conn = self._connect()

    def _open_reporter(self) -> None:
        self._report_conn = self._connect()

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                     "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for version, script in SQLITE_MIGRATIONS:
            if version in done:
                continue
            conn.execute("BEGIN IMMEDIATE")
            # Processes opening one file at once (serve --workers) all saw it missing; the
            # first to get the write lock applies it, the others find it done here.
            if conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?",
                            (version,)).fetchone():
                conn.execute("ROLLBACK")
                continue
            try:
                for statement in script.split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
                if version == SKETCH_BACKFILL["sqlite"]:
                    SQLiteStore._backfill_sketches(conn)
                conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, time.time()))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @staticmethod
    def _backfill_sketches(conn: sqlite3.Connection) -> None:
        """Visitor sketches of every click stored before they existed, a page at a time."""
        after = ""
        while True:
            rows = conn.execute(f"SELECT {CLICK_COLUMNS} FROM clicks WHERE id > ? "
                                "ORDER BY id LIMIT 5000", (after,)).fetchall()
            if not rows:
                return
            _add_to_sketches(conn, sketch_cells(click_row(r) for r in rows))
            after = rows[-1][0]

    async def close(self) -> None:
        def close_write() -> None:
            if self._write_conn is not None:
                self._write_conn.close()
            if self._turns is not None:
                self._turns.close()
                self._turns = None

        def close_read() -> None:
            if self._read_conn is not None:
                self._read_conn.close()

        def close_reports() -> None:
            if self._report_conn is not None:
                self._report_conn.close()

        # After whatever is queued, however long it takes: nothing may be cut off.
        await self._run(self._writer, close_write, deadline=False)
        await self._run(self._reader, close_read, deadline=False)
        await self._run(self._reporter, close_reports, deadline=False)
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        self._reporter.shutdown(wait=True)

    async def ping(self) -> None:
        await self._read(lambda: self._rconn.execute("SELECT 1").fetchone())

    # --- plumbing ----------------------------------------------------------------------------
    @property
    def _wconn(self) -> sqlite3.Connection:
        assert self._write_conn is not None, "store is not open"
        return self._write_conn

    @property
    def _rconn(self) -> sqlite3.Connection:
        assert self._read_conn is not None, "store is not open"
        return self._read_conn

    async def _run(self, pool: ThreadPoolExecutor, fn: Callable[[], T], *,
                   deadline: bool = True) -> T:
        done = asyncio.get_running_loop().run_in_executor(pool, fn)
        try:
            if not deadline:
                return await done
            # Not wait_for: on Python 3.11 it swallows a cancellation that arrives as the
            # statement finishes, and a cancelled link watcher then ran on forever.
            async with asyncio.timeout(self.timeout):
                return await done
        except sqlite3.OperationalError as exc:
            # Locked, disk full, file gone: the caller may retry later.
            raise StoreUnavailable(str(exc)) from exc
        except TimeoutError:
            raise StoreUnavailable(
                f"SQLite did not answer within {self.timeout:g} s") from None

    async def _read(self, fn: Callable[[], T], *, deadline: bool = True) -> T:
        return await self._run(self._reader, fn, deadline=deadline)

    async def _report(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on the reports' own thread and connection."""
        assert self._report_conn is not None, "store is not open"
        return await self._run(self._reporter, functools.partial(fn, self._report_conn))

    async def _write(self, fn: Callable[[], T], *, deadline: bool = True) -> T:
        return await self._run(self._writer, fn, deadline=deadline)

    @property
    def _turn_limit(self) -> float:
        """The longest a write waits for its turn (turns.py) before it goes on without:
        half its call's time or of the busy timeout, whichever is less. (A batch of clicks
        may then wait up to the busy timeout more for the lock itself: in the gateway's
        own process its call may fail meanwhile, and the batch is journaled and stored
        again, once.)"""
        return min(self.busy_timeout, self.timeout) / 2

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> Callable[[], T]:
        """``fn`` in a write transaction that goes before the click writer's next one
        (turns.py): the click writer re-takes the lock within a millisecond of each
        commit, and a write that waited in SQLite's busy handler alone kept missing it."""
        def run() -> T:
            assert self._turns is not None, "store is not open"
            with self._turns.waiting(self._turn_limit):
                conn = self._wconn
                conn.execute("BEGIN IMMEDIATE")
                with _rolled_back_on_error(conn):
                    result = fn(conn)
                    conn.execute("COMMIT")
                return result

        return run

    # --- merchants ---------------------------------------------------------------------------
    async def create_merchant(self, merchant: Merchant) -> Merchant:
        created = Merchant(merchant.id, merchant.name, merchant.domains,
                           merchant.created_at or time.time())

        def insert(conn: sqlite3.Connection) -> Merchant:
            try:
                conn.execute(
                    "INSERT INTO merchants (id, name, domains, created_at) VALUES (?, ?, ?, ?)",
                    (created.id, created.name, json.dumps(list(created.domains)),
                     created.created_at),
                )
            except sqlite3.IntegrityError:
                raise MerchantExists(merchant.id) from None
            return created

        return await self._write(self._transaction(insert))

    async def get_merchant(self, merchant_id: str) -> Merchant | None:
        def read() -> Merchant | None:
            row = self._rconn.execute(
                "SELECT id, name, domains, created_at FROM merchants WHERE id = ?", (merchant_id,)
            ).fetchone()
            return _merchant(row) if row else None

        return await self._read(read)

    async def list_merchants(self) -> Sequence[Merchant]:
        def read() -> list[Merchant]:
            rows = self._rconn.execute(
                "SELECT id, name, domains, created_at FROM merchants ORDER BY id").fetchall()
            return [_merchant(r) for r in rows]

        return await self._read(read)

    async def update_merchant(self, merchant_id: str, *, name: str | None = None,
                              domains: Sequence[str] | None = None) -> Merchant | None:
        def update(conn: sqlite3.Connection) -> Merchant | None:
            if name is not None:
                conn.execute("UPDATE merchants SET name = ? WHERE id = ?", (name, merchant_id))
            if domains is not None:
                conn.execute("UPDATE merchants SET domains = ? WHERE id = ?",
                             (json.dumps(list(domains)), merchant_id))
            row = conn.execute("SELECT id, name, domains, created_at FROM merchants "
                               "WHERE id = ?", (merchant_id,)).fetchone()
            return _merchant(row) if row else None

        return await self._write(self._transaction(update))

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

        def insert(conn: sqlite3.Connection) -> list[Product]:
            made = []
            for new in products:
                try:
                    cur = conn.execute(
                        "INSERT INTO products (merchant_id, code, title, targets, image_url, "
                        "price, status, created_at, updated_at, valid_from, valid_until) "
                        "VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?)",
                        (merchant_id, new.code, new.title,
                         json.dumps(new.targets, ensure_ascii=False), new.image_url, new.price,
                         now, now, new.valid_from, new.valid_until),
                    )
                except sqlite3.IntegrityError as exc:
                    if "code" in str(exc):
                        raise CodeTaken(new.code) from None
                    raise
                assert cur.lastrowid is not None
                made.append(Product(
                    id=cur.lastrowid, merchant_id=merchant_id, code=new.code, title=new.title,
                    targets=new.targets, image_url=new.image_url, price=new.price,
                    created_at=now, updated_at=now, valid_from=new.valid_from,
                    valid_until=new.valid_until))
            return made

        return await self._write(self._transaction(insert))

    async def get_product(self, merchant_id: str, product_id: int) -> Product | None:
        def read() -> Product | None:
            row = self._rconn.execute(
                f"SELECT {PRODUCT_COLUMNS} FROM products WHERE merchant_id = ? AND id = ?",
                (merchant_id, product_id),
            ).fetchone()
            return _product(row) if row else None

        return await self._read(read)

    async def list_products(
        self, merchant_id: str, *, limit: int, after_id: int = 0, search: str | None = None,
        state: ProductState | None = None, now: float = 0.0,
    ) -> Sequence[Product]:
        query, params = product_list_query(merchant_id, limit=limit, after_id=after_id,
                                           search=search, state=state, now=now, mark="?")

        def read() -> list[Product]:
            return [_product(r) for r in self._rconn.execute(query, params).fetchall()]

        return await self._read(read)

    async def update_product(
        self, merchant_id: str, product_id: int, changes: Mapping[str, Any],
    ) -> Product | None:
        assert set(changes) <= PRODUCT_CHANGES, (
            f"unexpected product changes: {set(changes) - PRODUCT_CHANGES}")

        def update(conn: sqlite3.Connection) -> Product | None:
            values = {k: json.dumps(v, ensure_ascii=False) if k == "targets" else v
                      for k, v in changes.items()}
            values["updated_at"] = time.time()
            assignments = ", ".join(f"{k} = ?" for k in values)
            conn.execute(
                f"UPDATE products SET {assignments} WHERE merchant_id = ? AND id = ?",
                (*values.values(), merchant_id, product_id),
            )
            row = conn.execute(
                f"SELECT {PRODUCT_COLUMNS} FROM products WHERE merchant_id = ? AND id = ?",
                (merchant_id, product_id),
            ).fetchone()
            return _product(row) if row else None

        return await self._write(self._transaction(update))

    async def recent_links(self, limit: int) -> Sequence[Product]:
        def read() -> list[Product]:
            rows = self._rconn.execute(
                f"SELECT {PRODUCT_COLUMNS} FROM products ORDER BY updated_at DESC LIMIT ?",
                (limit,)).fetchall()
            return [_product(r) for r in rows]

        return await self._read(read)

    async def link(self, code: str) -> Product | None:
        def read() -> Product | None:
            row = self._rconn.execute(
                f"SELECT {PRODUCT_COLUMNS} FROM products WHERE code = ?", (code,)
            ).fetchone()
            return _product(row) if row else None

        return await self._read(read)

    async def links(self, codes: Sequence[str]) -> dict[str, Product]:
        def read() -> dict[str, Product]:
            rows = _select_in(self._rconn,
                              f"SELECT {PRODUCT_COLUMNS} FROM products WHERE code IN", codes)
            return {row[2]: _product(row) for row in rows}

        return await self._read(read) if codes else {}

    async def watch_links(self, forget: Callable[[str | None], None]) -> None:
        """Read the log of changed links (migration 5's triggers fill it) every
        ``_LINK_POLL_SECONDS``, and forget each code another process, or this one, changed.
        """
        def since(after: int) -> tuple[list[tuple[int, str]], bool]:
            conn = self._rconn
            rows = conn.execute("SELECT seq, code FROM link_changes WHERE seq > ? ORDER BY seq",
                                (after,)).fetchall()
            # More changes than the log keeps since the last look: some may be gone.
            missed = bool(rows) and rows[0][0] > after + 1 and conn.execute(
                "SELECT min(seq) FROM link_changes").fetchone()[0] > after + 1
            return rows, missed

        while True:
            await asyncio.sleep(_LINK_POLL_SECONDS)
            try:
                rows, missed = await self._read(functools.partial(since, self._links_seen))
            except Exception as exc:  # never stop listening: the TTL alone is a minute
                log.warning("links.watch_failed", error=str(exc) or type(exc).__name__)
                continue  # the log keeps the changes: the next look finds them
            if missed:
                forget(None)
            for seq, code in rows:
                forget(code)
                self._links_seen = seq

    # --- channels ----------------------------------------------------------------------------
    async def create_channel(self, channel: Channel) -> Channel:
        made = Channel(channel.merchant_id, channel.name, channel.label,
                       channel.created_at or time.time())

        def insert(conn: sqlite3.Connection) -> Channel:
            try:
                conn.execute("INSERT INTO channels (merchant_id, name, label, created_at) "
                             "VALUES (?, ?, ?, ?)",
                             (made.merchant_id, made.name, made.label, made.created_at))
            except sqlite3.IntegrityError as exc:
                if "FOREIGN KEY" in str(exc):
                    raise StoreError(f"no merchant {made.merchant_id!r}") from None
                raise ChannelExists(made.name) from None
            return made

        return await self._write(self._transaction(insert))

    async def list_channels(self, merchant_id: str) -> Sequence[Channel]:
        def read() -> list[Channel]:
            rows = self._rconn.execute(
                "SELECT merchant_id, name, label, created_at FROM channels "
                "WHERE merchant_id = ? ORDER BY name", (merchant_id,)).fetchall()
            return [Channel(*r) for r in rows]

        return await self._read(read)

    async def delete_channel(self, merchant_id: str, name: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM channels WHERE merchant_id = ? AND name = ?",
                                (merchant_id, name)).rowcount > 0

        return await self._write(self._transaction(delete))

    # --- clicks, events, rollups -------------------------------------------------------------
    async def record(self, clicks: Sequence[Click], events: Sequence[Event]) -> None:
        """Store a batch, after the short writes that wait, in one transaction or, after
        one held the lock too long, in parts sized at the last one's pace (``_part_rows``).
        A batch cut in parts is safe: rows already stored are skipped, and an event stored
        before its click is attributed when the click comes.

        The batch's visitors and per-day counts are set aside (pending_visitors,
        pending_counts), and folded into the sketches and the counter tables in a
        transaction of their own once ``fold_visitors`` rows have gathered in either, or a
        minute after the last fold (``FOLD_AFTER_SECONDS``)."""
        start, total = 0, max(len(clicks), len(events))
        while start < total:
            end = start + (self._batch_rows or total)
            part = clicks[start:end], events[start:end]
            held = await self._write(functools.partial(self._record_part, *part))
            self._batch_rows = _part_rows(self._batch_rows, max(map(len, part)), held,
                                          self.busy_timeout * _LONGEST_HOLD)
            start = end
        if self._fold_schedule.due():
            try:
                await self._fold()
            except StoreUnavailable as exc:
                # The batch is stored, and reports count what it set aside where it is:
                # the next batch folds it.
                log.warning("store.fold_failed", pending=self._fold_schedule.pending,
                            error=str(exc))

    async def _fold(self) -> None:
        """Fold the rows pending now (not those other writers add meanwhile): in one
        transaction, or in parts sized as a batch's are once one held the lock too long."""
        left = self._fold_schedule.pending
        self._fold_schedule.folding()
        while left > 0:
            folded, held = await self._write(functools.partial(self._fold_part,
                                                               self._fold_rows))
            if not folded:
                return  # another writer folded them
            self._fold_rows = _part_rows(self._fold_rows, folded, held,
                                         self.busy_timeout * _LONGEST_HOLD)
            left -= folded

    def _record_part(self, clicks: Sequence[Click], events: Sequence[Event]) -> float:
        """One transaction of a batch, begun once no short write waits; how long it held
        the lock."""
        conn = self._wconn
        with _rolled_back_on_error(conn):
            self._begin_after_waiting_writes(conn, self._turn_limit)
            began = time.monotonic()
            self._fold_schedule.pending = self._record(conn, clicks, events)
            conn.execute("COMMIT")
        return time.monotonic() - began

    def _fold_part(self, limit: int | None) -> tuple[int, float]:
        """The oldest ``limit`` rows (None: all) of each pending table folded, after the
        short writes that wait; the most of one, and how long it held the lock."""
        conn = self._wconn
        with _rolled_back_on_error(conn):
            self._begin_after_waiting_writes(conn, self._turn_limit)
            began = time.monotonic()
            folded = _fold_pending(conn, limit)
            left = _pending_rows(conn)
            conn.execute("COMMIT")
        self._fold_schedule.pending = left
        return folded, time.monotonic() - began

    def _begin_after_waiting_writes(self, conn: sqlite3.Connection, limit: float) -> None:
        """BEGIN IMMEDIATE, letting the short writes that wait go first: those waiting
        before, and those that began waiting while this one waited for the lock (another
        worker's click writer held it). After ``limit``, begin all the same."""
        assert self._turns is not None, "store is not open"
        deadline = time.monotonic() + limit
        while True:
            self._turns.let_waiting_writes_in(max(0.0, deadline - time.monotonic()))
            conn.execute("BEGIN IMMEDIATE")
            if time.monotonic() >= deadline or not self._turns.waiting_writes():
                return
            conn.execute("ROLLBACK")  # the lock is theirs first

    @staticmethod
    def _record(conn: sqlite3.Connection, clicks: Sequence[Click], events: Sequence[Event],
                ) -> int:
        """Store the rows in the caller's transaction; how many rows are now pending."""
        # Rows a previous, unclear attempt already stored are skipped: replay never
        # double-counts.
        new_clicks = _insert_new(
            conn, "clicks", ("id", "merchant_id", "product_id", "ts", "day", "platform",
                             "source", "channel", "visitor", "ip_hash", "bot", "mobile", "os",
                             "outcome"),
            clicks,
            lambda c: (c.id, c.merchant_id, c.product_id, c.ts, c.day, c.platform, c.source,
                       c.channel, c.visitor, c.ip_hash, int(c.bot), int(c.mobile), c.os,
                       c.outcome))
        # Each event counts under its click: the clicks of this batch are already in, so one
        # lookup finds old and new ones alike. An event whose click is not stored yet is
        # kept as unattributed until it is.
        origins = SQLiteStore._origins(conn, {e.click_id for e in events if e.click_id})
        new_events = _insert_new(
            conn, "events", ("id", "merchant_id", "product_id", "click_id", "target", "kind",
                             "platform", "ts", "day", "attributed"),
            events,
            lambda e: (e.id, e.merchant_id, e.product_id, e.click_id, e.target, e.kind,
                       e.platform, e.ts, e.day,
                       int(not e.click_id or (e.merchant_id, e.click_id) in origins)))
        deltas = rollup_deltas(new_clicks, new_events, origins)
        moved = SQLiteStore._reattribute(conn, new_clicks)
        for key, delta in reattributed_deltas(moved).items():
            deltas.setdefault(key, RollupDelta()).add(delta)
        _set_counts_aside(conn, deltas)
        _set_visitors_aside(conn, new_clicks)
        return _pending_rows(conn)

    @staticmethod
    def _origins(conn: sqlite3.Connection, click_ids: set[str],
                 ) -> dict[tuple[str, str], ClickOrigin]:
        return {(r[0], r[1]): ClickOrigin(r[2], r[3], r[4] or "") for r in _select_in(
            conn, "SELECT merchant_id, id, product_id, platform, channel FROM clicks WHERE id IN",
            sorted(click_ids))}

    @staticmethod
    def _reattribute(conn: sqlite3.Connection, new_clicks: Sequence[Click],
                     ) -> list[tuple[Event, ClickOrigin]]:
        """Events stored before these clicks (a replay out of order), now theirs."""
        by_id = {(c.merchant_id, c.id): c for c in new_clicks}
        rows = _select_in(conn, "SELECT id, merchant_id, product_id, kind, platform, ts, day, "
                          "click_id, target FROM events WHERE attributed = 0 AND click_id IN",
                          sorted({c.id for c in new_clicks}))
        moved = []
        for row in dict.fromkeys(rows):
            click = by_id.get((row[1], row[7]))
            if click is not None:  # the same merchant's click, never another's
                moved.append((Event(*row), ClickOrigin(click.product_id, click.platform,
                                                       click.channel or "")))
        for chunk in _padded([event.id for event, _ in moved]):
            conn.execute(f"UPDATE events SET attributed = 1 WHERE id IN "
                         f"({', '.join('?' * _ROWS)})", chunk)
        return moved

    async def click_origin(self, merchant_id: str, click_id: str) -> tuple[int, str] | None:
        def read() -> tuple[int, str] | None:
            row = self._rconn.execute(
                "SELECT product_id, platform FROM clicks WHERE merchant_id = ? AND id = ?",
                (merchant_id, click_id)).fetchone()
            return (row[0], row[1]) if row else None

        return await self._read(read)

    # --- export ------------------------------------------------------------------------------
    async def schema_version(self) -> int:
        def read() -> int:
            return int(self._rconn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0])

        return await self._read(read)

    async def export_clicks(self, merchant_id: str, *, after: str, limit: int,
                            ) -> Sequence[Click]:
        def read() -> list[Click]:
            rows = self._rconn.execute(
                f"SELECT {CLICK_COLUMNS} FROM clicks "
                "WHERE merchant_id = ? AND id > ? ORDER BY id LIMIT ?",
                (merchant_id, after, limit)).fetchall()
            return [click_row(r) for r in rows]

        return await self._read(read)

    async def export_events(self, merchant_id: str, *, after: str, limit: int,
                            ) -> Sequence[Event]:
        def read() -> list[Event]:
            rows = self._rconn.execute(
                "SELECT id, merchant_id, product_id, kind, platform, ts, day, click_id, target "
                "FROM events WHERE merchant_id = ? AND id > ? ORDER BY id LIMIT ?",
                (merchant_id, after, limit)).fetchall()
            return [Event(id=r[0], merchant_id=r[1], product_id=r[2], kind=r[3], platform=r[4],
                      ts=r[5], day=r[6], click_id=r[7], target=r[8]) for r in rows]

        return await self._read(read)

    async def list_entry_ways(self, merchant_id: str) -> Sequence[EntryWay]:
        def read() -> list[EntryWay]:
            rows = self._rconn.execute(
                "SELECT merchant_id, platform, config_id, qr_code, state, created_at "
                "FROM entry_ways WHERE merchant_id = ? ORDER BY platform",
                (merchant_id,)).fetchall()
            return [EntryWay(*r) for r in rows]

        return await self._read(read)

    # --- platform app credentials ------------------------------------------------------------
    async def put_credentials(self, credentials: Credentials) -> Credentials:
        stored = Credentials(credentials.merchant_id, credentials.platform, credentials.app_id,
                             credentials.secret, time.time())

        sealed = seal_credential_secret(self.secrets, stored.merchant_id, stored.platform,
                                        stored.secret)

        def upsert(conn: sqlite3.Connection) -> Credentials:
            conn.execute(
                "INSERT INTO app_credentials (merchant_id, platform, app_id, secret, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (merchant_id, platform) DO UPDATE SET "
                "app_id = excluded.app_id, secret = excluded.secret, "
                "updated_at = excluded.updated_at",
                (stored.merchant_id, stored.platform, stored.app_id, sealed,
                 stored.updated_at))
            return stored

        return await self._write(self._transaction(upsert))

    async def get_credentials(self, merchant_id: str, platform: str) -> Credentials | None:
        def read() -> Credentials | None:
            row = self._rconn.execute(
                f"SELECT {_CREDENTIAL_COLUMNS} FROM app_credentials "
                "WHERE merchant_id = ? AND platform = ?", (merchant_id, platform)).fetchone()
            return self._credentials(row) if row else None

        return await self._read(read)

    async def list_credentials(self, merchant_id: str) -> Sequence[Credentials]:
        def read() -> list[Credentials]:
            rows = self._rconn.execute(
                f"SELECT {_CREDENTIAL_COLUMNS} FROM app_credentials WHERE merchant_id = ? "
                "ORDER BY platform", (merchant_id,)).fetchall()
            return [self._credentials(r) for r in rows]

        return await self._read(read)

    def _credentials(self, row: Sequence[Any]) -> Credentials:
        return Credentials(row[0], row[1], row[2],
                           open_credential_secret(self.secrets, row[0], row[1], row[3]), row[4])

    # --- minted links -------------------------------------------------------------------------
    async def put_minted(self, minted: MintedLink) -> None:
        def upsert(conn: sqlite3.Connection) -> None:
            # Only for a share code of the merchant's own (codes are one namespace).
            if conn.execute("SELECT 1 FROM products WHERE merchant_id = ? AND code = ?",
                            (minted.merchant_id, minted.code)).fetchone() is None:
                return
            conn.execute(
                f"INSERT OR REPLACE INTO minted_links ({_MINTED_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", astuple(minted))
            # Every process reads this log (watch_links) and drops the code's cached link,
            # minted links and all.
            conn.execute("INSERT INTO link_changes (code) VALUES (?)", (minted.code,))

        await self._write(self._transaction(upsert))

    async def minted(self, merchant_id: str, code: str) -> Sequence[MintedLink]:
        def read() -> list[MintedLink]:
            rows = self._rconn.execute(
                f"SELECT {_MINTED_COLUMNS} FROM minted_links WHERE merchant_id = ? AND code = ? "
                "ORDER BY kind", (merchant_id, code)).fetchall()
            return [MintedLink(*r) for r in rows]

        return await self._read(read)

    async def minted_values(self, codes: Sequence[str], now: float,
                            ) -> dict[str, dict[str, str]]:
        def read() -> dict[str, dict[str, str]]:
            found: dict[str, dict[str, str]] = {}
            for code, kind, value, expires_at in _select_in(
                    self._rconn, "SELECT code, kind, value, expires_at FROM minted_links "
                    "WHERE value IS NOT NULL AND code IN", codes):
                if not expires_at or expires_at > now:
                    found.setdefault(code, {})[kind] = value
            return found

        return await self._read(read) if codes else {}

    async def minted_image(self, code: str) -> tuple[str, bytes] | None:
        def read() -> tuple[str, bytes] | None:
            row = self._rconn.execute(
                "SELECT value, image FROM minted_links WHERE code = ? AND kind = 'wxacode' "
                "AND value IS NOT NULL AND image IS NOT NULL", (code,)).fetchone()
            return (row[0], bytes(row[1])) if row else None

        return await self._read(read)

    async def claim_due_mints(self, now: float, lease_until: float, limit: int,
                              ) -> Sequence[MintedLink]:
        columns = _MINTED_COLUMNS.replace("image", "NULL")

        def claim(conn: sqlite3.Connection) -> list[MintedLink]:
            rows = conn.execute(
                f"SELECT {columns} FROM minted_links WHERE due_at <= ? ORDER BY due_at LIMIT ?",
                (now, limit)).fetchall()
            conn.executemany("UPDATE minted_links SET due_at = ? WHERE code = ? AND kind = ?",
                             [(lease_until, r[1], r[2]) for r in rows])
            return [replace(MintedLink(*r), due_at=lease_until) for r in rows]

        return await self._write(self._transaction(claim))

    async def forget_minted(self, merchant_id: str, code: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM minted_links WHERE merchant_id = ? AND code = ?",
                         (merchant_id, code))
            conn.execute("INSERT INTO link_changes (code) VALUES (?)", (code,))

        await self._write(self._transaction(delete))

    # --- retention and privacy ---------------------------------------------------------------
    async def prune_raw(self, *, before_day: str, before_ts: float) -> dict[str, Any]:
        """Pages of old rows are found on the reader (a scan: clicks and events have no
        index by day, and one more index would cost every click a write) and deleted by
        key in short write transactions, so the click writer never waits long."""
        counts: dict[str, Any] = {}
        for table in ("clicks", "events"):
            # Keyset pages by id: the whole table is read once, however many pages.
            counts[table] = await self._delete_pages(
                f"SELECT id FROM {table} WHERE day < ? AND id > ? ORDER BY id LIMIT ?",
                (before_day, ""), f"DELETE FROM {table} WHERE id = ?")
        counts["visitors"] = 0
        merchants = await self._read(
            lambda: [r[0] for r in self._rconn.execute("SELECT id FROM merchants")])
        for merchant in merchants:
            # The primary key starts (merchant, day): each merchant's old days are a range.
            counts["visitors"] += await self._delete_pages(
                "SELECT merchant_id, day, visitor, product_id, platform FROM daily_visitors "
                "WHERE merchant_id = ? AND day < ? LIMIT ?", (merchant, before_day),
                "DELETE FROM daily_visitors WHERE merchant_id = ? AND day = ? AND visitor = ? "
                "AND product_id = ? AND platform = ?", keyset=False)

        def callbacks(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM wecom_inbox WHERE done = 1 AND received_at < ?",
                                (before_ts,)).rowcount

        counts["callbacks"] = await self._write(self._transaction(callbacks))
        return counts

    async def _delete_pages(self, select: str, args: tuple[Any, ...], delete: str, *,
                            keyset: bool = True) -> int:
        """Delete the rows ``select`` finds, ``_PRUNE_PAGE`` at a time, each page in a write
        transaction of its own. With ``keyset``, the last argument of ``select`` is where
        the next page starts (the last row's key); without, deleted rows simply stop
        matching."""
        deleted = 0
        while True:
            def read(args: tuple[Any, ...] = args) -> list[Any]:
                return self._rconn.execute(select, (*args, _PRUNE_PAGE)).fetchall()

            page = await self._read(read)
            if page:
                def drop(conn: sqlite3.Connection, rows: list[Any] = page) -> None:
                    conn.executemany(delete, rows)

                await self._write(self._transaction(drop))
                deleted += len(page)
            if len(page) < _PRUNE_PAGE:
                return deleted
            if keyset:
                args = (*args[:-1], page[-1][0])

    async def forget_visitor(self, visitor: str, merchant_id: str | None,
                             ) -> dict[str, dict[str, int]]:
        scope, args = ("AND merchant_id = ?", (merchant_id,)) if merchant_id else ("", ())

        def forget(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
            # What is still set aside is folded first: then the sketches are all there is
            # to clean, and the rollups hold every click the cleaning compares them with.
            _fold_pending(conn)
            # A scan of clicks (no index by visitor): rare, and in one write transaction,
            # so that no click of theirs slips in between the reads and the deletes.
            clicks = conn.execute(f"SELECT merchant_id, id FROM clicks WHERE visitor = ? "
                                  f"{scope}", (visitor, *args)).fetchall()
            # Their clicks' events, of the same merchant only: another merchant's event
            # naming one of these clicks (a state crossed between merchants) is theirs.
            events = [event for event in dict.fromkeys(_select_in(
                conn, "SELECT merchant_id, id FROM events WHERE click_id IN",
                [click_id for _merchant, click_id in clicks]))
                if merchant_id is None or event[0] == merchant_id]
            visits = conn.execute(f"SELECT merchant_id, count(*) FROM daily_visitors "
                                  f"WHERE visitor = ? {scope} GROUP BY merchant_id",
                                  (visitor, *args)).fetchall()
            sketches = forget_in_sketches(conn, visitor, scope, args)
            conn.executemany("DELETE FROM events WHERE id = ?", [(e[1],) for e in events])
            conn.execute(f"DELETE FROM daily_visitors WHERE visitor = ? {scope}",
                         (visitor, *args))
            conn.executemany("DELETE FROM clicks WHERE id = ?", [(c[1],) for c in clicks])
            return with_sketches(tally_forgotten(
                (c[0] for c in clicks), (e[0] for e in events), visits), sketches)

        # No call deadline (a lock still fails at the busy timeout): the scan of a big
        # table may take longer, and a forget reported failed would go on and commit.
        return await self._write(self._transaction(forget), deadline=False)

    async def export_rollups(self, merchant_id: str, *, before_day: str,
                             ) -> tuple[list[tuple[RollupKey, tuple[int, ...]]],
                                        list[tuple[SketchKey, bytes]]]:
        # What is set aside is folded first: the export carries the tables only. No call
        # deadline, as for the read below (a lock still fails at the busy timeout).
        await self._write(self._transaction(_fold_pending), deadline=False)

        def read() -> tuple[list[tuple[RollupKey, tuple[int, ...]]],
                            list[tuple[SketchKey, bytes]]]:
            rows = [((merchant_id, r[0], r[1], r[2], r[3]), tuple(r[4:]))
                    for r in self._rconn.execute(
                        f"SELECT product_id, day, platform, channel, {', '.join(COUNTERS)} "
                        "FROM rollups WHERE merchant_id = ? AND day < ? "
                        "ORDER BY day, product_id, platform, channel", (merchant_id, before_day))]
            # A month's period ('2026-06') sorts before its days: the month of the cutoff
            # comes along whole (a merge is a union, so its kept days can't count twice).
            sketches = [((merchant_id, *r[:5]), bytes(r[5])) for r in self._rconn.execute(
                "SELECT kind, period, product_id, platform, channel, sketch "
                "FROM visitor_sketches WHERE merchant_id = ? AND period < ? "
                "ORDER BY kind, period, product_id, platform, channel",
                (merchant_id, before_day))]
            return rows, sketches

        # No call deadline: a merchant's whole history may take longer to read.
        return await self._read(read, deadline=False)

    async def add_rollups(self, rows: Sequence[tuple[RollupKey, tuple[int, ...]]],
                          sketches: Sequence[tuple[SketchKey, bytes]] = ()) -> None:
        deltas = deltas_of(rows)

        def bump(conn: sqlite3.Connection) -> None:
            # Through pending_counts, as a batch's are, and folded at once: every pending
            # row, another batch's too (a fold adds them up, whoever folds them).
            _set_counts_aside(conn, deltas)
            _fold_counts(conn, None)
            _add_to_sketches(conn, dict(sketches), merge=merge_sketches)

        # No call deadline (a lock still fails at the busy timeout): a whole history may
        # take longer to write, and an import reported failed would go on and commit.
        await self._write(self._transaction(bump), deadline=False)

    # --- secrets at rest -----------------------------------------------------------------------
    async def reseal_secrets(self, *, only_plain: bool = False) -> dict[str, int]:
        # No call deadline, as for migrations: it rewrites every stored secret.
        return await self._write(functools.partial(self._reseal, only_plain=only_plain),
                                 deadline=False)

    def _reseal(self, *, only_plain: bool) -> dict[str, int]:
        """Seal every stored secret under the current key (``only_plain``: only those
        stored unsealed), in one transaction. Overwritten plain values are zeroed in the
        file (secure_delete) and the write-ahead log is emptied after, so no plain copy
        lingers on a free page."""
        box, conn = self.secrets, self._wconn
        if only_plain and not self._plain_secrets():
            # Every open asks: the common answer takes no write lock (a click writer
            # behind a spike would keep the opening process waiting).
            return {"entries": 0, "app_credentials": 0}
        # On for this transaction (some builds, Debian's among them, have it on always).
        secure_delete = conn.execute("PRAGMA secure_delete").fetchone()[0]
        conn.execute("PRAGMA secure_delete = ON")
        try:
            def reseal(conn: sqlite3.Connection) -> dict[str, int]:
                entries = resealed_entries(
                    box, [(merchant, json.loads(stored)) for merchant, stored in conn.execute(
                        "SELECT merchant_id, secrets FROM entries")], only_plain=only_plain)
                conn.executemany("UPDATE entries SET secrets = ? WHERE merchant_id = ?",
                                 [(json.dumps(sealed), merchant) for sealed, merchant in entries])
                credentials = resealed_credentials(box, conn.execute(
                    "SELECT merchant_id, platform, secret FROM app_credentials"),
                    only_plain=only_plain)
                conn.executemany("UPDATE app_credentials SET secret = ? "
                                 "WHERE merchant_id = ? AND platform = ?", credentials)
                return {"entries": len(entries), "app_credentials": len(credentials)}

            counts = self._transaction(reseal)()
            if any(counts.values()):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.execute(f"PRAGMA secure_delete = {int(secure_delete)}")
        return counts

    def _plain_secrets(self) -> bool:
        """Whether any secret is stored unsealed (read outside a transaction: no lock)."""
        conn = self._wconn
        entries = (json.loads(stored) for (stored,) in conn.execute("SELECT secrets FROM entries"))
        credentials = (stored for (stored,) in conn.execute("SELECT secret FROM app_credentials"))
        return any(needs_reseal(self.secrets, stored, only_plain=True)
                   for stored in itertools.chain(entries, credentials))

    # --- the WeCom entry point ---------------------------------------------------------------
    async def put_entry(self, entry: Entry) -> Entry:
        stored = Entry(entry.merchant_id, entry.kind, entry.config, entry.secrets, time.time())
        sealed = seal_entry_secrets(self.secrets, stored.merchant_id, stored.secrets)

        def upsert(conn: sqlite3.Connection) -> Entry:
            conn.execute(
                "INSERT INTO entries (merchant_id, kind, config, secrets, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (merchant_id) DO UPDATE SET "
                "kind = excluded.kind, config = excluded.config, secrets = excluded.secrets, "
                "updated_at = excluded.updated_at",
                (stored.merchant_id, stored.kind, json.dumps(stored.config),
                 json.dumps(sealed), stored.updated_at))
            conn.execute("DELETE FROM entry_ways WHERE merchant_id = ?", (stored.merchant_id,))
            return stored

        return await self._write(self._transaction(upsert))

    async def get_entry(self, merchant_id: str) -> Entry | None:
        def read() -> Entry | None:
            row = self._rconn.execute(
                "SELECT merchant_id, kind, config, secrets, updated_at FROM entries "
                "WHERE merchant_id = ?", (merchant_id,)).fetchone()
            if row is None:
                return None
            return Entry(row[0], row[1], json.loads(row[2]),
                         open_entry_secrets(self.secrets, row[0], json.loads(row[3])), row[4])

        return await self._read(read)

    async def get_entry_way(self, merchant_id: str, platform: str) -> EntryWay | None:
        def read() -> EntryWay | None:
            row = self._rconn.execute(
                "SELECT merchant_id, platform, config_id, qr_code, state, created_at "
                "FROM entry_ways WHERE merchant_id = ? AND platform = ?",
                (merchant_id, platform)).fetchone()
            return EntryWay(*row) if row else None

        return await self._read(read)

    async def put_entry_way(self, way: EntryWay) -> EntryWay:
        def insert(conn: sqlite3.Connection) -> EntryWay:
            conn.execute(
                "INSERT OR IGNORE INTO entry_ways (merchant_id, platform, config_id, qr_code, "
                "state, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (way.merchant_id, way.platform, way.config_id, way.qr_code, way.state,
                 way.created_at or time.time()))
            row = conn.execute(
                "SELECT merchant_id, platform, config_id, qr_code, state, created_at "
                "FROM entry_ways WHERE merchant_id = ? AND platform = ?",
                (way.merchant_id, way.platform)).fetchone()
            return EntryWay(*row)

        return await self._write(self._transaction(insert))

    async def accept_callback(self, merchant_id: str, nonce: str, message: str) -> bool:
        def insert(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO wecom_inbox (merchant_id, nonce, received_at, message) "
                "VALUES (?, ?, ?, ?)", (merchant_id, nonce, time.time(), message))
            return cur.rowcount == 1

        return await self._write(self._transaction(insert))

    async def pending_callbacks(self, limit: int) -> Sequence[InboxItem]:
        def read() -> list[InboxItem]:
            rows = self._rconn.execute(
                "SELECT id, merchant_id, message, received_at FROM wecom_inbox "
                "WHERE done = 0 ORDER BY id LIMIT ?", (limit,)).fetchall()
            return [InboxItem(*r) for r in rows]

        return await self._read(read)

    async def finish_callback(self, item_id: int) -> None:
        def update(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE wecom_inbox SET done = 1 WHERE id = ?", (item_id,))

        await self._write(self._transaction(update))

    async def add_group_member(self, merchant_id: str, chat_id: str, member: str) -> bool:
        def insert(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO wecom_group_members (merchant_id, chat_id, member) "
                "VALUES (?, ?, ?)", (merchant_id, chat_id, member))
            return cur.rowcount == 1

        return await self._write(self._transaction(insert))

    async def put_contact(self, contact: Contact) -> Contact:
        def insert(conn: sqlite3.Connection) -> Contact:
            conn.execute(
                "INSERT OR IGNORE INTO wecom_contacts (merchant_id, user_id, external_userid, "
                "platform, product_id, click_id, added_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (contact.merchant_id, contact.user_id, contact.external_userid,
                 contact.platform, contact.product_id, contact.click_id,
                 contact.added_at or time.time()))
            found = SQLiteStore._contact(conn, contact.merchant_id, contact.user_id,
                                         contact.external_userid)
            assert found is not None
            return found

        return await self._write(self._transaction(insert))

    async def get_contact(self, merchant_id: str, user_id: str,
                          external_userid: str) -> Contact | None:
        return await self._read(lambda: self._contact(self._rconn, merchant_id, user_id,
                                                      external_userid))

    @staticmethod
    def _contact(conn: sqlite3.Connection, merchant_id: str, user_id: str,
                 external_userid: str) -> Contact | None:
        row = conn.execute(
            "SELECT merchant_id, user_id, external_userid, platform, product_id, click_id, "
            "added_at FROM wecom_contacts WHERE merchant_id = ? AND user_id = ? "
            "AND external_userid = ?", (merchant_id, user_id, external_userid)).fetchone()
        return Contact(*row) if row else None

    async def add_alert(self, merchant_id: str, kind: str, detail: Mapping[str, Any], *,
                        key: str, created_at: float) -> bool:
        def insert(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO alerts (merchant_id, kind, detail, dedupe, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (merchant_id, kind, json.dumps(detail, ensure_ascii=False), key, created_at))
            return cur.rowcount == 1

        return await self._write(self._transaction(insert))

    async def list_alerts(self, merchant_id: str, *, since: float, limit: int,
                          ) -> Sequence[Alert]:
        def read() -> list[Alert]:
            rows = self._rconn.execute(
                "SELECT id, merchant_id, kind, detail, created_at FROM alerts "
                "WHERE merchant_id = ? AND created_at >= ? ORDER BY created_at DESC, id DESC "
                "LIMIT ?", (merchant_id, since, limit)).fetchall()
            return [Alert(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

        return await self._read(read)

    async def stats(
        self, merchant_id: str, *, from_day: str, to_day: str, by: GroupBy,
        product_id: int | None = None, platform: str | None = None,
        channel: str | None = None,
    ) -> list[StatsRow]:
        query, params = stats_query(merchant_id, from_day=from_day, to_day=to_day, by=by,
                                    product_id=product_id, platform=platform, mark="?",
                                    channel=channel, force_product_index=True)
        load_report_code()
        plan = SketchPlan.of(from_day=from_day, to_day=to_day, by=by, product_id=product_id,
                             platform=platform, channel=channel)
        cells, cell_params = sketch_query(plan, merchant_id, mark="?")
        pending, pending_params = pending_cells_query(plan, merchant_id, mark="?",
                                                      engine="sqlite")

        def read(conn: sqlite3.Connection) -> list[StatsRow]:
            # One snapshot: a fold moving visitors into the sketches meanwhile is seen
            # whole or not at all.
            with _read_transaction(conn):
                rows = [stats_row(by, r) for r in conn.execute(query, params)]
                return with_unique_visitors(by, rows, with_pending(
                    conn.execute(cells, cell_params).fetchall(),
                    conn.execute(pending, pending_params).fetchall()))

        return await self._report(read)

    # --- staff logins ------------------------------------------------------------------------
    async def create_user(self, user: User) -> User:
        created = User(user.email, user.merchant_id, user.role, user.password_hash,
                       user.created_at or time.time())

        def insert(conn: sqlite3.Connection) -> User:
            try:
                conn.execute(
                    "INSERT INTO users (email, merchant_id, role, password_hash, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (created.email, created.merchant_id, created.role, created.password_hash,
                     created.created_at))
            except sqlite3.IntegrityError as exc:
                if "FOREIGN KEY" in str(exc):
                    raise StoreError(f"no merchant {user.merchant_id!r}") from None
                raise UserExists(user.email) from None
            return created

        return await self._write(self._transaction(insert))

    async def list_users(self, merchant_id: str) -> Sequence[User]:
        def read() -> list[User]:
            rows = self._rconn.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE merchant_id = ? ORDER BY email",
                (merchant_id,)).fetchall()
            return [User(*r) for r in rows]

        return await self._read(read)

    async def get_user(self, email: str) -> User | None:
        def read() -> User | None:
            row = self._rconn.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE email = ?", (email,)).fetchone()
            return User(*row) if row else None

        return await self._read(read)

    async def record_login_failure(
        self, email: str, *, now: float, max_failures: int, lock_seconds: float,
    ) -> User | None:
        def update(conn: sqlite3.Connection) -> User | None:
            # One statement: concurrent wrong guesses each count (every right-hand side
            # reads the row as it was).
            row = conn.execute(
                "UPDATE users SET "
                "failed_logins = CASE WHEN failed_logins + 1 >= ? THEN 0 "
                "ELSE failed_logins + 1 END, "
                "locked_until = CASE WHEN failed_logins + 1 >= ? THEN ? ELSE locked_until END "
                f"WHERE email = ? RETURNING {_USER_COLUMNS}",
                (max_failures, max_failures, now + lock_seconds, email)).fetchall()
            return User(*row[0]) if row else None

        return await self._write(self._transaction(update))

    async def record_login_success(self, email: str, *, now: float) -> None:
        def update(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE users SET failed_logins = 0, last_login_at = ? WHERE email = ?",
                         (now, email))

        await self._write(self._transaction(update))

    async def end_sessions(self, email: str, *, now: float) -> None:
        def update(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE users SET sessions_after = MAX(sessions_after, ?) "
                         "WHERE email = ?", (now, email))

        await self._write(self._transaction(update))

    async def set_password(self, email: str, password_hash: str, *, now: float) -> User | None:
        def update(conn: sqlite3.Connection) -> User | None:
            row = conn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE email = ?",
                               (email,)).fetchone()
            conn.execute("UPDATE users SET password_hash = ?, failed_logins = 0, "
                         "locked_until = 0, sessions_after = MAX(sessions_after, ?) "
                         "WHERE email = ?", (password_hash, now, email))
            return User(*row) if row else None

        return await self._write(self._transaction(update))

    async def unlock_user(self, email: str) -> User | None:
        def update(conn: sqlite3.Connection) -> User | None:
            row = conn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE email = ?",
                               (email,)).fetchone()
            conn.execute("UPDATE users SET failed_logins = 0, locked_until = 0 WHERE email = ?",
                         (email,))
            return User(*row) if row else None

        return await self._write(self._transaction(update))

    async def take_login_attempt(
        self, address: str, *, now: float, window_seconds: float, max_attempts: int,
    ) -> float:
        query, params = login_attempt_query(address, now=now, window_seconds=window_seconds,
                                            max_attempts=max_attempts, mark="?")

        def count(conn: sqlite3.Connection) -> float:
            conn.execute("DELETE FROM login_throttle WHERE window_start <= ?",
                         (now - window_seconds,))
            if conn.execute(query, params).fetchone():
                return 0.0
            (start,) = conn.execute("SELECT window_start FROM login_throttle WHERE address = ?",
                                    (address,)).fetchone()
            return login_attempt_wait(start, now=now, window_seconds=window_seconds)

        return await self._write(self._transaction(count))

    async def give_back_login_attempt(self, address: str) -> None:
        def update(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE login_throttle SET attempts = attempts - 1 "
                         "WHERE address = ? AND attempts > 0", (address,))

        await self._write(self._transaction(update))

