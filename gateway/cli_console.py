"""``linkloop product ...``, ``linkloop merchant list|update`` and ``linkloop user
reset-password``: the console's chores from the shell.

Products go through the API's own code (``gateway.products``, ``gateway.bulk``), so a
command refuses what the API refuses, with the same code and field, printed as one line
(exit status 2). A body is JSON (a file, ``-`` for stdin, or nothing) and ``--set
PATH=VALUE`` fields named by the API's JSON paths (``title``, ``targets.jd.sku``...), as in
the console's forms. Answers are the API's JSON, one object a line.

A product with a WeChat mini-program target gets its links minted here as the API would
mint them (the gateway's renewer keeps them fresh afterwards).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cli import CliError, check_domains, read_password
from .settings import Settings

__all__ = ["add_commands"]


def _settings(args: argparse.Namespace) -> Settings:
    from .settings import load_settings

    return load_settings(getattr(args, "config", None))


def _run(settings: Settings, work: Any) -> int:
    import asyncio

    from .errors import ApiError
    from .store import open_store

    async def main() -> int:
        store = await open_store(settings)
        try:
            result: int = await work(store)
            return result
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except ApiError as exc:
        field = f" {exc.field}" if exc.field else ""
        raise CliError(f"{exc.code}{field}: {exc.message}") from None


def _print(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False))


def _zone(settings: Settings) -> Any:
    from .clock import DayClock

    return DayClock(settings["stats.timezone"]).zone


def _answer(settings: Settings, product: Any) -> dict[str, Any]:
    from .app import public_url
    from .catalog import product_json

    return product_json(product, public_url(settings), zone=_zone(settings))


# --- bodies ---------------------------------------------------------------------------------
def _read_json(source: str | None) -> Any:
    if source is None:
        return {}
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {source}: {exc.strerror}") from None
    from .errors import ApiError
    from .inputs import parse_json

    try:
        return parse_json(text.encode("utf-8"))
    except ApiError as exc:
        raise CliError(f"{source}: {exc.message}") from None


def _with_sets(body: Any, sets: Sequence[str], unsets: Sequence[str] = ()) -> Any:
    """``--set a.b=c`` puts ``c`` at the JSON path ``a.b``; ``--unset a.b`` takes it out."""
    if not isinstance(body, dict):
        return body
    for item in sets:
        path, sep, value = item.partition("=")
        if not sep or not path:
            raise CliError(f"--set {item!r}: write PATH=VALUE, e.g. targets.jd.sku=12345678")
        *parents, last = path.split(".")
        node = body
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise CliError(f"--set {item!r}: {name} is not an object")
        node[last] = value
    for path in unsets:
        *parents, last = path.split(".")
        node = body
        for name in parents:
            node = node.get(name, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return body


async def _merchant(store: Any, merchant_id: str) -> Any:
    merchant = await store.get_merchant(merchant_id)
    if merchant is None:
        raise CliError(f"no merchant {merchant_id!r}")
    return merchant


async def _product(store: Any, merchant_id: str, ref: str) -> Any:
    """A product by id, or by its share code."""
    from .inputs import parse_uint

    found = None
    product_id = parse_uint(ref)
    if product_id is not None:
        found = await store.get_product(merchant_id, product_id)
    if found is None:
        by_code = await store.link(ref)
        found = by_code if by_code is not None and by_code.merchant_id == merchant_id else None
    if found is None:
        raise CliError(f"merchant {merchant_id!r} has no product {ref!r}")
    return found


async def _mint(settings: Settings, store: Any, products: Sequence[Any]) -> None:
    """Mint the WeChat links of products with a mini-program target, as the API does."""
    wanted = [p for p in products if "wechat_miniprogram" in p.targets and not p.retired]
    if not wanted:
        return
    import aiohttp

    from .links import LinkCache
    from .wechat.client import WeChatClient
    from .wechat.links import MiniProgramLinks

    async with aiohttp.ClientSession() as session:
        client = WeChatClient(session, settings["wechat.api_base"],
                              settings["wechat.timeout_seconds"])
        minted = MiniProgramLinks(store, client, LinkCache(store, ttl=1.0, max_entries=1),
                                  expire_days=settings["wechat.link_expire_days"],
                                  renew_days=settings["wechat.link_renew_days"],
                                  interval=settings["wechat.upkeep_interval_seconds"])
        try:
            for product in wanted:
                await minted.product_saved(product)
            await minted.wait()
        finally:
            await minted.close()


# --- product commands -----------------------------------------------------------------------
def cmd_product_create(args: argparse.Namespace) -> int:
    from . import products

    settings = _settings(args)
    body = _with_sets(_read_json(args.body), args.set)

    async def work(store: Any) -> int:
        merchant = await _merchant(store, args.merchant)
        made = await products.create_product(store, merchant, body, zone=_zone(settings))
        await _mint(settings, store, [made])
        _print(_answer(settings, made))
        return 0

    return _run(settings, work)


def cmd_product_list(args: argparse.Namespace) -> int:
    from .api import product_filters

    settings = _settings(args)
    query = {k: v for k, v in (("q", args.q), ("state", args.state)) if v}

    async def work(store: Any) -> int:
        await _merchant(store, args.merchant)
        search, state = product_filters(query)
        after = 0
        while True:
            page = await store.list_products(args.merchant, limit=200, after_id=after,
                                             search=search, state=state, now=time.time())
            for product in page:
                _print(_answer(settings, product))
            if len(page) < 200:
                return 0
            after = page[-1].id

    return _run(settings, work)


def cmd_product_show(args: argparse.Namespace) -> int:
    settings = _settings(args)

    async def work(store: Any) -> int:
        await _merchant(store, args.merchant)
        _print(_answer(settings, await _product(store, args.merchant, args.product)))
        return 0

    return _run(settings, work)


def cmd_product_update(args: argparse.Namespace) -> int:
    """Change what the body and ``--set`` name. ``--set targets.<p>.<f>=`` changes one field
    of one storefront: the others are kept (the API's ``targets`` replaces them all)."""
    from . import products

    settings = _settings(args)
    given = _read_json(args.body)

    async def work(store: Any) -> int:
        merchant = await _merchant(store, args.merchant)
        product = await _product(store, args.merchant, args.product)
        body = given
        touches_targets = any(s.startswith("targets.") for s in (*args.set, *args.unset))
        if isinstance(body, dict) and touches_targets and "targets" not in body:
            body["targets"] = json.loads(json.dumps(product.targets))
        body = _with_sets(body, args.set, args.unset)
        changed = await products.update_product(store, merchant, product, body,
                                                zone=_zone(settings))
        await _mint(settings, store, [changed])
        _print(_answer(settings, changed))
        return 0

    return _run(settings, work)


def cmd_product_retire(args: argparse.Namespace) -> int:
    from . import products

    settings = _settings(args)

    async def work(store: Any) -> int:
        product = await _product(store, args.merchant, args.product)
        _print(_answer(settings, await products.retire_product(store, product)))
        return 0

    return _run(settings, work)


def cmd_product_restore(args: argparse.Namespace) -> int:
    from . import products

    settings = _settings(args)

    async def work(store: Any) -> int:
        product = await _product(store, args.merchant, args.product)
        restored = await products.restore_product(store, product)
        await _mint(settings, store, [restored])
        _print(_answer(settings, restored))
        return 0

    return _run(settings, work)


def cmd_product_import(args: argparse.Namespace) -> int:
    """Per-row answers as JSON; exit status 1 when a row is wrong (nothing written then)."""
    from . import bulk

    settings = _settings(args)
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
    kind = ("csv" if args.file.lower().endswith(".csv") else
            "xlsx" if args.file.lower().endswith(".xlsx") else bulk.kind_of("text/csv", data))
    assert kind is not None

    async def work(store: Any) -> int:
        merchant = await _merchant(store, args.merchant)
        table = bulk.read_rows(data, kind)
        result = await bulk.import_products(store, merchant, table, dry_run=args.dry_run,
                                            zone=_zone(settings))
        await _mint(settings, store, result.created)
        _print(result.as_json())
        return 1 if result.errors else 0

    return _run(settings, work)


# --- merchants and users --------------------------------------------------------------------
def _merchant_json(merchant: Any) -> dict[str, Any]:
    return {"id": merchant.id, "name": merchant.name, "domains": list(merchant.domains)}


def cmd_merchant_list(args: argparse.Namespace) -> int:
    async def work(store: Any) -> int:
        for merchant in await store.list_merchants():
            _print(_merchant_json(merchant))
        return 0

    return _run(_settings(args), work)


def cmd_merchant_update(args: argparse.Namespace) -> int:
    """A new name; ``--domain`` (repeated) replaces the domains, ``--add-domain`` and
    ``--remove-domain`` change them one at a time. Products already stored keep their web
    targets: the new domains hold for what is saved from now on."""
    added = check_domains(args.add_domain)
    replaced = check_domains(args.domain) if args.domain else None
    if args.name is not None and not args.name.strip():
        raise CliError("--name must not be empty")

    async def work(store: Any) -> int:
        merchant = await _merchant(store, args.id)
        domains = list(replaced if replaced is not None else merchant.domains)
        domains += [d for d in added if d not in domains]
        removed = {d.lower().rstrip(".") for d in args.remove_domain}
        missing = sorted(removed - set(domains))
        if missing:
            raise CliError(f"{args.id!r} has no domain {missing[0]!r}")
        domains = [d for d in domains if d not in removed]
        changes_domains = replaced is not None or added or removed
        updated = await store.update_merchant(
            args.id, name=args.name.strip() if args.name else None,
            domains=domains if changes_domains else None)
        _print(_merchant_json(updated))
        return 0

    return _run(_settings(args), work)


def cmd_user_reset_password(args: argparse.Namespace) -> int:
    """A new password (stdin when it is not a terminal, else asked twice); the login's lock
    is lifted and its sessions end."""
    from .users import check_password, hash_password, normalize_email

    try:
        email = normalize_email(args.email)
        password = read_password()
        check_password(password)
    except ValueError as exc:
        raise CliError(str(exc)) from None

    async def work(store: Any) -> int:
        before = await store.set_password(email, hash_password(password), now=time.time())
        if before is None:
            raise CliError(f"no user {email!r}")
        _print({"email": email, "merchant": before.merchant_id, "password_reset": True,
                "sessions_ended": True, "locked": False})
        return 0

    return _run(_settings(args), work)


# --- the parser -----------------------------------------------------------------------------
def add_commands(sub: Any, merchants: Any, users: Any) -> None:
    """``product`` under the top level; ``list``/``update`` under ``merchant``;
    ``reset-password`` under ``user``."""
    from .store import PRODUCT_STATES

    product = sub.add_parser("product", help="products, checked as the API checks them")
    psub = product.add_subparsers(dest="action", required=True)

    def command(name: str, help_: str, func: Any, *, ref: bool = False) -> Any:
        parser = psub.add_parser(name, help=help_)
        parser.add_argument("--merchant", required=True, help="whose products")
        if ref:
            parser.add_argument("product", help="the product's id or share code")
        parser.set_defaults(func=func)
        return parser

    def body_options(parser: Any) -> None:
        parser.add_argument("body", nargs="?",
                            help="a JSON body as the API takes it: a file, or - for stdin")
        parser.add_argument("--set", action="append", default=[], metavar="PATH=VALUE",
                            help="a field by its JSON path, e.g. targets.jd.sku=100012043978 "
                                 "(repeatable)")

    create = command("create", "create a product (prints it, with its share link)",
                     cmd_product_create)
    body_options(create)
    listing = command("list", "the merchant's products, one JSON a line", cmd_product_list)
    listing.add_argument("--q", help="only those whose title or share code contains this")
    listing.add_argument("--state", choices=PRODUCT_STATES, help="only products in this state")
    command("show", "one product", cmd_product_show, ref=True)
    update = command("update", "change a product's fields", cmd_product_update, ref=True)
    body_options(update)
    update.add_argument("--unset", action="append", default=[], metavar="PATH",
                        help="take a field out, e.g. targets.jd (repeatable)")
    command("retire", "the share link answers 'gone' (410)", cmd_product_retire, ref=True)
    command("restore", "a retired product comes back with the same code",
            cmd_product_restore, ref=True)
    import_ = command("import", "create products from a CSV or XLSX (all or nothing)",
                      cmd_product_import)
    import_.add_argument("file", help="a .csv or .xlsx file, columns named by JSON paths")
    import_.add_argument("--dry-run", action="store_true",
                         help="check every row and write nothing")

    listed = merchants.add_parser("list", help="every merchant, one JSON a line")
    listed.set_defaults(func=cmd_merchant_list)
    changed = merchants.add_parser("update", help="a merchant's name or web domains")
    changed.add_argument("id", help="the merchant's id")
    changed.add_argument("--name", help="a new name")
    changed.add_argument("--domain", action="append", default=[],
                         help="replace the domains with these (repeatable)")
    changed.add_argument("--add-domain", action="append", default=[],
                         help="allow one more domain for web targets (repeatable)")
    changed.add_argument("--remove-domain", action="append", default=[],
                         help="stop allowing a domain (repeatable)")
    changed.set_defaults(func=cmd_merchant_update)

    reset = users.add_parser(
        "reset-password", help="a new password for a login (stdin when not a terminal); "
        "lifts its lock and ends its sessions")
    reset.add_argument("email", help="the login's email address")
    reset.set_defaults(func=cmd_user_reset_password)
