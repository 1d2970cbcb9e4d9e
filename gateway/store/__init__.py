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
]


async def open_store(settings: Settings) -> Store:
    """Open the configured engine with its migrations applied."""
    url: str = settings["storage.url"]
    # One limit for every call, a lock or a connection waited for included.
    timeout: float = settings["storage.timeout_seconds"]
    if not url or url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        path = Path(url.removeprefix("sqlite:///")) if url else settings.data_dir / "linkloop.db"
        return await SQLiteStore.open(path, busy_timeout=timeout, timeout_seconds=timeout)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore, split_schema

        # postgresql://user@host:5432/db[?schema=NAME]: ``schema`` is LinkLoop's own
        # parameter (taken out before connecting): keep the tables in that schema, created
        # on first open. Every other parameter goes to asyncpg as it is.
        dsn, schema = split_schema(url)
        return await PostgresStore.open(dsn, schema=schema, timeout_seconds=timeout)
    raise ConfigError(f"storage.url: {url!r} is neither sqlite:///PATH nor postgresql://...")
