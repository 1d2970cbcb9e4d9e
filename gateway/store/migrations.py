"""Versioned schema changes, applied in order whenever storage is opened.

Never edit a released migration: add the next version. Statements are separated by a
semicolon at the end of a line.
"""

from __future__ import annotations

__all__ = ["SKETCH_BACKFILL", "SQLITE_MIGRATIONS"]

# Login attempts per client address, the same in both engines but for the float type: SQLite's
# version 6, PostgreSQL's version 5 (see each list).
_LOGIN_THROTTLE = """
CREATE TABLE login_throttle (
    address TEXT PRIMARY KEY,
    window_start {real} NOT NULL,
    attempts INTEGER NOT NULL
);
CREATE INDEX login_throttle_by_window ON login_throttle (window_start)
"""

# Numbers marketing can trust (SQLite's version 8, PostgreSQL's version 7): each click's
# outcome, counters of outcomes, chats and lost contacts in every rollup table, per-product
# totals (every platform summed) for reports by product, visitor
# sketches for unique visitors over any range (gateway/store/sketch.py, rollup.py), events
# that remember whether they count under their click yet, the WeCom contacts an add came
# from, and alerts. The sketches are built from the raw clicks right after, in the same
# transaction (``SKETCH_BACKFILL``): Python code, not SQL, since a sketch holds hashes.
_COUNTERS_ADDED = ("redirects", "landings", "guides", "chats", "lost_contacts")
_PRODUCT_TOTALS = """
CREATE TABLE product_days (
    merchant_id TEXT NOT NULL,
    product_id {bigint} NOT NULL,
    day TEXT {c} NOT NULL,
    channel TEXT {c} NOT NULL DEFAULT '',
    {counters},
    PRIMARY KEY (merchant_id, day, product_id, channel)
);
CREATE TABLE product_months (
    merchant_id TEXT NOT NULL,
    product_id {bigint} NOT NULL,
    month TEXT {c} NOT NULL,
    channel TEXT {c} NOT NULL DEFAULT '',
    {counters},
    PRIMARY KEY (merchant_id, month, product_id, channel)
);
INSERT INTO product_days (merchant_id, product_id, day, channel, {names})
SELECT merchant_id, product_id, day, channel, {sums} FROM rollups
GROUP BY merchant_id, product_id, day, channel;
INSERT INTO product_months (merchant_id, product_id, month, channel, {names})
SELECT merchant_id, product_id, month, channel, {sums} FROM monthly_rollups
GROUP BY merchant_id, product_id, month, channel"""
_NUMBERS_TABLES = """
CREATE TABLE visitor_sketches (
    merchant_id TEXT NOT NULL,
    kind TEXT {c} NOT NULL,
    period TEXT {c} NOT NULL,
    product_id {bigint} NOT NULL,
    platform TEXT {c} NOT NULL,
    channel TEXT {c} NOT NULL,
    sketch {blob} NOT NULL,
    -- Platform before period: a platform's cells of a range are one stretch of the key (a
    -- kind without platforms has '' there); a product's are, through the index below.
    PRIMARY KEY (merchant_id, kind, platform, period, product_id, channel)
);
CREATE INDEX visitor_sketches_by_product ON visitor_sketches
    (merchant_id, kind, product_id, period);
CREATE TABLE wecom_contacts (
    merchant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    external_userid TEXT NOT NULL,
    platform TEXT NOT NULL,
    product_id {bigint},
    click_id TEXT,
    added_at {real} NOT NULL,
    PRIMARY KEY (merchant_id, user_id, external_userid)
);
CREATE TABLE alerts (
    id {serial},
    merchant_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    dedupe TEXT NOT NULL,
    created_at {real} NOT NULL,
    UNIQUE (merchant_id, dedupe)
);
CREATE INDEX alerts_by_merchant ON alerts (merchant_id, created_at)"""
_EVENT_KINDS = "'storefront_open', 'entry', 'add', 'chat', 'lost'"


