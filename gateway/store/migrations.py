"""Versioned schema changes, applied in order whenever storage is opened.

Never edit a released migration: add the next version. Statements are separated by a
semicolon at the end of a line.
"""

from __future__ import annotations

__all__ = ["SQLITE_MIGRATIONS"]

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
);
CREATE INDEX clicks_by_product_day ON clicks (merchant_id, product_id, day);
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
);
CREATE INDEX events_by_click ON events (click_id);
CREATE TABLE daily_visitors (
    merchant_id TEXT NOT NULL,
    product_id INTEGER NOT NULL,
    day TEXT NOT NULL,
    platform TEXT NOT NULL,
    visitor TEXT NOT NULL,
    PRIMARY KEY (merchant_id, product_id, day, platform, visitor)
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
)
