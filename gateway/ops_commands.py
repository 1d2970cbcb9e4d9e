"""Operators' commands: ``linkloop backup`` (and, beside it, retention and secrets chores).

Registered on the ``linkloop`` parser by ``add_ops_commands``; kept apart from
gateway/cli.py so that each chore is one short function here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli import CliError, _settings
from .jsonout import dumps

__all__ = ["add_ops_commands"]


def cmd_backup(args: argparse.Namespace) -> int:
    from .backup import BackupError, backup_sqlite, pg_dump_hint
    from .store import sqlite_path

    settings = _settings(args)
    source = sqlite_path(settings)
    if source is None:
        raise CliError(pg_dump_hint(settings["storage.url"]))
    try:
        report = backup_sqlite(source, Path(args.out), overwrite=args.force)
    except BackupError as exc:
        raise CliError(str(exc)) from None
    print(dumps(report))
    return 0


def add_ops_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = sub.add_parser(
        "backup", help="copy the SQLite database, consistent while the gateway runs "
        "(PostgreSQL: use pg_dump)")
    backup.add_argument("--out", required=True,
                        help="the file to write (mode 0600); it holds no keys, see README")
    backup.add_argument("--force", action="store_true", help="replace --out if it exists")
    backup.set_defaults(func=cmd_backup)