_COUNTERS = ("clicks", "bot_clicks", "redirects", "landings", "guides", "storefront_opens",
             "entries", "adds", "chats", "lost_contacts")


def _add_counters(bigint: str) -> str:
    return ";\n".join(
        f"ALTER TABLE {table} ADD COLUMN {column} {bigint} NOT NULL DEFAULT 0"
        for table in ("rollups", "monthly_rollups", "daily_totals")
        for column in _COUNTERS_ADDED)


def _product_totals(bigint: str, collate: str) -> str:
    """product_days and product_months (rollup.py), filled from the per-platform rows."""
    return _PRODUCT_TOTALS.format(
        bigint=bigint, c=collate, names=", ".join(_COUNTERS),
        sums=", ".join(f"SUM({name})" for name in _COUNTERS),
        counters=",\n    ".join(f"{name} {bigint} NOT NULL DEFAULT 0" for name in _COUNTERS))


def _pending_counts(bigint: str, collate: str) -> str:
    """pending_counts (gateway/store/pending.py): a batch's per-day counter increments, in
    ``rollups``' key columns then the counters, waiting to be folded into the five counter
    tables. No key and no index: each batch appends to it and a fold empties it, oldest
    first, so an index would slow every insert for little; a report reads the merchant's
    own rows of its range whatever the index, and scans past the rest (at most about
    storage.sketch_fold_visitors rows per gateway writing)."""
    counters = ",\n    ".join(f"{name} {bigint} NOT NULL" for name in _COUNTERS)
    return f"""
CREATE TABLE pending_counts (
    merchant_id TEXT NOT NULL,
    product_id {bigint} NOT NULL,
    day TEXT {collate} NOT NULL,
    platform TEXT {collate} NOT NULL,
    channel TEXT {collate} NOT NULL,
    {counters}
)
"""


_SQLITE_NUMBERS = f"""
ALTER TABLE clicks ADD COLUMN outcome TEXT NOT NULL DEFAULT '';
CREATE TABLE events_v8 (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    product_id INTEGER,
    click_id TEXT,
    target TEXT,
    kind TEXT NOT NULL CHECK (kind IN ({_EVENT_KINDS})),
    platform TEXT NOT NULL,
    ts REAL NOT NULL,
    day TEXT NOT NULL,
    attributed INTEGER NOT NULL DEFAULT 1
) WITHOUT ROWID;
INSERT INTO events_v8 (id, merchant_id, product_id, click_id, target, kind, platform, ts, day)
SELECT id, merchant_id, product_id, click_id, target, kind, platform, ts, day FROM events;
DROP TABLE events;
ALTER TABLE events_v8 RENAME TO events;
CREATE INDEX events_by_click ON events (click_id);
{_add_counters("INTEGER")};
{_product_totals("INTEGER", "")};
{_NUMBERS_TABLES.format(c="", bigint="INTEGER", blob="BLOB", real="REAL",
                        serial="INTEGER PRIMARY KEY AUTOINCREMENT")}
"""

# Links minted through WeChat's API, the same in both engines but for the float and binary
# types: SQLite's version 7, PostgreSQL's version 6.
_MINTED_LINKS = """
CREATE TABLE minted_links (
    code TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('url_link', 'scheme', 'wxacode')),
    merchant_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    value TEXT,
    image {blob},
    expires_at {real} NOT NULL DEFAULT 0,
    minted_at {real} NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at {real} NOT NULL DEFAULT 0,
    error TEXT,
    PRIMARY KEY (code, kind)
);
CREATE INDEX minted_links_due ON minted_links (due_at);
CREATE INDEX minted_links_by_merchant ON minted_links (merchant_id, code)
"""

# The merchant console (both engines, but for the float type: SQLite's version 9,
# PostgreSQL's version 8): a product's optional sales window, and named ``?ch=`` channels.
# Nullable columns with no default: adding them rewrites no row.
_CONSOLE = """
ALTER TABLE products ADD COLUMN valid_from {real};
ALTER TABLE products ADD COLUMN valid_until {real};
CREATE TABLE channels (
    merchant_id TEXT NOT NULL REFERENCES merchants(id),
    name TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_at {real} NOT NULL,
    PRIMARY KEY (merchant_id, name)
)
"""

