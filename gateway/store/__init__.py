"""One storage contract, engines behind it; ``open_store`` picks one from ``storage.url``."""

from __future__ import annotations

from pathlib import Path

from ..settings import ConfigError, Settings
from .base import (
    COUNTERS,
    METRICS,
    OUTCOMES,
    PRODUCT_STATES,
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
    EventKind,
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

__all__ = [
    "COUNTERS",
    "METRICS",
    "OUTCOMES",
    "PRODUCT_STATES",
    "Alert",
    "Channel",
    "ChannelExists",
    "Click",
    "CodeTaken",
    "Contact",
    "Credentials",
    "Entry",
    "EntryWay",
    "Event",
    "EventKind",
    "InboxItem",
    "Merchant",
    "MerchantExists",
    "MintedLink",
    "NewProduct",
    "Product",
    "ProductState",
    "StatsRow",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "User",
    "UserExists",
    "open_store",
    "sqlite_path",
]


def sqlite_path(settings: Settings) -> Path | None:
    """The SQLite file ``storage.url`` names (its default: under the data directory), or
    None when storage is elsewhere (PostgreSQL)."""
    url: str = settings["storage.url"]
    if not url:
        return settings.data_dir / "linkloop.db"
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return None


async def open_store(settings: Settings, *, call_limit: float | None = None) -> Store:
    """Open the configured engine with its migrations applied.

    ``call_limit``: the longest a call may run in all, while waiting for a lock (SQLite)
    or for the server's answer to a statement (PostgreSQL) stays limited to
    ``storage.timeout_seconds`` (the writer process: a large batch behind the requests on
    a busy CPU is slow, not failing; a locked or silent database is failing).
    """
    url: str = settings["storage.url"]
    # One limit for every call, a lock or a connection waited for included.
    timeout: float = settings["storage.timeout_seconds"]
    from ..secretbox import SecretBox

    secrets = SecretBox.from_settings(settings)
    path = sqlite_path(settings)
    if path is not None:
        from .sqlite import SQLiteStore

        return await SQLiteStore.open(path, busy_timeout=timeout,
                                      timeout_seconds=call_limit or timeout,
                                      secrets=secrets,
                                      fold_visitors=settings["storage.sketch_fold_visitors"])
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore, split_schema

        # postgresql://user@host:5432/db[?schema=NAME]: ``schema`` is LinkLoop's own
        # parameter (taken out before connecting): keep the tables in that schema, created
        # on first open. Every other parameter goes to asyncpg as it is.
        dsn, schema = split_schema(url)
        return await PostgresStore.open(dsn, schema=schema, timeout_seconds=timeout,
                                        secrets=secrets, call_limit=call_limit,
                                        fold_visitors=settings["storage.sketch_fold_visitors"])
    raise ConfigError(f"storage.url: {url!r} is neither sqlite:///PATH nor postgresql://...")
