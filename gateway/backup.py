"""``linkloop backup``: a consistent copy of the SQLite database, taken while the gateway runs.

SQLite's online backup API copies the live file page by page under one read transaction,
so the copy is one moment of the database: the clicks and the rollups they bumped agree,
whatever the gateway writes meanwhile (WAL mode lets it go on writing). The copy is made
beside its destination, checked, synced and renamed into place, so a backup file that
exists is a whole one.

PostgreSQL has its own tools for this (``pg_dump``, or base backups and WAL archiving);
the command says so rather than doing a worse job of it.

The copy holds no keys: the token key, the address salt and the secrets key live in the
data directory (or in settings), apart from the data they protect. A restore needs them.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["KEY_FILES", "BackupError", "backup_sqlite", "pg_dump_hint"]

#: Files generated into the data directory that a backup leaves out on purpose.
KEY_FILES = ("auth.secret", "ip.salt", "secrets.key")


class BackupError(Exception):
    """The backup could not be made; nothing was written at the destination."""


def backup_sqlite(source: Path, out: Path, *, overwrite: bool = False,
                  busy_timeout: float = 30.0) -> dict[str, Any]:
    """Copy the database at ``source`` to ``out`` (mode 0600); what was copied, as JSON."""
    if not source.is_file():
        raise BackupError(f"no database at {source}: nothing to back up")
    if out.exists() and not overwrite:
        raise BackupError(f"{out} exists: choose another --out, or add --force to replace it")
    if not out.parent.is_dir():
        raise BackupError(f"{out.parent} is not a directory")
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        # Made empty first, so the copy is never readable by others, even for a moment.
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        src = sqlite3.connect(source, timeout=busy_timeout)
        try:
            dst = sqlite3.connect(partial)
            try:
                # All pages in one step (pages=-1): one read transaction, one moment. A copy
                # in several steps starts over whenever another process writes, and under
                # steady clicks it would never end.
                src.backup(dst, pages=-1)
                # One self-contained file: no -wal beside it to forget.
                dst.execute("PRAGMA journal_mode = DELETE")
                # The full check, on the copy (the gateway never waits for it). Not
                # quick_check: SQLite 3.40 reports "NULL value in daily_visitors.product_id"
                # for WITHOUT ROWID tables whose key lists columns out of their order.
                checked = dst.execute("PRAGMA integrity_check").fetchone()[0]
                if checked != "ok":
                    raise BackupError(f"the copy failed its check: {checked}")
                version = dst.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
            finally:
                dst.close()
        finally:
            src.close()
        with open(partial, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, out)
        _sync_directory(out.parent)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy {source}: {exc}") from None
    except OSError as exc:
        raise BackupError(f"cannot write {out}: {exc.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)
    keys = [name for name in KEY_FILES if (source.parent / name).exists()]
    return {"engine": "sqlite", "database": str(source), "out": str(out),
            "bytes": out.stat().st_size, "schema_version": version,
            "keys_not_included": keys}


def _sync_directory(directory: Path) -> None:
    """The rename itself survives a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pg_dump_hint(url: str) -> str:
    """What to run instead on PostgreSQL, for the URL in settings (its password left out)."""
    from .store.postgres import split_schema

    dsn, schema = split_schema(url)
    parts = urlsplit(dsn)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    shown = urlunsplit(parts._replace(netloc=netloc))
    only = f" --schema={schema}" if schema else ""
    return (f"storage is PostgreSQL: back it up with pg_dump, e.g. pg_dump --format=custom"
            f"{only} --file=linkloop.dump '{shown}' (restore with pg_restore)")