# SQLite: clicks and events are WITHOUT ROWID tables keyed by their random id -- one B-tree
# per insert instead of a rowid table plus its primary-key index -- and clicks carry no
# other index: reports read the rollups, and attribution finds a click by its id.
SQLITE_MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
CREATE TABLE merchants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    domains TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL
);
CREATE TABLE products (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id TEXT NOT NULL REFERENCES merchants(id),
    code TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    targets TEXT NOT NULL,
    image_url TEXT,
    price TEXT,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX products_by_merchant ON products (merchant_id, id);
CREATE TABLE clicks (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    product_id INTEGER NOT NULL,
    ts REAL NOT NULL,
    day TEXT NOT NULL,
    platform TEXT NOT NULL,
    source TEXT NOT NULL,
    channel TEXT,
    visitor TEXT NOT NULL,
    ip_hash TEXT NOT NULL,
    bot INTEGER NOT NULL,
    mobile INTEGER NOT NULL,
    os TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    product_id INTEGER,
    click_id TEXT,
    target TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('storefront_open', 'entry', 'add')),
    platform TEXT NOT NULL,
    ts REAL NOT NULL,
    day TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX events_by_click ON events (click_id);
CREATE TABLE daily_visitors (
    merchant_id TEXT NOT NULL,
    product_id INTEGER NOT NULL,
    day TEXT NOT NULL,
    platform TEXT NOT NULL,
    visitor TEXT NOT NULL,
    -- Day and visitor first: visitor ids are time-ordered, so a day's new visitors
    -- land at the end of the merchant's range instead of on random pages.
    PRIMARY KEY (merchant_id, day, visitor, product_id, platform)
) WITHOUT ROWID;
CREATE TABLE rollups (
    merchant_id TEXT NOT NULL,
    day TEXT NOT NULL,
    product_id INTEGER NOT NULL,
    platform TEXT NOT NULL,
    clicks INTEGER NOT NULL DEFAULT 0,
    unique_visitors INTEGER NOT NULL DEFAULT 0,
    bot_clicks INTEGER NOT NULL DEFAULT 0,
    storefront_opens INTEGER NOT NULL DEFAULT 0,
    entries INTEGER NOT NULL DEFAULT 0,
    adds INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, day, product_id, platform)
) WITHOUT ROWID
"""),
    (2, """
CREATE TABLE entries (
    merchant_id TEXT PRIMARY KEY REFERENCES merchants(id),
    kind TEXT NOT NULL CHECK (kind IN ('acquisition_link', 'contact_way', 'group', 'static')),
    config TEXT NOT NULL,
    secrets TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE entry_ways (
    merchant_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    config_id TEXT NOT NULL,
    qr_code TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (merchant_id, platform)
);
CREATE TABLE wecom_inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    received_at REAL NOT NULL,
    message TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    UNIQUE (merchant_id, nonce)
);
CREATE INDEX wecom_inbox_pending ON wecom_inbox (done, id);
CREATE TABLE wecom_group_members (
    merchant_id TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (merchant_id, chat_id, member)
) WITHOUT ROWID;
CREATE TABLE app_credentials (
    merchant_id TEXT NOT NULL REFERENCES merchants(id),
    platform TEXT NOT NULL,
    app_id TEXT NOT NULL,
    secret TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (merchant_id, platform)
)
"""),
    # Version 3: the channel dimension (``?ch=``) in the rollups, and staff logins.
    # SQLite cannot change a primary key in place: the rollups move to a new table with
    # channel in its key, every existing row under channel '' (they predate the dimension),
    # all in the migration's one transaction.
    (3, """
