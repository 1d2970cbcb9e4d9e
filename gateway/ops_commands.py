"""Operators' commands: ``linkloop backup``, ``prune``, ``privacy forget``, ``secrets rotate``.

Registered on the ``linkloop`` parser by ``add_ops_commands``; kept apart from
gateway/cli.py so that each chore is one short function here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .cli import CliError, _run, _settings, _with_store
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


def cmd_secrets_rotate(args: argparse.Namespace) -> int:
    """A new key seals every stored secret; the old key then goes from the key file."""
    settings = _settings(args)

    async def work(store: Any) -> int:
        box = store.secrets
        before = box.current_id
        if box.key_file is not None:
            box.rotate_key_file()  # running gateways seal with it from their next secret on
        resealed = await store.reseal_secrets()
        # A gateway that sealed a secret with the old key while this ran: sealed again.
        late = await store.reseal_secrets()
        report: dict[str, Any] = {
            "key": box.current_id, "previous_key": before,
            "resealed": {table: count + late[table] for table, count in resealed.items()}}
        if box.key_file is not None:
            report["key_file"] = str(box.key_file)
            report["retired_keys"] = box.retire_old_keys()
        elif settings["secrets.previous_keys"]:
            report["next"] = "every secret is sealed under secrets.key: remove " \
                             "secrets.previous_keys from the settings of every host"
        print(dumps(report))
        return 0

    return _run(_with_store(settings, work))


def cmd_prune(args: argparse.Namespace) -> int:
    from .clock import DayClock
    from .retention import prune

    settings = _settings(args)

    async def work(store: Any) -> int:
        print(dumps(await prune(store, settings, DayClock(settings["stats.timezone"]))))
        return 0

    return _run(_with_store(settings, work))


def cmd_privacy_forget(args: argparse.Namespace) -> int:
    from .ids import is_visitor_id

    if not is_visitor_id(args.visitor):
        raise CliError(f"--visitor {args.visitor!r} is not a visitor id (the shopper's ll_v "
                       "cookie: 16 of A-Z, a-z, 0-9, - and _)")

    async def work(store: Any) -> int:
        if args.merchant and await store.get_merchant(args.merchant) is None:
            raise CliError(f"no merchant {args.merchant!r}")
        forgotten = await store.forget_visitor(args.visitor, args.merchant)
        deleted = {m: {k: n for k, n in counts.items() if not k.startswith("sketches_")}
                   for m, counts in forgotten.items()}
        sketches = {m: {k.removeprefix("sketches_"): n for k, n in counts.items()
                        if k.startswith("sketches_")} for m, counts in forgotten.items()}
        left = sum(counts["left"] for counts in sketches.values())
        print(dumps({"visitor": args.visitor, "merchant": args.merchant,
                     "deleted": deleted, "sketches": sketches}))
        print(f"unique-visitor sketch cells: "
              f"{sum(c['cleaned'] for c in sketches.values())} exact ones cleaned, "
              f"{sum(c['rebuilt'] for c in sketches.values())} estimated ones rebuilt from "
              f"the raw clicks, {left} left"
              + (" (their raw clicks are partly pruned: those estimates still count the "
                 "visitor, in registers that can't be traced back to the cookie id)"
                 if left else ""), file=sys.stderr)
        return 0

    return _run(_with_store(_settings(args), work))


def add_ops_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = sub.add_parser(
        "backup", help="copy the SQLite database, consistent while the gateway runs "
        "(PostgreSQL: use pg_dump)")
    backup.add_argument("--out", required=True,
                        help="the file to write (mode 0600); it holds no keys, see README")
    backup.add_argument("--force", action="store_true", help="replace --out if it exists")
    backup.set_defaults(func=cmd_backup)

    secrets = sub.add_parser("secrets", help="the key sealing stored WeCom and WeChat secrets")
    ssub = secrets.add_subparsers(dest="action", required=True, metavar="ACTION")
    rotate = ssub.add_parser(
        "rotate", help="seal every stored secret under a new key (key file), or under "
        "secrets.key after it changed (settings); safe while gateways run")
    rotate.set_defaults(func=cmd_secrets_rotate)

    prune = sub.add_parser(
        "prune", help="delete raw rows older than retention.raw_clicks_days now (a running "
        "gateway does it daily); rollups keep their counts")
    prune.set_defaults(func=cmd_prune)

    privacy = sub.add_parser("privacy", help="requests about one person's data (PIPL)")
    psub = privacy.add_subparsers(dest="action", required=True, metavar="ACTION")
    forget = psub.add_parser(
        "forget", help="delete one visitor's raw clicks, events and visitor rows, and take "
        "them out of the unique-visitor sketches where possible; rollups keep their counts")
    forget.add_argument("--visitor", required=True,
                        help="the visitor id: the shopper's ll_v cookie")
    whose = forget.add_mutually_exclusive_group(required=True)
    whose.add_argument("--merchant", help="only this merchant's rows of the visitor")
    whose.add_argument("--all-merchants", action="store_true",
                       help="the visitor's rows of every merchant (one cookie serves them all)")
    forget.set_defaults(func=cmd_privacy_forget)