CREATE TABLE rollups_v3 (
    merchant_id TEXT NOT NULL,
    day TEXT NOT NULL,
    product_id INTEGER NOT NULL,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL DEFAULT '',
    clicks INTEGER NOT NULL DEFAULT 0,
    unique_visitors INTEGER NOT NULL DEFAULT 0,
    bot_clicks INTEGER NOT NULL DEFAULT 0,
    storefront_opens INTEGER NOT NULL DEFAULT 0,
    entries INTEGER NOT NULL DEFAULT 0,
    adds INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, day, product_id, platform, channel)
) WITHOUT ROWID;
INSERT INTO rollups_v3 (merchant_id, day, product_id, platform, channel, clicks,
                        unique_visitors, bot_clicks, storefront_opens, entries, adds)
SELECT merchant_id, day, product_id, platform, '', clicks, unique_visitors, bot_clicks,
       storefront_opens, entries, adds FROM rollups;
DROP TABLE rollups;
ALTER TABLE rollups_v3 RENAME TO rollups;
CREATE TABLE users (
    email TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants(id),
    role TEXT NOT NULL CHECK (role IN ('merchant', 'marketing')),
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until REAL NOT NULL DEFAULT 0,
    last_login_at REAL,
    sessions_after REAL NOT NULL DEFAULT 0
);
CREATE INDEX users_by_merchant ON users (merchant_id)
"""),
    # Version 4: coarser rollups, so that a year of stats reads thousands of rows, not a
    # year of per-day, per-product ones (see gateway/store/rollup.py). Both are bumped in
    # the record transaction from the same deltas as ``rollups``, and backfilled from it
    # here, in the migration's one transaction. rollups_by_product serves every query with a
    # product filter (a year of one product: ~365 rows per platform, not a scan).
    (4, """
CREATE TABLE monthly_rollups (
    merchant_id TEXT NOT NULL,
    month TEXT NOT NULL,
    product_id INTEGER NOT NULL,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL DEFAULT '',
    clicks INTEGER NOT NULL DEFAULT 0,
    unique_visitors INTEGER NOT NULL DEFAULT 0,
    bot_clicks INTEGER NOT NULL DEFAULT 0,
    storefront_opens INTEGER NOT NULL DEFAULT 0,
    entries INTEGER NOT NULL DEFAULT 0,
    adds INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, month, product_id, platform, channel)
) WITHOUT ROWID;
INSERT INTO monthly_rollups (merchant_id, month, product_id, platform, channel, clicks,
                             unique_visitors, bot_clicks, storefront_opens, entries, adds)
SELECT merchant_id, substr(day, 1, 7), product_id, platform, channel, SUM(clicks),
       SUM(unique_visitors), SUM(bot_clicks), SUM(storefront_opens), SUM(entries), SUM(adds)
FROM rollups GROUP BY merchant_id, substr(day, 1, 7), product_id, platform, channel;
CREATE TABLE daily_totals (
    merchant_id TEXT NOT NULL,
    day TEXT NOT NULL,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL DEFAULT '',
    clicks INTEGER NOT NULL DEFAULT 0,
    unique_visitors INTEGER NOT NULL DEFAULT 0,
    bot_clicks INTEGER NOT NULL DEFAULT 0,
    storefront_opens INTEGER NOT NULL DEFAULT 0,
    entries INTEGER NOT NULL DEFAULT 0,
    adds INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, day, platform, channel)
) WITHOUT ROWID;
INSERT INTO daily_totals (merchant_id, day, platform, channel, clicks, unique_visitors,
                          bot_clicks, storefront_opens, entries, adds)
SELECT merchant_id, day, platform, channel, SUM(clicks), SUM(unique_visitors),
       SUM(bot_clicks), SUM(storefront_opens), SUM(entries), SUM(adds)
FROM rollups GROUP BY merchant_id, day, platform, channel;
CREATE INDEX rollups_by_product ON rollups (merchant_id, product_id, day)
"""),
    # Version 5: a log of changed share links, for the link caches of other processes.
    # PostgreSQL tells them with NOTIFY; SQLite can't, so every gateway process reads this
    # log twice a second (SQLiteStore.watch_links) and a product changed through one
    # ``serve --workers`` process stops being served by the others within a second, not at
    # the end of their cache TTL. Triggers log every writer (API, CLI, import) alike, and
    # keep the newest 10,000 changes. (A trigger's own statements end in "; " and END: the
    # migration runner splits statements at a semicolon that ends a line.)
    (5, """
CREATE TABLE link_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    code TEXT NOT NULL
);
CREATE TRIGGER link_created AFTER INSERT ON products BEGIN
    INSERT INTO link_changes (code) VALUES (NEW.code); DELETE FROM link_changes
    WHERE seq <= (SELECT max(seq) FROM link_changes) - 10000; END;
CREATE TRIGGER link_changed AFTER UPDATE ON products BEGIN
    INSERT INTO link_changes (code) VALUES (NEW.code); DELETE FROM link_changes
    WHERE seq <= (SELECT max(seq) FROM link_changes) - 10000; END
"""),
    # Version 6: login attempts per client address (its salted hash, never the address), so
    # one address can't spray passwords over many logins. In the database, like the
    # per-login lock, so every `serve --workers` process and every instance counts together.
    # A row per address with attempts in its current window; rows of closed windows are
    # deleted as new attempts come (Store.take_login_attempt).
    (6, _LOGIN_THROTTLE.format(real="REAL")),
    # Version 7: what the gateway mints through WeChat's API for each share link (URL Link,
    # encrypted scheme, mini-program code), kept so that no click waits for a mint and every
    # gateway process serves the same links; ``due_at`` drives renewals and retries.
    (7, _MINTED_LINKS.format(real="REAL", blob="BLOB")),
    # Version 8: see _SQLITE_NUMBERS. events is rebuilt (SQLite can't change a CHECK);
    # existing events already count under their click, or never will.
    (8, _SQLITE_NUMBERS),
    # Version 9: the console's sales windows and channels (_CONSOLE says what).
    (9, _CONSOLE.format(real="REAL")),
    # Version 10: visitors not yet folded into the sketches. The click writer appends each
    # human click's visitor hash here (one row, no index: the cheapest insert there is)
    # and folds them into visitor_sketches once many have gathered, so that a sketch cell
    # is rewritten once for many clicks instead of once per batch. Reports merge these rows
    # with the sketches (each ``visitor`` is an exact sketch of one hash), so unique
    # visitors never trail the clicks. PostgreSQL's version 9 is the same table.
    (10, """
CREATE TABLE pending_visitors (
    merchant_id TEXT NOT NULL,
    day TEXT NOT NULL,
    product_id INTEGER NOT NULL,
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    visitor BLOB NOT NULL
)
"""),
    # Version 11: counts not yet folded into the counter tables, as visitors are not yet
    # folded into the sketches (version 10): each batch appends its per-day increments here
    # and the click writer folds them into rollups, monthly_rollups, daily_totals,
    # product_days and product_months in bulk, with SQL, so that a counter row is
    # rewritten once for many batches instead of five tables' rows every batch. Reports
    # add these rows to the tables' sums, so no figure trails the clicks. PostgreSQL's
    # version 10 is the same table.
    (11, _pending_counts("INTEGER", "")),
)


# --- PostgreSQL ----------------------------------------------------------------------------
# The same tables and columns as SQLITE_MIGRATIONS, in PostgreSQL's dialect. Each script runs
# whole, in one transaction (asyncpg's simple query protocol), so a function body may hold
# semicolons of its own. Day and platform columns are COLLATE "C": 'YYYY-MM-DD' text then
# compares and sorts byte-wise whatever the database's locale, as in SQLite.
#
# clicks, the one table that grows with traffic, is partitioned by month (declarative
# RANGE partitioning) so a month can be detached or dropped whole and recent months stay
# small. The partition key is the ``day`` text, not ``ts``: ``day`` is what the reports, the
# rollups and the stats all use, and it belongs to the click record itself, so a batch
# replayed from the journal carries the very same day. PostgreSQL requires the partition key
# in every unique constraint, hence PRIMARY KEY (id, day): ``INSERT ... ON CONFLICT (id, day)
# DO NOTHING RETURNING id`` then tells the recorder which clicks are new in one statement.
# A click id is random (71 bits) and its day is fixed the moment it is made, so "same id"
# and "same (id, day)" coincide; a separate global click_ids table would cost one more write
# per click and never shrink when an old month is dropped. A lookup by id alone (the add →
# click attribution) still uses each partition's primary-key index, id first.
#
# Partitions: clicks_YYYY_MM for each month, made ahead of time by
# ensure_click_partition(month) (PostgresStore.ensure_partitions calls it on open and then
# periodically), and clicks_default as a safety net for any day without its month. A month
# created later takes its rows out of clicks_default with it.
POSTGRES_MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, """
CREATE TABLE merchants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    domains JSONB NOT NULL DEFAULT '[]',
    created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE products (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants(id),
    code TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    targets JSONB NOT NULL,
    image_url TEXT,
    price TEXT,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX products_by_merchant ON products (merchant_id, id);
CREATE TABLE clicks (
    id TEXT NOT NULL,
    merchant_id TEXT NOT NULL,
    product_id BIGINT NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    day TEXT COLLATE "C" NOT NULL,
    platform TEXT COLLATE "C" NOT NULL,
    source TEXT NOT NULL,
    channel TEXT,
    visitor TEXT NOT NULL,
    ip_hash TEXT NOT NULL,
    bot BOOLEAN NOT NULL,
    mobile BOOLEAN NOT NULL,
    os TEXT NOT NULL,
    PRIMARY KEY (id, day)
) PARTITION BY RANGE (day);
CREATE INDEX clicks_by_product_day ON clicks (merchant_id, product_id, day);
CREATE TABLE clicks_default PARTITION OF clicks DEFAULT;
CREATE FUNCTION ensure_click_partition(month DATE) RETURNS TEXT
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    month_start DATE := date_trunc('month', month)::date;
    lo TEXT := to_char(month_start, 'YYYY-MM-DD');
    hi TEXT := to_char(month_start + INTERVAL '1 month', 'YYYY-MM-DD');
    part TEXT := 'clicks_' || to_char(month_start, 'YYYY_MM');
BEGIN
    -- One creator at a time per schema: several gateways may start together.
    PERFORM pg_advisory_xact_lock(hashtext('linkloop:click_partitions:' || current_schema()));
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM clicks_default WHERE day >= lo AND day < hi) THEN
        -- Clicks came before their month had a partition: move them in with it.
        EXECUTE format('CREATE TABLE %I (LIKE clicks)', part);
        EXECUTE format('WITH moved AS (DELETE FROM clicks_default WHERE day >= %L AND day < %L '
                       'RETURNING *) INSERT INTO %I SELECT * FROM moved', lo, hi, part);
        EXECUTE format('ALTER TABLE clicks ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       part, lo, hi);
    ELSE
        EXECUTE format('CREATE TABLE %I PARTITION OF clicks FOR VALUES FROM (%L) TO (%L)',
                       part, lo, hi);
    END IF;
    RETURN part;
END
$$;
CREATE TABLE events (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    product_id BIGINT,
    click_id TEXT,
    target TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('storefront_open', 'entry', 'add')),
    platform TEXT COLLATE "C" NOT NULL,
    ts DOUBLE PRECISION NOT NULL,
    day TEXT COLLATE "C" NOT NULL
);
CREATE INDEX events_by_click ON events (click_id);
CREATE TABLE daily_visitors (
    merchant_id TEXT NOT NULL,
    product_id BIGINT NOT NULL,
    day TEXT COLLATE "C" NOT NULL,
    platform TEXT COLLATE "C" NOT NULL,
    visitor TEXT NOT NULL,
    -- Day and visitor first: visitor ids are time-ordered, so a day's new visitors
    -- land at the end of the merchant's range instead of on random pages.
    PRIMARY KEY (merchant_id, day, visitor, product_id, platform)
);
CREATE TABLE rollups (
    merchant_id TEXT NOT NULL,
    day TEXT COLLATE "C" NOT NULL,
    product_id BIGINT NOT NULL,
    platform TEXT COLLATE "C" NOT NULL,
    clicks BIGINT NOT NULL DEFAULT 0,
    unique_visitors BIGINT NOT NULL DEFAULT 0,
    bot_clicks BIGINT NOT NULL DEFAULT 0,
    storefront_opens BIGINT NOT NULL DEFAULT 0,
    entries BIGINT NOT NULL DEFAULT 0,
    adds BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, day, product_id, platform)
)
"""),
    (2, """
CREATE TABLE entries (
    merchant_id TEXT PRIMARY KEY REFERENCES merchants(id),
    kind TEXT NOT NULL CHECK (kind IN ('acquisition_link', 'contact_way', 'group', 'static')),
    config JSONB NOT NULL,
    secrets JSONB NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE entry_ways (
    merchant_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    config_id TEXT NOT NULL,
    qr_code TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (merchant_id, platform)
);
CREATE TABLE wecom_inbox (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    message TEXT NOT NULL,
    done BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (merchant_id, nonce)
);
CREATE INDEX wecom_inbox_pending ON wecom_inbox (id) WHERE NOT done;
CREATE TABLE wecom_group_members (
    merchant_id TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (merchant_id, chat_id, member)
);
CREATE TABLE app_credentials (
    merchant_id TEXT NOT NULL REFERENCES merchants(id),
    platform TEXT NOT NULL,
    app_id TEXT NOT NULL,
    secret TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (merchant_id, platform)
)
"""),
    # Version 3: as SQLite's. Adding a column with a constant default rewrites nothing; the
    # primary key is rebuilt with channel in it. Existing rows get channel ''.
    (3, """
ALTER TABLE rollups ADD COLUMN channel TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE rollups DROP CONSTRAINT rollups_pkey;
ALTER TABLE rollups ADD CONSTRAINT rollups_pkey
    PRIMARY KEY (merchant_id, day, product_id, platform, channel);
CREATE TABLE users (
    email TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL REFERENCES merchants(id),
    role TEXT NOT NULL CHECK (role IN ('merchant', 'marketing')),
    password_hash TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_login_at DOUBLE PRECISION,
    sessions_after DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE INDEX users_by_merchant ON users (merchant_id)
"""),
    # Version 4: as SQLite's (backfilled under the migration lock, in one transaction). Then
    # ANALYZE: until autovacuum comes by, the new tables would have no statistics to plan by.
    (4, """
CREATE TABLE monthly_rollups (
    merchant_id TEXT NOT NULL,
    month TEXT COLLATE "C" NOT NULL,
    product_id BIGINT NOT NULL,
    platform TEXT COLLATE "C" NOT NULL,
    channel TEXT COLLATE "C" NOT NULL DEFAULT '',
    clicks BIGINT NOT NULL DEFAULT 0,
    unique_visitors BIGINT NOT NULL DEFAULT 0,
    bot_clicks BIGINT NOT NULL DEFAULT 0,
    storefront_opens BIGINT NOT NULL DEFAULT 0,
    entries BIGINT NOT NULL DEFAULT 0,
    adds BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, month, product_id, platform, channel)
);
INSERT INTO monthly_rollups (merchant_id, month, product_id, platform, channel, clicks,
                             unique_visitors, bot_clicks, storefront_opens, entries, adds)
SELECT merchant_id, substr(day, 1, 7), product_id, platform, channel, SUM(clicks),
       SUM(unique_visitors), SUM(bot_clicks), SUM(storefront_opens), SUM(entries), SUM(adds)
FROM rollups GROUP BY merchant_id, substr(day, 1, 7), product_id, platform, channel;
CREATE TABLE daily_totals (
    merchant_id TEXT NOT NULL,
    day TEXT COLLATE "C" NOT NULL,
    platform TEXT COLLATE "C" NOT NULL,
    channel TEXT COLLATE "C" NOT NULL DEFAULT '',
    clicks BIGINT NOT NULL DEFAULT 0,
    unique_visitors BIGINT NOT NULL DEFAULT 0,
    bot_clicks BIGINT NOT NULL DEFAULT 0,
    storefront_opens BIGINT NOT NULL DEFAULT 0,
    entries BIGINT NOT NULL DEFAULT 0,
    adds BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (merchant_id, day, platform, channel)
);
INSERT INTO daily_totals (merchant_id, day, platform, channel, clicks, unique_visitors,
                          bot_clicks, storefront_opens, entries, adds)
SELECT merchant_id, day, platform, channel, SUM(clicks), SUM(unique_visitors),
       SUM(bot_clicks), SUM(storefront_opens), SUM(entries), SUM(adds)
FROM rollups GROUP BY merchant_id, day, platform, channel;
CREATE INDEX rollups_by_product ON rollups (merchant_id, product_id, day);
ANALYZE monthly_rollups, daily_totals, rollups
"""),
    # Version 5: as SQLite's version 6 (SQLite's version 5, the link change log, has no
    # PostgreSQL counterpart: NOTIFY does that job).
    (5, _LOGIN_THROTTLE.format(real="DOUBLE PRECISION")),
    # Version 6: minted links (SQLite's version 7 says why).
    (6, _MINTED_LINKS.format(real="DOUBLE PRECISION", blob="BYTEA")),
    # Version 7: as SQLite's version 8. A sketch (at most 4 KiB) is stored PLAIN: in the
    # row, uncompressed, so a report merging thousands reads them without decompressing.
    (7, f"""
ALTER TABLE clicks ADD COLUMN outcome TEXT NOT NULL DEFAULT '';
ALTER TABLE events DROP CONSTRAINT events_kind_check;
ALTER TABLE events ADD CONSTRAINT events_kind_check CHECK (kind IN ({_EVENT_KINDS}));
ALTER TABLE events ADD COLUMN attributed BOOLEAN NOT NULL DEFAULT TRUE;
{_add_counters("BIGINT")};
{_product_totals("BIGINT", 'COLLATE "C"')};
{_NUMBERS_TABLES.format(c='COLLATE "C"', bigint="BIGINT", blob="BYTEA",
                        real="DOUBLE PRECISION",
                        serial="BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")};
ALTER TABLE visitor_sketches ALTER COLUMN sketch SET STORAGE PLAIN
"""),
    # Version 8: as SQLite's version 9.
    (8, _CONSOLE.format(real="DOUBLE PRECISION")),
    # Version 9: as SQLite's version 10 (visitors set aside, gateway/store/pending.py). No
    # index: each batch appends to it and a fold empties it (one DELETE of every row), so an
    # index would slow every insert for little. A report reads and merges the merchant's
    # own pending rows of its range whatever the index (most of its cost: ~1.7 us a row),
    # and its scan past the rest took ~5 ms for 50,000 rows (at most about
    # storage.sketch_fold_visitors are pending per gateway writing).
    (9, """
CREATE TABLE pending_visitors (
    merchant_id TEXT NOT NULL,
    day TEXT COLLATE "C" NOT NULL,
    product_id BIGINT NOT NULL,
    platform TEXT COLLATE "C" NOT NULL,
    channel TEXT COLLATE "C" NOT NULL,
    visitor BYTEA NOT NULL
)
"""),
    # Version 10: as SQLite's version 11.
    (10, _pending_counts("BIGINT", 'COLLATE "C"')),
)
__all__ += ["POSTGRES_MIGRATIONS"]

#: After which version each engine builds the visitor sketches from its raw clicks.
SKETCH_BACKFILL = {"sqlite": 8, "postgres": 7}
